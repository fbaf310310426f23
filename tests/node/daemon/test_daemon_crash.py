"""A node SIGKILLed between any two of the writes that commit a block restarts and goes on
committing (issue 15, item 10).

A block's commit writes its certificate (commits.sqlite), the block with its state
(chain.sqlite) and the engine's checkpoint (commits.sqlite again). Run as a script, this
file is a single-validator dev node that kills itself right after one of those writes for
block ``KILL_HEIGHT``; the test then starts the node again from the same home, in
process, and requires it to commit more blocks. A lone validator is the hard case: no
peer can hand it a missing certificate or checkpoint.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from node.config import Config, FLConfig, P2PConfig, RPCConfig
from node.daemon import Daemon, DaemonOptions
from node.home import init_home
from node.store.chain import ChainStore
from node.store.commits import CommitStore
from tests.helpers import wait_for

pytestmark = pytest.mark.slow

KILL_HEIGHT = 3
# The writes that commit one block, by the method making each and how to read the height
# it is for from that method's arguments.
WRITES: dict[str, tuple[type, str, Callable[..., int]]] = {
    "certificate": (CommitStore, "put_commit", lambda commit: commit.height),
    "block": (ChainStore, "commit_block", lambda block, *a, **k: block.height),
    "checkpoint": (CommitStore, "put_checkpoint", lambda height, data: height),
}
OPTIONS = DaemonOptions(dev=True, fsync=False)


def _kill_after(point: str) -> None:
    """Make the process SIGKILL itself right after ``point``'s write for KILL_HEIGHT."""
    cls, name, height_of = WRITES[point]
    original = getattr(cls, name)

    def write(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if height_of(*args, **kwargs) == KILL_HEIGHT:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(cls, name, write)


async def _run_until_killed(home: Path) -> None:
    d = Daemon(home, OPTIONS)
    await d.start()
    try:
        await asyncio.wait_for(d.stopped.wait(), 120)
    finally:
        await d.close()


def _home(tmp_path: Path) -> Path:
    cfg = Config(
        p2p=P2PConfig(listen="/ip4/127.0.0.1/tcp/0"),
        rpc=RPCConfig(listen="127.0.0.1:0"),
        fl=FLConfig(trainer=False),
    )
    return init_home(tmp_path / "dev", config=cfg).path


@pytest.mark.parametrize("point", list(WRITES))
async def test_a_node_killed_after_any_write_of_a_block_restarts(
    tmp_path: Path, point: str
) -> None:
    home = _home(tmp_path)
    root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": root}
    proc = subprocess.Popen(
        [sys.executable, __file__, str(home), point],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _, err = await asyncio.to_thread(proc.communicate, timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-3000:]

    d = Daemon(home, OPTIONS)
    await d.start()
    try:
        start = d.ledger.height
        assert start in (KILL_HEIGHT - 1, KILL_HEIGHT)
        await wait_for(
            lambda: d.stopped.is_set() or d.ledger.height >= start + 2, 60, "blocks after it"
        )
        assert not d.stopped.is_set(), "the restarted node stopped (see its log)"
    finally:
        await d.close()
    assert d.exit_code == 0


if __name__ == "__main__":
    _kill_after(sys.argv[2])
    asyncio.run(_run_until_killed(Path(sys.argv[1])))
