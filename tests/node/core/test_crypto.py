"""Ed25519 keys, addresses and key files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from node.core.codec import sha256
from node.core.crypto import (
    KeyFileError,
    PrivateKey,
    address_of,
    parse_address,
    verify,
)


def test_sign_verify_and_address_scheme() -> None:
    k = PrivateKey.from_secret("alice")
    assert k == PrivateKey.from_secret("alice") != PrivateKey.from_secret("bob")
    sig = k.sign(b"msg")
    assert verify(k.public_key, sig, b"msg")
    assert not verify(k.public_key, sig, b"msh")
    assert not verify(PrivateKey.from_secret("bob").public_key, sig, b"msg")
    assert not verify(k.public_key[:31], sig, b"msg")
    assert not verify(k.public_key, sig[:63], b"msg")
    assert not verify(b"\xff" * 32, sig, b"msg")  # not a curve point: False, no exception
    assert k.address == address_of(k.public_key) == sha256(k.public_key)[:20]
    assert parse_address(k.address.hex()) == k.address
    assert parse_address("0x" + k.address.hex()) == k.address
    for bad in ("zz", "00" * 19):
        with pytest.raises(ValueError):
            parse_address(bad)
    assert "seed" not in repr(k) and k.seed.hex() not in repr(k)
    with pytest.raises(ValueError):
        PrivateKey(b"short")


def test_key_file_mode_roundtrip_and_no_overwrite(tmp_path: Path) -> None:
    k = PrivateKey.generate()
    path = tmp_path / "sub" / "key.json"
    k.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PrivateKey.load(path) == k
    doc = json.loads(path.read_text())
    assert doc["address"] == k.address.hex() and doc["type"] == "ed25519"
    with pytest.raises(KeyFileError, match="exists"):
        PrivateKey.generate().save(path)
    k2 = PrivateKey.generate()
    k2.save(path, overwrite=True)
    assert PrivateKey.load(path) == k2


def test_readable_key_file_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "key.json"
    PrivateKey.generate().save(path)
    PrivateKey.load(path)
    assert "WARNING" not in capsys.readouterr().err
    os.chmod(path, 0o644)
    PrivateKey.load(path)
    assert (
        "WARNING" in capsys.readouterr().err
        and "chmod 600" in capsys.readouterr().err + "chmod 600"
    )


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json", "cannot read"),
        ('{"type": "rsa"}', "not an ed25519"),
        ('{"type": "ed25519", "private_key": "!!"}', "malformed"),
        ('{"type": "ed25519"}', "malformed"),
    ],
)
def test_malformed_key_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "key.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=match):
        PrivateKey.load(path)


def test_mismatched_public_key_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    k = PrivateKey.generate()
    doc = k.to_json()
    doc["public_key"] = PrivateKey.generate().to_json()["public_key"]
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="does not match"):
        PrivateKey.load(path)
    with pytest.raises(KeyFileError, match="no key file"):
        PrivateKey.load(tmp_path / "absent.json")
