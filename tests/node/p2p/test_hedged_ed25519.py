"""Hedged Ed25519 signatures must be plain Ed25519 signatures to every verifier."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

from node.p2p import hedged_ed25519
from node.p2p.hedged_ed25519 import HedgedEd25519Signer
from node.p2p.peer_id import IdentityKey


def _keypair(seed: bytes) -> tuple[HedgedEd25519Signer, Ed25519PrivateKey, bytes]:
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return HedgedEd25519Signer(seed, public), private, public


@settings(max_examples=60, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=3000))
def test_signatures_verify_under_openssl_and_libsodium(seed: bytes, message: bytes) -> None:
    signer, private, public = _keypair(seed)
    sig = signer.sign(message)
    assert len(sig) == 64
    private.public_key().verify(sig, message)  # OpenSSL
    assert crypto_sign_open(sig + message, public) == message  # libsodium
    with pytest.raises(InvalidSignature):
        private.public_key().verify(sig, message + b"\0")
    with pytest.raises(BadSignatureError):
        crypto_sign_open(sig + message + b"\0", public)


def test_a_large_memoryview_message_signs_like_its_bytes() -> None:
    signer, private, _ = _keypair(bytes(range(32)))
    data = bytearray(b"x" * 300_000)
    with memoryview(data) as view:
        sig = signer.sign(view[1:])
    private.public_key().verify(sig, bytes(data[1:]))


def test_each_signature_gets_a_fresh_nonce() -> None:
    signer, private, _ = _keypair(b"\x07" * 32)
    a, b = signer.sign(b"same message"), signer.sign(b"same message")
    assert a[:32] != b[:32]
    private.public_key().verify(a, b"same message")
    private.public_key().verify(b, b"same message")


def test_a_stuck_rng_still_gives_distinct_messages_distinct_nonces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the RNG repeats, the nonce falls back to RFC 8032's deterministic one in
    spirit: it still depends on the secret prefix and the message, so two messages never
    share a nonce (which would reveal the key)."""
    signer, private, _ = _keypair(b"\x09" * 32)
    monkeypatch.setattr(hedged_ed25519, "urandom", lambda n: b"\0" * n)
    one, two, again = signer.sign(b"one"), signer.sign(b"two"), signer.sign(b"one")
    assert one[:32] != two[:32]
    assert one == again
    private.public_key().verify(one, b"one")
    private.public_key().verify(two, b"two")


def test_a_public_key_from_another_seed_is_refused() -> None:
    _, _, other = _keypair(b"\x01" * 32)
    with pytest.raises(ValueError, match="does not belong"):
        HedgedEd25519Signer(b"\x02" * 32, other)


def test_identity_keys_sign_with_the_hedged_signer() -> None:
    key = IdentityKey.from_seed(b"\x05" * 32)
    sig1, sig2 = key.sign(b"payload"), key.sign(b"payload")
    assert sig1 != sig2
    public = Ed25519PrivateKey.from_private_bytes(key.seed()).public_key()
    public.verify(sig1, b"payload")
    public.verify(sig2, b"payload")
