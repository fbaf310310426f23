"""StrictSign: libp2p pubsub message signatures.

The signature covers ``"libp2p-pubsub:" || protobuf(Message without signature and key)``
and is made with the author's identity key. Ed25519 peer IDs inline the public key, so the
``key`` field is only set (and only needed) for peer IDs that hash their key.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from node.p2p.gossipsub.messages import Message
from node.p2p.gossipsub.wire import signed_field_parts
from node.p2p.peer_id import IdentityKey, PeerID, PeerIDError, ed25519_key_from_proto

SIGNING_PREFIX = b"libp2p-pubsub:"
SIG_LEN = 64


def signing_payload(msg: Message) -> bytes:
    """``"libp2p-pubsub:" || fields 1-4``, joined: Ed25519 needs the message contiguous
    (one copy of ``data``), and a fresh join costs no more than filling a reused buffer."""
    return b"".join([SIGNING_PREFIX, *signed_field_parts(msg)])


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
        # The signing payload is not kept: the message keeps only ``data`` (which its
        # publisher handed us), so a burst of large messages held in the message cache
        # costs one copy of each in memory, not two.
        sig = self._identity.sign(signing_payload(msg))
        if len(sig) != SIG_LEN:
            raise ValueError("identity signatures must be 64-byte Ed25519 signatures")
        msg.signature = sig


@lru_cache(maxsize=4096)
def _author_key(from_: bytes, key: bytes | None) -> Ed25519PublicKey | None:
    """The Ed25519 key that must have signed a message from ``from_`` (None if the claimed
    key does not match the peer ID or is not Ed25519). Authors repeat, so cache (parsing
    the key costs about as much as hashing it)."""
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
        return Ed25519PublicKey.from_public_bytes(ed25519_key_from_proto(proto))
    except (PeerIDError, ValueError):
        return None


def verify_message(msg: Message) -> bool:
    """True when ``msg`` carries a valid StrictSign signature by its ``from`` peer."""
    if msg.from_ is None or msg.seqno is None or msg.signature is None:
        return False
    if len(msg.signature) != SIG_LEN:
        return False
    author = _author_key(msg.from_, msg.key)
    if author is None:
        return False
    try:
        author.verify(msg.signature, signing_payload(msg))
    except (InvalidSignature, ValueError):
        return False
    return True
