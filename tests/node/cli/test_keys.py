"""``fedchain keys generate|show`` and ``fedchain version``."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from node import __version__
from node.cli.main import main
from node.core.crypto import PrivateKey


def test_version_via_console_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "node.cli", "version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"fedchain {__version__}"


def test_keys_generate_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert main(["keys", "generate", "--home", str(home)]) == 0
    for name in ("validator_key.json", "node_key.json"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600
    vk = PrivateKey.load(home / "validator_key.json")
    capsys.readouterr()
    assert main(["keys", "show", "--home", str(home), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["validator"]["address"] == vk.address.hex()
    assert "private_key" not in shown["validator"] and "private_key" not in shown["node"]
    assert main(["keys", "show", "--home", str(home)]) == 0
    assert vk.address.hex() in capsys.readouterr().out


def test_keys_generate_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "h"
    assert main(["keys", "generate", "--home", str(home), "--kind", "validator"]) == 0
    before = (home / "validator_key.json").read_text()
    assert main(["keys", "generate", "--home", str(home), "--kind", "validator"]) == 1
    assert "exists" in capsys.readouterr().err
    assert (home / "validator_key.json").read_text() == before
    assert main(["keys", "generate", "--home", str(home), "--kind", "validator", "--force"]) == 0
    assert (home / "validator_key.json").read_text() != before
    assert not (home / "node_key.json").exists()


def test_keys_show_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "show", "--home", str(tmp_path / "empty")]) == 1
    assert "no keys" in capsys.readouterr().err
    (tmp_path / "validator_key.json").write_text("{}")
    assert main(["keys", "show", "--home", str(tmp_path)]) == 1
    assert "error:" in capsys.readouterr().err
