"""A whole single-node daemon in-process (solo engine, `--dev`): blocks, an FL round with
real training, a tx through the RPC, clean shutdown, and a restart that resumes."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from node.config import Config, FLConfig, P2PConfig, RPCConfig
from node.core.crypto import PrivateKey
from node.daemon import Daemon, DaemonOptions
from node.home import init_home
from node.ledger.tx import Transfer, sign_tx
from node.store.commits import CommitStore
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


async def test_dev_node_trains_serves_and_restarts(tmp_path: Path, mnist_dir: Path) -> None:
    cfg = Config(
        p2p=P2PConfig(listen="/ip4/127.0.0.1/tcp/0"),
        rpc=RPCConfig(listen="127.0.0.1:0"),
        fl=FLConfig(data_dir=str(mnist_dir)),
    )
    home = init_home(tmp_path / "dev", config=cfg)
    opts = DaemonOptions(dev=True, max_train_samples=200, eval_samples=300, fsync=False)
    d = Daemon(home.path, opts)
    await d.start()
    try:
        await wait_for(lambda: d.ledger.state.meta.fl_round >= 1, 60, "the first FL round")
        await wait_for(lambda: d.view.latest_accuracy() is not None, 30, "an accuracy")
        snapshot = d.view.model()
        assert snapshot is not None and snapshot.round >= 1
        g = d.genesis
        other = PrivateKey.from_secret("someone")
        tx = sign_tx(d.vkey, g.chain_id, d.next_nonce(), g.fees, Transfer(other.address, 42))
        async with aiohttp.ClientSession() as s:
            r = await s.post(
                f"{d.rpc.url}/txs",
                data=tx.encode(),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert r.status < 300, await r.text()
            await wait_for(lambda: d.ledger.account(other.address).balance == 42, 30, "the tx")
            status = await (await s.get(f"{d.rpc.url}/status")).json()
            assert status["latest_height"] >= 1 and status["fl_round"] >= 1
    finally:
        await d.close()
    height = d.ledger.height

    # Restart from the same home: resumes at the stored height, keeps producing blocks,
    # even when a crash lost the engine checkpoint of the last block (simulated here).
    stale = CommitStore(home.path / "data" / "commits.sqlite")
    stale.put_checkpoint(height - 1, b"stale")
    stale.close()
    d2 = Daemon(home.path, opts)
    await d2.start()
    try:
        assert d2.ledger.height >= height
        await wait_for(lambda: d2.ledger.height > height + 1, 30, "blocks after a restart")
    finally:
        await d2.close()
