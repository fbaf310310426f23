"""Signed peer records: a peer's own, signed list of addresses (libp2p RFC 0002/0003).

GossipSub v1.1 peer exchange puts these in PRUNE messages so that a pruned peer can dial
the suggested peers without trusting the pruner about their addresses; identify carries
the sender's own record. A record is a PeerRecord protobuf sealed in an Envelope whose
signature covers the domain ``libp2p-peer-record``, the payload type ``0x0301`` and the
payload, each varint-length-prefixed (the same bytes go-libp2p and py-libp2p sign).
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from node.p2p.multiaddr import Multiaddr, MultiaddrError
from node.p2p.pb import crypto_pb2, envelope_pb2, peer_record_pb2
from node.p2p.peer_id import IdentityKey, PeerID, PeerIDError, verify_libp2p_signature
from node.p2p.varint import length_prefixed

DOMAIN = b"libp2p-peer-record"
PAYLOAD_TYPE = bytes([0x03, 0x01])
MAX_RECORD_BYTES = 8 * 1024
MAX_RECORD_ADDRS = 32


class PeerRecordError(ValueError):
    """A signed peer record that is malformed, wrongly signed or of another type."""


@dataclass(frozen=True)
class PeerRecord:
    peer: PeerID
    seq: int
    addrs: list[Multiaddr]


def _signed_bytes(payload_type: bytes, payload: bytes) -> bytes:
    return b"".join(length_prefixed(p) for p in (DOMAIN, payload_type, payload))


def seal(identity: IdentityKey, addrs: list[Multiaddr], seq: int) -> bytes:
    """Our own addresses as a signed envelope (``seq`` must grow with every change)."""
    record = peer_record_pb2.PeerRecord(
        peer_id=identity.peer_id.to_bytes(),
        seq=seq,
        addresses=[
            peer_record_pb2.PeerRecord.AddressInfo(multiaddr=a.without_peer_id().to_bytes())
            for a in addrs
        ],
    )
    payload = record.SerializeToString()
    pub = crypto_pb2.PublicKey()
    pub.ParseFromString(identity.public_key_proto())
    env = envelope_pb2.Envelope(
        public_key=pub,
        payload_type=PAYLOAD_TYPE,
        payload=payload,
        signature=identity.sign(_signed_bytes(PAYLOAD_TYPE, payload)),
    )
    return env.SerializeToString()


def open_record(data: bytes) -> PeerRecord:
    """Verify a signed envelope and return its record; PeerRecordError when invalid."""
    if len(data) > MAX_RECORD_BYTES:
        raise PeerRecordError("signed peer record too large")
    env = envelope_pb2.Envelope()
    try:
        env.ParseFromString(data)
    except DecodeError as e:
        raise PeerRecordError(f"malformed envelope: {e}") from e
    if env.payload_type != PAYLOAD_TYPE:
        raise PeerRecordError("envelope does not hold a peer record")
    pub_proto = env.public_key.SerializeToString(deterministic=True)
    if not verify_libp2p_signature(
        pub_proto, _signed_bytes(env.payload_type, env.payload), env.signature
    ):
        raise PeerRecordError("peer record signature does not verify")
    rec = peer_record_pb2.PeerRecord()
    try:
        rec.ParseFromString(env.payload)
        peer = PeerID.from_bytes(rec.peer_id)
    except (DecodeError, PeerIDError) as e:
        raise PeerRecordError(f"malformed peer record: {e}") from e
    if not peer.matches_pubkey_proto(pub_proto):
        raise PeerRecordError("peer record is signed by another peer's key")
    addrs: list[Multiaddr] = []
    for info in rec.addresses[:MAX_RECORD_ADDRS]:
        try:
            addrs.append(Multiaddr.from_bytes(info.multiaddr))
        except MultiaddrError:
            continue
    return PeerRecord(peer=peer, seq=rec.seq, addrs=addrs)
