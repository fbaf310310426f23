"""StrictSign: libp2p pubsub message signatures.

The signature covers ``"libp2p-pubsub:" || protobuf(Message without signature and key)``
and is made with the author's identity key. Ed25519 peer IDs inline the public key, so the
``key`` field is only set (and only needed) for peer IDs that hash their key.
"""

from __future__ import annotations

from functools import lru_cache

from node.crypto import verify
from node.p2p.gossipsub.messages import Message
from node.p2p.gossipsub.wire import signed_field_parts, trailer_parts
from node.p2p.peer_id import IdentityKey, PeerID, PeerIDError, ed25519_key_from_proto
from node.p2p.varint import encode_uvarint

SIGNING_PREFIX = b"libp2p-pubsub:"
SIG_LEN = 64
SIG_FIELD_HEAD = b"\x2a\x40"  # field 5 (signature), length 64


def signing_payload(msg: Message) -> bytes:
    return b"".join([SIGNING_PREFIX, *signed_field_parts(msg)])


def _signed_buffer(msg: Message) -> tuple[bytes, int]:
    """``SIGNING_PREFIX || fields 1-4 || fields 5-6`` in one buffer, and where the signed
    part ends. The signature covers ``buf[:end]`` and the message's wire encoding is
    ``buf[len(SIGNING_PREFIX):]``, so verifying and then forwarding a large message costs
    one copy of its data instead of two."""
    head = [SIGNING_PREFIX, *signed_field_parts(msg)]
    end = sum(len(p) for p in head)
    return b"".join(head + trailer_parts(msg)), end


class IdentitySigner:
    """Signs our messages with the host's identity key (implements router.Signer)."""

    def __init__(self, identity: IdentityKey) -> None:
        self._identity = identity
        self._author = identity.peer_id.to_bytes()
        self._inline = identity.peer_id.extract_public_key_proto() is not None

    @property
    def author(self) -> bytes:
        return self._author

    def sign(self, msg: Message) -> None:
        if not self._inline:
            msg.key = self._identity.public_key_proto()
        # Sign in place: the buffer reserves the signature field (64 bytes follow a fixed
        # 2-byte tag and length) so the signed bytes become the wire encoding without a copy.
        head = [SIGNING_PREFIX, *signed_field_parts(msg)]
        end = sum(len(p) for p in head)
        key_field = [b"\x32", encode_uvarint(len(msg.key)), msg.key] if msg.key is not None else []
        buf = bytearray(b"".join([*head, SIG_FIELD_HEAD, bytes(SIG_LEN), *key_field]))
        with memoryview(buf) as view:
            sig = self._identity.sign(view[:end])
        if len(sig) != SIG_LEN:
            raise ValueError("identity signatures must be 64-byte Ed25519 signatures")
        start = end + len(SIG_FIELD_HEAD)
        buf[start : start + SIG_LEN] = sig
        msg.signature = sig
        msg.raw = memoryview(buf)[len(SIGNING_PREFIX) :]


@lru_cache(maxsize=4096)
def _author_key(from_: bytes, key: bytes | None) -> bytes | None:
    """The raw Ed25519 key that must have signed a message from ``from_`` (None if the
    claimed key does not match the peer ID or is not Ed25519). Authors repeat, so cache."""
    try:
        author = PeerID.from_bytes(from_)
        if key is not None:
            if not author.matches_pubkey_proto(key):
                return None
            proto = key
        else:
            inline = author.extract_public_key_proto()
            if inline is None:
                return None
            proto = inline
        return ed25519_key_from_proto(proto)
    except PeerIDError:
        return None


def verify_message(msg: Message) -> bool:
    """True when ``msg`` carries a valid StrictSign signature by its ``from`` peer."""
    if msg.from_ is None or msg.seqno is None or msg.signature is None:
        return False
    raw_key = _author_key(msg.from_, msg.key)
    if raw_key is None:
        return False
    buf, end = _signed_buffer(msg)
    with memoryview(buf) as view:
        ok = verify(raw_key, msg.signature, view[:end])
    if ok and msg.raw is None:
        msg.raw = memoryview(buf)[len(SIGNING_PREFIX) :]
    return ok
