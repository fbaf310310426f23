from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.p2p import noise
from node.p2p.noise import NoiseError, NoiseSession, PeerMismatch
from node.p2p.pb import noise_pb2
from node.p2p.peer_id import IdentityKey


def handshake(
    a: IdentityKey, b: IdentityKey, expected: object = None
) -> tuple[NoiseSession, NoiseSession]:
    i = NoiseSession(a, initiator=True, expected_peer=expected)  # type: ignore[arg-type]
    r = NoiseSession(b, initiator=False)
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    r.receive_data(i.data_to_send())
    return i, r


def test_handshake_authenticates_both_sides_and_encrypts() -> None:
    a, b = IdentityKey.generate(), IdentityKey.generate()
    i, r = handshake(a, b, b.peer_id)
    assert i.handshake_complete and r.handshake_complete
    assert i.remote_peer == b.peer_id and r.remote_peer == a.peer_id
    wire = i.encrypt(b"secret")
    assert b"secret" not in wire
    assert r.receive_data(wire) == b"secret"
    assert i.receive_data(r.encrypt(b"back")) == b"back"


def test_large_writes_are_split_into_max_size_frames() -> None:
    i, r = handshake(IdentityKey.generate(), IdentityKey.generate())
    data = bytes(range(256)) * 1000
    wire = i.encrypt(data)
    assert int.from_bytes(wire[:2], "big") == noise.MAX_FRAME
    # Delivered in odd-sized pieces the plaintext still arrives whole and in order.
    got = b"".join(r.receive_data(wire[k : k + 7777]) for k in range(0, len(wire), 7777))
    assert got == data


def test_dialing_the_wrong_peer_id_fails() -> None:
    a, b, c = IdentityKey.generate(), IdentityKey.generate(), IdentityKey.generate()
    with pytest.raises(PeerMismatch):
        handshake(a, b, c.peer_id)


def test_identity_signature_must_cover_the_static_key(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = IdentityKey.generate(), IdentityKey.generate()

    def forged(identity: IdentityKey, static_pub: bytes) -> bytes:
        sig = identity.sign(noise.SIGNATURE_PREFIX + bytes(32))  # signs some other key
        return noise_pb2.NoiseHandshakePayload(
            identity_key=identity.public_key_proto(), identity_sig=sig
        ).SerializeToString()

    monkeypatch.setattr(noise, "make_payload", forged)
    with pytest.raises(NoiseError, match="signature"):
        handshake(a, b)


def test_payload_without_identity_is_rejected() -> None:
    with pytest.raises(NoiseError):
        noise.verify_payload(b"", bytes(32))
    with pytest.raises(NoiseError):
        noise.verify_payload(b"\xff\xff", bytes(32))


def test_tampered_transport_frame_fails_authentication() -> None:
    i, r = handshake(IdentityKey.generate(), IdentityKey.generate())
    wire = bytearray(i.encrypt(b"payload"))
    wire[5] ^= 1
    with pytest.raises(NoiseError):
        r.receive_data(bytes(wire))


def test_replayed_frame_fails() -> None:
    i, r = handshake(IdentityKey.generate(), IdentityKey.generate())
    wire = i.encrypt(b"once")
    r.receive_data(wire)
    with pytest.raises(NoiseError):
        r.receive_data(wire)


def test_bad_first_message_and_low_order_key() -> None:
    r = NoiseSession(IdentityKey.generate(), initiator=False)
    with pytest.raises(NoiseError):
        r.receive_data(b"\x00\x03abc")
    r = NoiseSession(IdentityKey.generate(), initiator=False)
    with pytest.raises(NoiseError):
        r.receive_data(b"\x00\x20" + bytes(32))  # all-zero X25519 point


def test_garbage_second_message_fails() -> None:
    i = NoiseSession(IdentityKey.generate(), initiator=True)
    i.data_to_send()
    with pytest.raises(NoiseError):
        i.receive_data(b"\x00\x60" + bytes(range(96)))


_KEYS = (IdentityKey.from_seed(b"\x02" * 32), IdentityKey.from_seed(b"\x03" * 32))


@given(st.lists(st.integers(0, noise.MAX_PLAINTEXT + 100), min_size=1, max_size=3), st.data())
def test_any_chunking_yields_the_same_plaintext(sizes: list[int], data: st.DataObject) -> None:
    """Frames split anywhere (mid length prefix, mid body, several per read) decrypt to the
    same bytes in order: only the unfinished frame is buffered between reads."""
    i, r = handshake(*_KEYS)
    plain = [bytes([k % 251]) * n for k, n in enumerate(sizes)]
    wire = b"".join(i.encrypt(p) for p in plain)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    bounds = [0, *cuts, len(wire)]
    got = [r.receive_data(wire[a:b]) for a, b in itertools.pairwise(bounds)]
    assert b"".join(got) == b"".join(plain)


@given(st.integers(0, 3 * noise.MAX_PLAINTEXT + 10))
def test_application_bytes_go_in_frames_of_at_most_65519_bytes(size: int) -> None:
    """The libp2p noise spec's framing: each transport message is a 2-byte length and at
    most 65,535 bytes, so at most 65,519 plaintext bytes plus the tag."""
    i, r = handshake(*_KEYS)
    data = bytes(k % 251 for k in range(size))
    wire = i.encrypt(data)
    plain, pos = [], 0
    while pos < len(wire):  # one Noise frame at a time
        end = pos + 2 + int.from_bytes(wire[pos : pos + 2], "big")
        assert end - pos - 2 <= noise.MAX_FRAME
        plain.append(r.receive_data(wire[pos:end]))
        pos = end
    assert b"".join(plain) == data
    assert all(0 < len(p) <= noise.MAX_PLAINTEXT for p in plain)
    assert len(plain) == -(-size // noise.MAX_PLAINTEXT)


@given(st.lists(st.integers(0, 3 * noise.LARGE_PIECE), max_size=12))
def test_pieces_encrypt_like_their_concatenation(sizes: list[int]) -> None:
    """A muxer's frames handed over as pieces (headers, payload views) arrive as the same
    byte stream; every large piece is sealed straight from its buffer, never joined."""
    i, r = handshake(*_KEYS)
    pieces = [memoryview(bytes([k % 251]) * n) for k, n in enumerate(sizes)]
    wire = b"".join(i.encrypt_pieces(pieces))
    plain, pos = [], 0
    while pos < len(wire):  # one Noise frame at a time
        end = pos + 2 + int.from_bytes(wire[pos : pos + 2], "big")
        plain.append(r.receive_data(wire[pos:end]))
        pos = end
    assert b"".join(plain) == b"".join(pieces)
    assert all(0 < len(p) <= noise.MAX_PLAINTEXT for p in plain)
    large = [bytes(p) for p in pieces if len(p) >= noise.LARGE_PIECE]
    assert [p for p in plain if p in large] == large  # each large piece is a frame of its own
    # A run of small pieces is cut early only when full to within one small piece.
    small = sum(len(p) for p in pieces if len(p) < noise.LARGE_PIECE)
    assert len(plain) <= 2 * len(large) + 1 + small // (noise.MAX_PLAINTEXT - noise.LARGE_PIECE)


@given(st.binary(max_size=400))
def test_fuzz_responder_input(data: bytes) -> None:
    r = NoiseSession(IdentityKey.from_seed(bytes(32)), initiator=False)
    with contextlib.suppress(NoiseError):
        r.receive_data(data)


@given(st.binary(max_size=300))
def test_fuzz_transport_frames(data: bytes) -> None:
    _, r = handshake(IdentityKey.from_seed(bytes(32)), IdentityKey.from_seed(b"\x01" * 32))
    with contextlib.suppress(NoiseError):
        assert r.receive_data(data) == b""


def test_frames_of_a_chunk_decrypt_whole_and_in_order() -> None:
    """Several frames completed by one chunk: the plaintext arrives whole and in order,
    earlier results are not changed by later calls, and a tampered frame among them
    still fails authentication."""
    i, r = handshake(*_KEYS)
    plain = [bytes([k]) * n for k, n in enumerate([10, noise.MAX_PLAINTEXT + 5, 3, 70_000, 0])]
    wire = b"".join(i.encrypt(p) for p in plain)
    got = []
    for a, b in itertools.pairwise([0, 5, 40_000, 40_001, 150_000, len(wire)]):
        got.append(r.receive_data(wire[a:b]))
    snapshot = [bytes(g) for g in got]
    assert b"".join(got) == b"".join(plain)
    r.receive_data(i.encrypt(b"later"))
    assert [bytes(g) for g in got] == snapshot
    bad = bytearray(i.encrypt(b"x" * 100) + i.encrypt(b"y" * 100))
    bad[-1] ^= 1
    with pytest.raises(NoiseError):
        r.receive_data(bytes(bad))
