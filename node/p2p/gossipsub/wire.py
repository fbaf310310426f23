"""Bytes <-> RPC dataclasses for GossipSub, via the generated protobuf (node.p2p.pb.rpc_pb2).

Decoding is the trust boundary: every failure, whatever the protobuf runtime raises for a
malformed buffer, becomes RPCDecodeError, and sizes and counts are bounded before the router
sees anything. Encoding splices each Message's field pieces (its ``data`` uncopied) into
per-peer RPCs as a length-delimited field 2, which protobuf defines as equivalent to
serialising the whole RPC: a 100 KB message sent to a peer is copied once, into that
peer's RPC, and no encoded copy of it stays alive in the message cache.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from node.p2p.gossipsub.messages import (
    RPC,
    EncodedFields,
    IHave,
    Message,
    PeerInfo,
    Prune,
    SubOpt,
)
from node.p2p.gossipsub.params import DEFAULT_MAX_MESSAGE_SIZE
from node.p2p.pb import rpc_pb2
from node.p2p.varint import encode_uvarint

# Envelope overhead on top of the largest message payload (from, seqno, signature, key, topic).
RPC_OVERHEAD = 64 * 1024
MAX_TOPIC_LEN = 1024
MAX_ID_LEN = 256
MAX_CONTROL_ENTRIES = 20_000  # IHAVE/IWANT IDs, GRAFT/PRUNE topics, PX peers, per RPC
MAX_SUBSCRIPTIONS = 5_000


class RPCDecodeError(ValueError):
    """An RPC from the network is malformed or exceeds a limit; the sender misbehaved."""


def max_rpc_size(max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> int:
    return max_message_size + RPC_OVERHEAD


def _field(tag: bytes, value: bytes | memoryview) -> bytes:
    """One small length-delimited field (tag, varint length, value) as a single bytes."""
    return tag + encode_uvarint(len(value)) + value


def signed_field_parts(msg: Message) -> list[bytes | memoryview]:
    """The protobuf encoding of fields 1-4 (from, data, seqno, topic) as pieces to join.

    This is byte for byte what deterministic serialisation of a Message holding only those
    fields produces (proto2 fields in field-number order, each tag + length + bytes; the
    tests check it against the protobuf runtime). Returning pieces (the small fields before
    and after ``data`` merged, ``data`` itself uncopied) lets the signature payload and the
    wire encoding each be built with one copy of a large ``data``.
    """
    data = msg.data
    enc = msg.encoded
    if enc is not None and enc.matches(msg):
        return [enc.head, data, enc.tail]
    head = b"\x12" + encode_uvarint(len(data))
    if msg.from_ is not None:
        head = _field(b"\x0a", msg.from_) + head
    tail = _field(b"\x22", msg.topic.encode())
    if msg.seqno is not None:
        tail = _field(b"\x1a", msg.seqno) + tail
    msg.encoded = EncodedFields(msg.topic, data, msg.from_, msg.seqno, head, tail)
    return [head, data, tail]


def trailer_parts(msg: Message) -> list[bytes | memoryview]:
    """The encoding of fields 5-6 (signature, key), which follow the signed fields."""
    trailer = b""
    if msg.signature is not None:
        trailer = _field(b"\x2a", msg.signature)
    if msg.key is not None:
        trailer += _field(b"\x32", msg.key)
    return [trailer] if trailer else []


def message_parts(msg: Message) -> list[bytes | memoryview]:
    """The wire encoding of a message as pieces, ``data`` among them uncopied. RPC encoders
    splice these in, so relaying a message copies its data once per RPC and never keeps a
    second full-size copy alive in the message cache."""
    return signed_field_parts(msg) + trailer_parts(msg)


def encode_rpc(rpc: RPC) -> bytes:
    return b"".join(_rpc_parts(rpc))


def encode_rpc_framed(rpc: RPC) -> bytes:
    """The RPC with its varint length prefix, as written on a stream, in a single copy."""
    parts = _rpc_parts(rpc)
    return b"".join([encode_uvarint(sum(map(len, parts))), *parts])


def _rpc_parts(rpc: RPC) -> list[bytes | memoryview]:
    parts: list[bytes | memoryview] = []
    if rpc.subscriptions or rpc.has_control():
        parts.append(_control_bytes(rpc))
    for msg in rpc.publish:
        body = message_parts(msg)
        n = sum(map(len, body))
        parts.append(b"\x12" + encode_uvarint(n))
        parts += body
    return parts


def _control_bytes(rpc: RPC) -> bytes:
    """Fields 1 and 3 (subscriptions, control) of the RPC, via the protobuf runtime."""
    pb = rpc_pb2.RPC()
    for s in rpc.subscriptions:
        pb.subscriptions.add(subscribe=s.subscribe, topicid=s.topic)
    if rpc.has_control():
        c = pb.control
        for ih in rpc.ihave:
            c.ihave.add(topicID=ih.topic, messageIDs=ih.message_ids)
        if rpc.iwant:
            c.iwant.add(messageIDs=rpc.iwant)
        for t in rpc.graft:
            c.graft.add(topicID=t)
        for pr in rpc.prune:
            e = c.prune.add(topicID=pr.topic)
            for info in pr.peers:
                pi = e.peers.add(peerID=info.peer_id)
                if info.signed_peer_record is not None:
                    pi.signedPeerRecord = info.signed_peer_record
            if pr.backoff is not None:
                e.backoff = pr.backoff
        if rpc.idontwant:
            c.idontwant.add(messageIDs=rpc.idontwant)
    return pb.SerializeToString(deterministic=True)


def _topic(value: str, what: str) -> str:
    # The runtime does not check proto2 strings: one that is not UTF-8 comes back as bytes.
    if not isinstance(value, str):
        raise RPCDecodeError(f"{what}: topic is not UTF-8")
    if not value or len(value) > MAX_TOPIC_LEN:
        raise RPCDecodeError(f"{what}: topic empty or longer than {MAX_TOPIC_LEN}")
    return value


def _ids(values: list[bytes], what: str) -> list[bytes]:
    for v in values:
        if len(v) > MAX_ID_LEN:
            raise RPCDecodeError(f"{what}: message ID longer than {MAX_ID_LEN} bytes")
    return list(values)


def decode_rpc(data: bytes | memoryview, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> RPC:
    """Parse and bound one RPC; raises RPCDecodeError and nothing else."""
    if len(data) > max_rpc_size(max_message_size):
        raise RPCDecodeError(f"RPC of {len(data)} bytes exceeds the limit")
    try:
        pb = rpc_pb2.RPC.FromString(data)
        return _convert(pb, max_message_size)
    except RPCDecodeError:
        raise
    except (DecodeError, ValueError, TypeError, UnicodeError, RuntimeError) as e:
        raise RPCDecodeError(f"malformed RPC protobuf: {e}") from e


def _convert(pb: rpc_pb2.RPC, max_message_size: int) -> RPC:
    if len(pb.subscriptions) > MAX_SUBSCRIPTIONS:
        raise RPCDecodeError("too many subscriptions in one RPC")
    out = RPC()
    for s in pb.subscriptions:
        if not s.HasField("topicid"):
            raise RPCDecodeError("subscription without topic")
        out.subscriptions.append(SubOpt(bool(s.subscribe), _topic(s.topicid, "subscription")))
    for m in pb.publish:
        if not m.HasField("topic"):
            raise RPCDecodeError("message without topic")
        data = m.data  # a new bytes object at each access: read it once
        if len(data) > max_message_size:
            raise RPCDecodeError(f"message of {len(data)} bytes exceeds {max_message_size}")
        out.publish.append(
            Message(
                topic=_topic(m.topic, "message"),
                data=data,
                from_=getattr(m, "from") if m.HasField("from") else None,
                seqno=m.seqno if m.HasField("seqno") else None,
                signature=m.signature if m.HasField("signature") else None,
                key=m.key if m.HasField("key") else None,
            )
        )
    if pb.HasField("control"):
        c = pb.control
        n = 0
        for ih in c.ihave:
            n += 1 + len(ih.messageIDs)
            if n > MAX_CONTROL_ENTRIES:
                raise RPCDecodeError("too many control entries")
            out.ihave.append(IHave(_topic(ih.topicID, "IHAVE"), _ids(list(ih.messageIDs), "IHAVE")))
        for iw in c.iwant:
            n += len(iw.messageIDs)
            if n > MAX_CONTROL_ENTRIES:
                raise RPCDecodeError("too many control entries")
            out.iwant.extend(_ids(list(iw.messageIDs), "IWANT"))
        for g in c.graft:
            n += 1
            out.graft.append(_topic(g.topicID, "GRAFT"))
        for pr in c.prune:
            n += 1 + len(pr.peers)
            if n > MAX_CONTROL_ENTRIES:
                raise RPCDecodeError("too many control entries")
            peers = [
                PeerInfo(
                    pi.peerID,
                    pi.signedPeerRecord if pi.HasField("signedPeerRecord") else None,
                )
                for pi in pr.peers
                if pi.HasField("peerID")
            ]
            out.prune.append(
                Prune(
                    _topic(pr.topicID, "PRUNE"),
                    peers,
                    pr.backoff if pr.HasField("backoff") else None,
                )
            )
        for idw in c.idontwant:
            n += len(idw.messageIDs)
            if n > MAX_CONTROL_ENTRIES:
                raise RPCDecodeError("too many control entries")
            out.idontwant.extend(_ids(list(idw.messageIDs), "IDONTWANT"))
        if n > MAX_CONTROL_ENTRIES:
            raise RPCDecodeError("too many control entries")
    return out
