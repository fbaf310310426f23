"""libp2p identity keys and peer IDs.

A peer ID is a multihash of the protobuf-encoded public key: the identity multihash when
that encoding is at most 42 bytes (always the case for Ed25519, so the key can be read
back out of the ID) and SHA-256 otherwise. Its text form is base58btc. Only Ed25519 keys
are ever generated or verified here; IDs of other key types still parse, so a peer that
advertises them is rejected by signature checks rather than by a crash.
"""

from __future__ import annotations

import hashlib
import os
from functools import total_ordering

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import DecodeError

from node.core.crypto import verify
from node.p2p.pb import crypto_pb2
from node.p2p.varint import VarintError, decode_uvarint, encode_uvarint

MH_IDENTITY = 0x00
MH_SHA2_256 = 0x12
MAX_INLINE_KEY_LENGTH = 42
MAX_PEER_ID_BYTES = 128

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


class PeerIDError(ValueError):
    """Bytes or text that are not a valid libp2p peer ID or public key."""


def b58encode(data: bytes) -> str:
    zeros = len(data) - len(data.lstrip(b"\0"))
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58_ALPHABET[r])
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    if len(text) > 2 * MAX_PEER_ID_BYTES:
        raise PeerIDError("base58 text too long for a peer ID")
    n = 0
    for c in text:
        idx = _B58_INDEX.get(c)
        if idx is None:
            raise PeerIDError(f"invalid base58 character {c!r}")
        n = n * 58 + idx
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def encode_public_key(raw_ed25519: bytes) -> bytes:
    """The protobuf PublicKey encoding of a raw 32-byte Ed25519 key."""
    if len(raw_ed25519) != 32:
        raise PeerIDError("an Ed25519 public key is 32 bytes")
    msg = crypto_pb2.PublicKey(Type=crypto_pb2.Ed25519, Data=raw_ed25519)
    return msg.SerializeToString(deterministic=True)


def decode_public_key(pubkey_proto: bytes) -> tuple[int, bytes]:
    """Parse a protobuf PublicKey into (key type, key bytes); raises PeerIDError."""
    msg = crypto_pb2.PublicKey()
    try:
        msg.ParseFromString(pubkey_proto)
    except DecodeError as e:
        raise PeerIDError(f"malformed public key protobuf: {e}") from e
    if not msg.IsInitialized():
        raise PeerIDError("public key protobuf lacks Type or Data")
    return int(msg.Type), bytes(msg.Data)


def ed25519_key_from_proto(pubkey_proto: bytes) -> bytes:
    """The raw Ed25519 key inside a protobuf PublicKey; PeerIDError for any other type."""
    key_type, data = decode_public_key(pubkey_proto)
    if key_type != crypto_pb2.Ed25519:
        raise PeerIDError(f"unsupported key type {key_type} (only Ed25519 is accepted)")
    if len(data) != 32:
        raise PeerIDError("Ed25519 public key must be 32 bytes")
    return data


def verify_libp2p_signature(pubkey_proto: bytes, data: bytes, sig: bytes) -> bool:
    """True when ``sig`` is the key's Ed25519 signature of ``data``; never raises."""
    try:
        raw = ed25519_key_from_proto(pubkey_proto)
    except PeerIDError:
        return False
    return verify(raw, sig, data)


@total_ordering
class PeerID:
    """A libp2p peer ID (hashable, ordered by its multihash bytes)."""

    __slots__ = ("_b58", "_bytes", "_hash")

    def __init__(self, multihash: bytes) -> None:
        _validate_multihash(multihash)
        self._bytes = bytes(multihash)
        self._b58: str | None = None
        # Peer IDs key the router's and scorer's dicts and sets, several lookups per
        # message relayed: hash once rather than on each.
        self._hash = hash(self._bytes)

    @classmethod
    def from_bytes(cls, multihash: bytes) -> PeerID:
        return cls(multihash)

    @classmethod
    def from_base58(cls, text: str) -> PeerID:
        return cls(b58decode(text))

    @classmethod
    def from_pubkey_proto(cls, pubkey_proto: bytes) -> PeerID:
        if len(pubkey_proto) <= MAX_INLINE_KEY_LENGTH:
            mh = bytes([MH_IDENTITY]) + encode_uvarint(len(pubkey_proto)) + pubkey_proto
        else:
            digest = hashlib.sha256(pubkey_proto).digest()
            mh = bytes([MH_SHA2_256, len(digest)]) + digest
        return cls(mh)

    @classmethod
    def from_pubkey(cls, raw_ed25519: bytes) -> PeerID:
        return cls.from_pubkey_proto(encode_public_key(raw_ed25519))

    def to_bytes(self) -> bytes:
        return self._bytes

    def to_base58(self) -> str:
        if self._b58 is None:
            self._b58 = b58encode(self._bytes)
        return self._b58

    def extract_public_key_proto(self) -> bytes | None:
        """The protobuf public key inlined in an identity multihash, else None."""
        if self._bytes[0] != MH_IDENTITY:
            return None
        head = decode_uvarint(self._bytes, 1)
        assert head is not None  # validated in __init__
        return self._bytes[head[1] :]

    def matches_pubkey_proto(self, pubkey_proto: bytes) -> bool:
        return PeerID.from_pubkey_proto(pubkey_proto) == self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PeerID) and self._bytes == other._bytes

    def __lt__(self, other: PeerID) -> bool:
        return self._bytes < other._bytes

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return self.to_base58()

    def __repr__(self) -> str:
        return f"PeerID({self.to_base58()})"


def _validate_multihash(mh: bytes) -> None:
    if not mh or len(mh) > MAX_PEER_ID_BYTES:
        raise PeerIDError("peer ID multihash is empty or too long")
    try:
        code = decode_uvarint(mh, 0)
        if code is None:
            raise PeerIDError("truncated multihash code")
        length = decode_uvarint(mh, code[1])
    except VarintError as e:
        raise PeerIDError(f"bad multihash varint: {e}") from e
    if length is None:
        raise PeerIDError("truncated multihash length")
    if code[0] == MH_IDENTITY:
        if length[0] > MAX_INLINE_KEY_LENGTH:
            raise PeerIDError("identity multihash longer than 42 bytes")
    elif code[0] == MH_SHA2_256:
        if length[0] != 32:
            raise PeerIDError("sha2-256 multihash must carry 32 bytes")
    else:
        raise PeerIDError(f"unsupported multihash code {code[0]:#x}")
    if len(mh) - length[1] != length[0]:
        raise PeerIDError("multihash length does not match its digest")


class IdentityKey:
    """An Ed25519 libp2p identity: signs Noise static keys, identify records and messages."""

    __slots__ = ("_private", "_pub_proto", "_raw_public", "peer_id")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self._raw_public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._pub_proto = encode_public_key(self._raw_public)
        self.peer_id = PeerID.from_pubkey_proto(self._pub_proto)

    @classmethod
    def generate(cls) -> IdentityKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> IdentityKey:
        if len(seed) != 32:
            raise PeerIDError("an Ed25519 seed is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def random_seed(cls) -> bytes:
        return os.urandom(32)

    def seed(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign(self, data: bytes | memoryview) -> bytes:
        """RFC 8032 Ed25519 (deterministic), as the libp2p specs require of Ed25519 keys."""
        return self._private.sign(data)

    def public_key_raw(self) -> bytes:
        return self._raw_public

    def public_key_proto(self) -> bytes:
        return self._pub_proto
