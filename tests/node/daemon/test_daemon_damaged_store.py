"""``fedchain start`` on a home whose chain.sqlite has a damaged page (issue 15, item 11):
one line naming the file and what to do, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.config import Config, FLConfig, P2PConfig, RPCConfig
from node.daemon import Daemon, DaemonOptions
from node.home import init_home
from tests.helpers import wait_for
from tests.kits.damage import damage_table

pytestmark = pytest.mark.slow


async def test_a_damaged_chain_store_is_one_clear_line(tmp_path: Path) -> None:
    cfg = Config(
        p2p=P2PConfig(listen="/ip4/127.0.0.1/tcp/0"),
        rpc=RPCConfig(listen="127.0.0.1:0"),
        fl=FLConfig(trainer=False),
    )
    home = init_home(tmp_path / "dev", config=cfg).path
    d = Daemon(home, DaemonOptions(dev=True, fsync=False))
    await d.start()
    try:
        await wait_for(lambda: d.ledger.height >= 4, 60, "a few blocks")
    finally:
        await d.close()  # folds the WAL into chain.sqlite
    chain = home / "data" / "chain.sqlite"
    damage_table(chain, "blocks")  # nothing reads the blocks at start

    root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": root}
    proc = subprocess.run(
        [sys.executable, "-m", "node.cli", "start", "--home", str(home), "--dev"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    err = proc.stderr.decode()
    assert proc.returncode != 0, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(chain) in lines[0] and "damaged" in lines[0] and "sync the chain" in lines[0]
