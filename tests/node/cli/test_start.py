"""``fedchain start`` that cannot start: one line a person can act on, no traceback, a
non-zero exit (real processes); and a node with nothing to train on that is not asked to
train starts and follows its chain."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from node.config import FL_DATA_DIR
from node.home import init_home
from tests.helpers import free_base_port, wait_until


def _home(tmp_path: Path, **fl: str) -> tuple[Path, int]:
    """A dev-chain home on free ports; ``fl`` lines are added to its [fl] table."""
    home = tmp_path / "home"
    init_home(home)
    base = free_base_port(2)
    text = (home / "config.toml").read_text()
    text = text.replace("tcp/26656", f"tcp/{base}").replace(":26657", f":{base + 1}")
    head, _, table = text.partition("\n[fl]\n")
    for key, value in fl.items():
        table, found = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", table)
        table = table if found else f"{key} = {value}\n{table}"
    text = f"{head}\n[fl]\n{table}"
    (home / "config.toml").write_text(text)
    return home, base


def _start(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", "start", "--home", str(home), "--dev"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_error_line(p: subprocess.CompletedProcess[str]) -> str:
    """The run failed with exactly one error line, the last thing it printed, and no
    traceback anywhere."""
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [lines[-1]], p.stderr
    return errors[0]


def test_a_bad_config_key_is_one_line_naming_it(tmp_path: Path) -> None:
    home, _ = _home(tmp_path, bogus="1")
    line = _one_error_line(_start(home))
    assert "fl.bogus: unknown key" in line
    assert str(home / "config.toml") in line


def test_an_occupied_port_names_the_key_and_the_file(tmp_path: Path) -> None:
    home, base = _home(tmp_path, trainer="false")
    with socket.create_server(("0.0.0.0", base)):
        line = _one_error_line(_start(home))
    assert f"p2p.listen /ip4/0.0.0.0/tcp/{base}: port {base} is already in use" in line
    assert str(home / "config.toml") in line


def test_a_trainer_without_data_says_how_to_get_it(tmp_path: Path) -> None:
    home, base = _home(tmp_path)
    line = _one_error_line(_start(home))
    assert f"no training data in {home / FL_DATA_DIR}" in line
    assert "fedchain data split" in line
    with socket.create_server(("0.0.0.0", base)):  # it never bound its ports
        pass
    bad = home / FL_DATA_DIR
    bad.mkdir()
    (bad / "train-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03junk")
    (bad / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 1, 3]))
    line = _one_error_line(_start(home))
    assert str(bad / "train-images-idx3-ubyte") in line


def test_a_node_that_does_not_train_needs_no_data(tmp_path: Path) -> None:
    home, base = _home(tmp_path, trainer="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "start", "--home", str(home), "--dev"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def height() -> int:
            try:
                url = f"http://127.0.0.1:{base + 1}/status"
                with urllib.request.urlopen(url, timeout=2) as r:
                    return int(json.loads(r.read())["latest_height"])
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                return 0

        wait_until(lambda: height() >= 2, 90, "the non-training node to commit blocks")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
