from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.p2p.peer_id import (
    IdentityKey,
    PeerID,
    PeerIDError,
    b58decode,
    b58encode,
    decode_public_key,
    verify_libp2p_signature,
)

# From the libp2p peer-ids spec test vectors: an Ed25519 key and its peer ID.
SPEC_ED25519_PUB_PROTO = bytes.fromhex(
    "080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
SPEC_ED25519_PEER_ID = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"


def test_spec_vector_identity_multihash() -> None:
    pid = PeerID.from_pubkey_proto(SPEC_ED25519_PUB_PROTO)
    assert pid.to_base58() == SPEC_ED25519_PEER_ID
    assert pid.extract_public_key_proto() == SPEC_ED25519_PUB_PROTO
    assert PeerID.from_base58(SPEC_ED25519_PEER_ID) == pid


def test_generated_identity_round_trips() -> None:
    key = IdentityKey.from_seed(bytes(range(32)))
    pid = key.peer_id
    assert str(pid).startswith("12D3KooW")
    assert PeerID.from_bytes(pid.to_bytes()) == pid
    assert PeerID.from_pubkey(key.public_key_raw()) == pid
    assert IdentityKey.from_seed(key.seed()).peer_id == pid
    assert decode_public_key(key.public_key_proto()) == (1, key.public_key_raw())
    sig = key.sign(b"hello")
    assert verify_libp2p_signature(key.public_key_proto(), b"hello", sig)
    assert not verify_libp2p_signature(key.public_key_proto(), b"hellO", sig)
    assert not verify_libp2p_signature(b"\x08\x00\x12\x01x", b"hello", sig)  # RSA: refused


# RFC 8032 section 7.1, TEST 1-3: (secret key, public key, message, signature).
RFC8032_VECTORS = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
        "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032_VECTORS)
def test_identity_keys_sign_rfc8032_vectors(
    secret: str, public: str, message: str, signature: str
) -> None:
    """Identity signatures are RFC 8032 Ed25519, byte for byte (deterministic), whether
    the message comes as bytes or as a view of a larger buffer."""
    key = IdentityKey.from_seed(bytes.fromhex(secret))
    assert key.public_key_raw() == bytes.fromhex(public)
    msg = bytes.fromhex(message)
    assert key.sign(msg) == bytes.fromhex(signature)
    framed = b"<" + msg + b">"
    with memoryview(framed) as view:
        assert key.sign(view[1:-1]) == bytes.fromhex(signature)


def test_sha256_peer_ids_parse_and_do_not_inline_keys() -> None:
    pid = PeerID.from_base58("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")
    assert pid.extract_public_key_proto() is None
    assert pid.to_base58() == "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
    long_key = b"\x08\x00\x12\x40" + b"k" * 64
    assert PeerID.from_pubkey_proto(long_key).to_bytes()[:2] == b"\x12\x20"


def test_ordering_and_hashing() -> None:
    a, b = IdentityKey.generate().peer_id, IdentityKey.generate().peer_id
    assert len({a, b, PeerID(a.to_bytes())}) == 2
    assert (a < b) != (b < a)


@pytest.mark.parametrize(
    "text",
    ["", "0OIl", "12D3KooW", "1" * 300, "Qm" + "z" * 40],
)
def test_bad_base58_is_rejected(text: str) -> None:
    with pytest.raises(PeerIDError):
        PeerID.from_base58(text)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00", b"\x00\x05abc", b"\x12\x10" + b"x" * 16, b"\x13\x20" + b"x" * 32, b"\xff" * 12],
)
def test_bad_multihash_is_rejected(raw: bytes) -> None:
    with pytest.raises(PeerIDError):
        PeerID.from_bytes(raw)


@given(st.binary(max_size=80))
def test_fuzz_peer_id_bytes(raw: bytes) -> None:
    try:
        pid = PeerID.from_bytes(raw)
    except PeerIDError:
        return
    assert PeerID.from_base58(pid.to_base58()) == pid


@given(st.text(max_size=80))
def test_fuzz_peer_id_text(text: str) -> None:
    with contextlib.suppress(PeerIDError):
        PeerID.from_base58(text)


@given(st.binary(max_size=64))
def test_base58_round_trip(raw: bytes) -> None:
    assert b58decode(b58encode(raw)) == raw


@given(st.binary(max_size=100))
def test_fuzz_public_key_decoding(raw: bytes) -> None:
    with contextlib.suppress(PeerIDError):
        decode_public_key(raw)
    assert verify_libp2p_signature(raw, b"m", b"s" * 64) is False
