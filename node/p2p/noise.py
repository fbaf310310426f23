"""Noise XX secure channel (``/noise``), sans-I/O, as the libp2p noise spec defines it.

Protocol ``Noise_XX_25519_ChaChaPoly_SHA256`` with an empty prologue. Responder and
initiator each send a NoiseHandshakePayload in the second and third handshake message: the
libp2p identity public key and its signature over ``"noise-libp2p-static-key:" + static
key``, which binds the throwaway X25519 key to the peer ID. Every message on the wire is a
2-byte big-endian length and at most 65535 bytes. After the handshake, application bytes
are split into frames of at most 65519 plaintext bytes (plus the 16-byte tag).

The session object is fed received bytes and returns plaintext; outgoing bytes are
collected with ``data_to_send()``. All primitives come from ``cryptography``.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from google.protobuf.message import DecodeError

from node.p2p.pb import noise_pb2
from node.p2p.peer_id import IdentityKey, PeerID, PeerIDError, verify_libp2p_signature

PROTOCOL_ID = "/noise"
PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
SIGNATURE_PREFIX = b"noise-libp2p-static-key:"
MAX_FRAME = 65535
TAG_LEN = 16
MAX_PLAINTEXT = MAX_FRAME - TAG_LEN
DH_LEN = 32
HASH_LEN = 32
MAX_NONCE = 2**64 - 1
_NONCE_PREFIX = b"\x00\x00\x00\x00"
_FRAME_LEN = struct.Struct(">H")
# A piece this large is sealed straight from its buffer, not joined with its neighbours.
LARGE_PIECE = 16 * 1024


def _frame_plaintexts(pieces: Iterable[bytes | memoryview]) -> list[bytes | memoryview]:
    """The plaintext of each Noise frame for ``pieces``: large pieces cut as views into
    frames of at most 65,519 bytes, the small pieces between them joined."""
    frames: list[bytes | memoryview] = []
    small: list[bytes | memoryview] = []
    small_len = 0
    for piece in pieces:
        n = len(piece)
        if not n:
            continue
        if n >= LARGE_PIECE or small_len + n > MAX_PLAINTEXT:
            if small:
                frames.append(b"".join(small))
                small = []
                small_len = 0
            if n >= LARGE_PIECE:
                view = memoryview(piece)
                frames += [view[o : o + MAX_PLAINTEXT] for o in range(0, n, MAX_PLAINTEXT)]
                continue
        small.append(piece)
        small_len += n
    if small:
        frames.append(b"".join(small))
    return frames


class NoiseError(Exception):
    """The handshake failed or a frame did not decrypt: the connection must be dropped."""


class PeerMismatch(NoiseError):
    """The remote authenticated as a different peer than the one we dialed."""


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def _hkdf(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """Noise's HKDF with two outputs (HMAC-SHA256 based, per the Noise spec section 4.3)."""
    temp = _hmac(chaining_key, ikm)
    out1 = _hmac(temp, b"\x01")
    out2 = _hmac(temp, out1 + b"\x02")
    return out1, out2


def _raw_pub(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _dh(priv: X25519PrivateKey, pub: bytes) -> bytes:
    try:
        return priv.exchange(X25519PublicKey.from_public_bytes(pub))
    except ValueError as e:  # a low-order point yields an all-zero secret
        raise NoiseError(f"bad Diffie-Hellman public key: {e}") from e


class CipherState:
    """A ChaCha20-Poly1305 key with its 64-bit counter nonce."""

    __slots__ = ("_aead", "nonce")

    def __init__(self, key: bytes | None = None) -> None:
        self._aead = ChaCha20Poly1305(key) if key is not None else None
        self.nonce = 0

    @property
    def has_key(self) -> bool:
        return self._aead is not None

    def _next_nonce(self) -> bytes:
        if self.nonce >= MAX_NONCE:
            raise NoiseError("nonce exhausted")
        n = _NONCE_PREFIX + struct.pack("<Q", self.nonce)
        self.nonce += 1
        return n

    def encrypt(self, ad: bytes | None, plaintext: bytes | memoryview) -> bytes:
        if self._aead is None:
            return bytes(plaintext)
        return self._aead.encrypt(self._next_nonce(), plaintext, ad)

    def decrypt(self, ad: bytes | None, ciphertext: bytes | memoryview) -> bytes:
        if self._aead is None:
            return bytes(ciphertext)
        try:
            return self._aead.decrypt(self._next_nonce(), ciphertext, ad)
        except InvalidTag as e:
            raise NoiseError("frame failed authentication") from e


class SymmetricState:
    """Chaining key, handshake hash and the current handshake cipher."""

    def __init__(self) -> None:
        self.h = PROTOCOL_NAME.ljust(HASH_LEN, b"\0")  # exactly 32 bytes: used as is
        self.ck = self.h
        self.cipher = CipherState()

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, key = _hkdf(self.ck, ikm)
        self.cipher = CipherState(key)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ct = self.cipher.encrypt(self.h, plaintext)
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        pt = self.cipher.decrypt(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return pt

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = _hkdf(self.ck, b"")
        return CipherState(k1), CipherState(k2)


def make_payload(identity: IdentityKey, static_pub: bytes) -> bytes:
    msg = noise_pb2.NoiseHandshakePayload(
        identity_key=identity.public_key_proto(),
        identity_sig=identity.sign(SIGNATURE_PREFIX + static_pub),
    )
    return msg.SerializeToString()


def verify_payload(payload: bytes, remote_static: bytes) -> PeerID:
    """Check the remote's handshake payload; return its authenticated peer ID."""
    msg = noise_pb2.NoiseHandshakePayload()
    try:
        msg.ParseFromString(payload)
    except DecodeError as e:
        raise NoiseError(f"malformed handshake payload: {e}") from e
    if not msg.identity_key or not msg.identity_sig:
        raise NoiseError("handshake payload lacks identity key or signature")
    key = bytes(msg.identity_key)
    if not verify_libp2p_signature(key, SIGNATURE_PREFIX + remote_static, bytes(msg.identity_sig)):
        raise NoiseError("identity signature over the static key does not verify")
    try:
        return PeerID.from_pubkey_proto(key)
    except PeerIDError as e:
        raise NoiseError(f"bad identity key: {e}") from e


class NoiseSession:
    """One side of a Noise XX connection, fed and drained by an I/O driver."""

    def __init__(
        self,
        identity: IdentityKey,
        *,
        initiator: bool,
        expected_peer: PeerID | None = None,
        static_key: X25519PrivateKey | None = None,
        ephemeral_key: X25519PrivateKey | None = None,
    ) -> None:
        self.identity = identity
        self.initiator = initiator
        self.expected_peer = expected_peer
        self._s = static_key or X25519PrivateKey.generate()
        self._s_pub = _raw_pub(self._s)
        self._e = ephemeral_key or X25519PrivateKey.generate()
        self._e_pub = _raw_pub(self._e)
        self._re: bytes | None = None
        self._rs: bytes | None = None
        self._ss = SymmetricState()
        self._ss.mix_hash(b"")  # empty prologue
        self._step = 0  # handshake messages processed so far (sent or received)
        self._in = bytearray()
        self._out = bytearray()
        self._send: CipherState | None = None
        self._recv: CipherState | None = None
        self.remote_peer: PeerID | None = None
        if initiator:
            self._write_msg1()

    @property
    def handshake_complete(self) -> bool:
        return self._send is not None

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _frame(self, body: bytes) -> None:
        if len(body) > MAX_FRAME:
            raise NoiseError("handshake message too large")
        self._out += _FRAME_LEN.pack(len(body)) + body

    # -- handshake -------------------------------------------------------------------------

    def _write_msg1(self) -> None:  # -> e
        self._ss.mix_hash(self._e_pub)
        self._frame(self._e_pub + self._ss.encrypt_and_hash(b""))
        self._step = 1

    def _read_msg1(self, msg: bytes) -> None:
        if len(msg) < DH_LEN:
            raise NoiseError("first handshake message too short")
        self._re = msg[:DH_LEN]
        self._ss.mix_hash(self._re)
        self._ss.decrypt_and_hash(msg[DH_LEN:])  # payload must be empty; ignored if not
        self._step = 1
        self._write_msg2()

    def _write_msg2(self) -> None:  # <- e, ee, s, es
        assert self._re is not None
        self._ss.mix_hash(self._e_pub)
        self._ss.mix_key(_dh(self._e, self._re))
        enc_s = self._ss.encrypt_and_hash(self._s_pub)
        self._ss.mix_key(_dh(self._s, self._re))
        enc_p = self._ss.encrypt_and_hash(make_payload(self.identity, self._s_pub))
        self._frame(self._e_pub + enc_s + enc_p)
        self._step = 2

    def _read_msg2(self, msg: bytes) -> None:
        if len(msg) < DH_LEN + DH_LEN + TAG_LEN + TAG_LEN:
            raise NoiseError("second handshake message too short")
        self._re = msg[:DH_LEN]
        self._ss.mix_hash(self._re)
        self._ss.mix_key(_dh(self._e, self._re))
        self._rs = self._ss.decrypt_and_hash(msg[DH_LEN : 2 * DH_LEN + TAG_LEN])
        self._ss.mix_key(_dh(self._e, self._rs))
        payload = self._ss.decrypt_and_hash(msg[2 * DH_LEN + TAG_LEN :])
        self._authenticate(payload)
        self._step = 2
        self._write_msg3()

    def _write_msg3(self) -> None:  # -> s, se
        assert self._re is not None
        enc_s = self._ss.encrypt_and_hash(self._s_pub)
        self._ss.mix_key(_dh(self._s, self._re))
        enc_p = self._ss.encrypt_and_hash(make_payload(self.identity, self._s_pub))
        self._frame(enc_s + enc_p)
        self._step = 3
        self._finish()

    def _read_msg3(self, msg: bytes) -> None:
        if len(msg) < DH_LEN + TAG_LEN + TAG_LEN:
            raise NoiseError("third handshake message too short")
        assert self._re is not None
        self._rs = self._ss.decrypt_and_hash(msg[: DH_LEN + TAG_LEN])
        self._ss.mix_key(_dh(self._e, self._rs))
        payload = self._ss.decrypt_and_hash(msg[DH_LEN + TAG_LEN :])
        self._authenticate(payload)
        self._step = 3
        self._finish()

    def _authenticate(self, payload: bytes) -> None:
        assert self._rs is not None
        peer = verify_payload(payload, self._rs)
        if self.expected_peer is not None and peer != self.expected_peer:
            raise PeerMismatch(f"dialed {self.expected_peer} but the remote is {peer}")
        self.remote_peer = peer

    def _finish(self) -> None:
        c1, c2 = self._ss.split()
        self._send, self._recv = (c1, c2) if self.initiator else (c2, c1)

    # -- transport -------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> bytes:
        """Feed wire bytes; returns decrypted application bytes (possibly empty).

        Handshake messages and transport frames go through the same loop, so transport
        frames that follow the last handshake message in one chunk are decrypted at once.
        Only an incomplete frame is ever buffered: a frame left unfinished by the previous
        chunk is completed with just the bytes it still needs, and the frames after it are
        decrypted straight out of ``data`` (socket reads end at arbitrary points, mostly
        mid-frame). Nothing returned refers to ``data``, which the driver reuses.
        """
        parts: list[bytes] = []
        pending = self._in
        pos = 0
        n = len(data)
        if pending:
            used = self._complete_pending(data)
            if used is None:
                return b""
            pos = used
            with memoryview(pending) as v, v[2:] as frame:
                self._frame_in(frame, parts)
            pending.clear()
        if pos < n:
            with memoryview(data) as view:
                while n - pos >= 2:
                    length = (data[pos] << 8) | data[pos + 1]
                    if n - pos - 2 < length:
                        break
                    with view[pos + 2 : pos + 2 + length] as frame:
                        pos += 2 + length
                        self._frame_in(frame, parts)
                if pos < n:
                    pending += view[pos:]
        if not parts:
            return b""
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _complete_pending(self, data: bytes | bytearray | memoryview) -> int | None:
        """Complete the frame the previous chunk left unfinished in ``self._in`` with just
        the bytes it still needs from ``data``; return how many it took, or None if the
        frame is still unfinished (then all of ``data`` went into it)."""
        pending = self._in
        pos = 0
        n = len(data)
        if len(pending) < 2:
            pos = min(2 - len(pending), n)
            pending += data[:pos]
            if len(pending) < 2:
                return None
        need = 2 + ((pending[0] << 8) | pending[1]) - len(pending)
        take = min(need, n - pos)
        with memoryview(data) as v:
            pending += v[pos : pos + take]
        return pos + take if take == need else None

    def _frame_in(self, frame: memoryview, parts: list[bytes]) -> None:
        recv = self._recv
        if recv is not None:
            if len(frame) < TAG_LEN:
                raise NoiseError("transport frame shorter than its tag")
            parts.append(recv.decrypt(None, frame))
        else:
            self._handshake_message(bytes(frame))

    def _handshake_message(self, msg: bytes) -> None:
        if self.initiator and self._step == 1:
            self._read_msg2(msg)
        elif not self.initiator and self._step == 0:
            self._read_msg1(msg)
        elif not self.initiator and self._step == 2:
            self._read_msg3(msg)
        else:
            raise NoiseError("unexpected handshake message")

    def encrypt(self, data: bytes | memoryview) -> bytes:
        """The wire frames for ``data``, joined (``encrypt_pieces`` is the driver's path)."""
        return b"".join(self.encrypt_pieces([data]))

    def encrypt_pieces(self, pieces: Iterable[bytes | memoryview]) -> list[bytes]:
        """The wire frames of the concatenation of ``pieces``, without concatenating them:
        length prefixes and ciphertexts, in order, for ``transport.writelines``.

        Noise frames are chunks of a byte stream: their boundaries need not match the muxer
        frames or messages they carry. So a large piece (a message payload) is encrypted
        straight from its caller's buffer, a frame per 65,519 bytes, and only the small
        pieces between large ones (muxer headers, protobuf tags) are joined into frames of
        their own. Joining a multi-megabyte write first would copy it into fresh memory,
        which costs several times its encryption (BENCHMARKS.md, "Fast paths kept and
        folded").
        """
        send = self._send
        if send is None:
            raise NoiseError("handshake not complete")
        frames: list[bytes] = []
        for plain in _frame_plaintexts(pieces):
            ct = send.encrypt(None, plain)
            frames += (_FRAME_LEN.pack(len(ct)), ct)
        return frames
