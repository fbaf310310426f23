"""``fedchain testnet up`` (real processes): a node that cannot start is reported with the
line it printed, not only its exit code, and the run fails."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from node.config import FL_DATA_DIR
from tests.helpers import free_base_port


def test_up_shows_why_a_node_did_not_start(tmp_path: Path, mnist_dir: Path) -> None:
    base = free_base_port(2)
    directory = tmp_path / "tn"
    with socket.create_server(("127.0.0.1", base)):  # node0's p2p port is taken
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "node.cli",
                "testnet",
                "up",
                "--nodes",
                "1",
                "--engine",
                "solo",
                "--dir",
                str(directory),
                "--data-dir",
                str(mnist_dir),
                "--base-port",
                str(base),
                "--timeout",
                "120",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert p.returncode == 1, p.stdout + p.stderr
    out = " ".join(p.stdout.split())  # rich wraps long lines
    assert "node0 exited with code 1: error: cannot start the node: p2p.listen" in out
    assert f"port {base} is already in use" in out
    assert "Traceback" not in p.stdout + p.stderr
    assert (directory / "node0" / FL_DATA_DIR / "manifest.json").is_file()  # its own shard
