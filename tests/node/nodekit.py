"""A real ledger with a few committed blocks, a mempool, and the RPC server on port 0."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from node.app.mempool import Mempool
from node.core.crypto import PrivateKey
from node.ledger.genesis import Genesis
from node.ledger.tx import Stake, Transfer, sign_tx
from node.rpc.server import RPCServer
from node.rpc.view import LocalView
from node.store.ledger import Ledger
from tests.kits.genesis import make_genesis
from tests.kits.ledger import Devnet

MAX_BODY = 8192


@dataclass
class RunningNode:
    genesis: Genesis
    keys: list[PrivateKey]  # validators 0 and 1, then trainer 0
    ledger: Ledger
    mempool: Mempool
    view: LocalView
    server: RPCServer

    @property
    def url(self) -> str:
        return self.server.url


@contextlib.asynccontextmanager
async def running_node(tmp_path: Path) -> AsyncIterator[RunningNode]:
    g, vkeys, tkeys = make_genesis(2, n_trainers=1, engine="solo", chain_id="rpc-test")
    keys = vkeys + tkeys
    ledger = Ledger.open(tmp_path / "chain.db", g, fsync=False)
    dev = Devnet(ledger.state, keys)
    fees = g.fees
    a, b, t = keys
    blocks = [
        [sign_tx(a, g.chain_id, 0, fees, Transfer(b.address, 1000))],
        [
            sign_tx(a, g.chain_id, 1, fees, Transfer(t.address, 7)),
            sign_tx(t, g.chain_id, 0, fees, Stake(500)),
        ],
        [],
    ]
    for txs in blocks:
        block = dev.propose(txs)
        ledger.commit_block(block)
        dev.last_block = block
    mempool = Mempool(ledger.state)
    view = LocalView(node_id="12D3KooWtest", moniker="test-node", ledger=ledger, mempool=mempool)
    server = RPCServer(view, "127.0.0.1", 0, max_body_bytes=MAX_BODY)
    await server.start()
    try:
        yield RunningNode(g, keys, ledger, mempool, view, server)
    finally:
        await server.close()
        ledger.close()
