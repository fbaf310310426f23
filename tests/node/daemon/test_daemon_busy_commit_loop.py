"""Issue 15 item 1, defence in depth, as a real process: a `fedchain start --dev` node whose
``NodeApp.has_work`` always claims work keeps answering RPC and stops on SIGTERM.

The admission fixes make ``has_work`` truthful; this test makes it lie on purpose (the
patch is applied in the child process before the CLI runs) to prove the commit loop
itself can never starve the event loop. Before the fix the solo engine chained empty
blocks inside one call: RPC stopped answering and SIGTERM was never handled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from node.config import Config, FLConfig, P2PConfig, RPCConfig
from node.home import init_home
from tests.helpers import free_base_port, wait_until

pytestmark = pytest.mark.slow

_CHILD = """
import sys
from node.app.application import NodeApp
NodeApp.has_work = lambda self: True  # the lie: every height has work
from node.cli.main import main
sys.exit(main(["start", "--home", sys.argv[1], "--dev"]))
"""


def _status(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=3) as r:
            doc: dict[str, Any] = json.loads(r.read())
            return doc
    except (urllib.error.URLError, OSError, ValueError):
        return None


def test_a_node_whose_has_work_lies_still_answers_rpc_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    port = free_base_port(1)
    cfg = Config(
        p2p=P2PConfig(listen="/ip4/127.0.0.1/tcp/0"),
        rpc=RPCConfig(listen=f"127.0.0.1:{port}"),
        fl=FLConfig(trainer=False),
    )
    home = init_home(tmp_path / "dev", config=cfg)
    log = open(tmp_path / "node.log", "wb")  # noqa: SIM115 (owned by the process)
    root = str(Path(__file__).resolve().parents[3])
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(home.path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": root},
    )
    log.close()
    try:
        first = wait_until(
            lambda: (s := _status(port)) is not None and s["latest_height"] >= 2 and s,
            60,
            "the node committing its first blocks",
        )
        # The empty blocks keep coming as fast as the node can commit them; every request
        # in between must still be answered.
        heights = [first["latest_height"]]
        for _ in range(5):
            st = _status(port)
            assert st is not None, "RPC stopped answering: the commit loop starves the loop"
            heights.append(st["latest_height"])
        assert heights[-1] > heights[0]  # the lie is in force: blocks without pause
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        print((tmp_path / "node.log").read_text()[-3000:])
