"""Ed25519 keys, account addresses and key files.

Address scheme (same shape as CometBFT's): the first 20 bytes of SHA-256 over the raw
32-byte Ed25519 public key, written as 40 lowercase hex characters. An address commits to
exactly one key, is short enough for every transaction, and is computable by anyone who
sees the public key in a signed transaction.

Key files are JSON created with mode 0600 (never widened afterwards); loading one that the
group or others can read prints a warning on stderr, as ssh does, because a validator key
that leaks can be used to double-sign and get the stake slashed.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from node.core.atomic_file import write_atomic
from node.core.codec import sha256

ADDRESS_LEN = 20
PUBKEY_LEN = 32
SIGNATURE_LEN = 64


class KeyFileError(Exception):
    """A key file is missing, unreadable or malformed."""


def address_of(public_key: bytes) -> bytes:
    """The 20-byte account address of a raw Ed25519 public key."""
    return sha256(public_key)[:ADDRESS_LEN]


def address_hex(address: bytes) -> str:
    return address.hex()


def parse_address(text: str) -> bytes:
    """Parse a 40-hex-character address (an optional ``0x`` prefix is accepted)."""
    t = text[2:] if text.startswith("0x") else text
    try:
        raw = bytes.fromhex(t)
    except ValueError as e:
        raise ValueError(f"address {text!r} is not hex") from e
    if len(raw) != ADDRESS_LEN:
        raise ValueError(f"address {text!r} must be {ADDRESS_LEN} bytes ({2 * ADDRESS_LEN} hex)")
    return raw


@lru_cache(maxsize=65536)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    # Parsing a public key costs about as much as hashing it; signers repeat, so cache.
    return Ed25519PublicKey.from_public_bytes(raw)


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message``; never raises."""
    if len(public_key) != PUBKEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    try:
        _public_key(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class PrivateKey:
    """An Ed25519 signing key; ``seed`` is the 32-byte private scalar seed (RFC 8032)."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        object.__setattr__(self, "_key", Ed25519PrivateKey.from_private_bytes(self.seed))

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(os.urandom(32))

    @classmethod
    def from_secret(cls, secret: bytes | str) -> PrivateKey:
        """A deterministic key for tests, testnets and simulators (never for real funds)."""
        data = secret.encode() if isinstance(secret, str) else secret
        return cls(sha256(b"fedchain-test-key:" + data))

    @property
    def public_key(self) -> bytes:
        key: Ed25519PrivateKey = self.__dict__["_key"]
        return key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def address(self) -> bytes:
        return address_of(self.public_key)

    def sign(self, message: bytes) -> bytes:
        key: Ed25519PrivateKey = self.__dict__["_key"]
        return key.sign(message)

    def __repr__(self) -> str:  # never print secrets
        return f"PrivateKey(address={self.address.hex()})"

    # ----------------------------------------------------------------- key files

    def to_json(self) -> dict[str, str]:
        return {
            "type": "ed25519",
            "address": self.address.hex(),
            "public_key": base64.b64encode(self.public_key).decode(),
            "private_key": base64.b64encode(self.seed).decode(),
        }

    def save(self, path: Path, *, overwrite: bool = False) -> None:
        """Write the key as JSON with mode 0600, atomically (temp file, fsync, rename)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise KeyFileError(f"{path} already exists; refusing to overwrite a key")
        write_atomic(path, (json.dumps(self.to_json(), indent=2) + "\n").encode(), mode=0o600)

    @classmethod
    def load(cls, path: Path, *, warn: bool = True) -> PrivateKey:
        path = Path(path)
        try:
            st = path.stat()
            doc = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise KeyFileError(f"no key file at {path} (run `fedchain keys generate`)") from e
        except (OSError, ValueError) as e:
            raise KeyFileError(f"cannot read key file {path}: {e}") from e
        if warn and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            print(
                f"WARNING: key file {path} is accessible by others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}",
                file=sys.stderr,
            )
        if not isinstance(doc, dict) or doc.get("type") != "ed25519":
            raise KeyFileError(f"{path}: not an ed25519 key file")
        try:
            seed = base64.b64decode(doc["private_key"], validate=True)
            key = cls(seed)
        except (KeyError, ValueError, TypeError) as e:
            raise KeyFileError(f"{path}: malformed private_key") from e
        if "public_key" in doc and doc["public_key"] != base64.b64encode(key.public_key).decode():
            raise KeyFileError(f"{path}: public_key does not match private_key")
        return key
