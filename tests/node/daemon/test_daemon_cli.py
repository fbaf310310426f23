"""`fedchain start` and `fedchain testnet up/down` refuse bad input with exit status 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.cli.main import main
from node.home import init_home


def test_start_needs_a_home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["start", "--home", str(tmp_path / "missing")]) == 1
    assert "run `fedchain init` first" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("addr", "message"),
    [("/ip4/127.0.0.1/tcp/1", "must end in /p2p/"), ("garbage", "must start with '/'")],
)
def test_start_refuses_bad_bootstrap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], addr: str, message: str
) -> None:
    home = init_home(tmp_path / "h")
    assert main(["start", "--home", str(home.path), "--bootstrap", addr]) == 1
    assert message in capsys.readouterr().err


def test_down_without_a_running_testnet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["testnet", "down", "--dir", str(tmp_path)]) == 1
    assert "no running testnet" in capsys.readouterr().err


def test_up_refuses_a_bad_target(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["testnet", "up", "--target-accuracy", "1.5"])
    assert e.value.code == 2
    assert "must be in (0, 1]" in capsys.readouterr().err
