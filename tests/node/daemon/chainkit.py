"""In-process validators for daemon tests: real engines, NodeApps and stores, no network.

Messages are delivered instantly through a queue and timers fire on a virtual clock, so a
four-validator tendermint chain commits blocks in milliseconds of real time.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from consensus.engine import MessageReceived, Start, TimeoutFired
from consensus.privval import GuardedSigner, MemoryStateStore
from consensus.registry import EngineConfig, create_engine
from fl.models import init_params, model_hash
from fl.update import encode_update
from node.app.application import NodeApp
from node.app.mempool import Mempool
from node.core.crypto import PrivateKey
from node.home import make_genesis
from node.ledger.genesis import Genesis
from node.ledger.tx import Tx
from node.p2p.host import Host
from node.services.consensus_driver import EngineRunner
from node.store.blobs import BlobStore
from node.store.commits import CommitStore
from node.store.ledger import Ledger
from node.store.models import ModelStore
from tests.kits.updates import random_delta, signed_update


def genesis_for(
    keys: list[PrivateKey], *, min_updates: int = 2, engine: str = "tendermint"
) -> Genesis:
    return make_genesis(
        "daemon-test",
        [k.public_key for k in keys],
        engine=engine,
        model="cnn",
        min_updates=min_updates,
        genesis_time_ms=1_700_000_000_000,
    )


def make_update(
    key: PrivateKey,
    genesis: Genesis,
    *,
    round: int,
    base_ledger_hash: bytes,
    base_fl_hash: bytes,
    seed: int,
    nonce: int = 0,
    samples: int = 100,
) -> tuple[Tx, bytes]:
    """A signed model_update tx and its payload (a small random delta)."""
    payload = encode_update(
        random_delta(seed), arch="cnn", base_hash=base_fl_hash, round_=round, num_samples=samples
    ).encode()
    tx = signed_update(
        key,
        genesis,
        payload,
        round=round,
        base_ledger_hash=base_ledger_hash,
        samples=samples,
        nonce=nonce,
    )
    return tx, payload


def initial_fl_hash(genesis: Genesis) -> bytes:
    return model_hash(init_params(genesis.fl.model, genesis.fl.init_seed))


@dataclass
class SimNode:
    key: PrivateKey
    app: NodeApp
    runner: EngineRunner
    ledger: Ledger


@dataclass
class Chain:
    genesis: Genesis
    keys: list[PrivateKey]
    nodes: list[SimNode] = field(default_factory=list)
    now: float = 0.0
    _timers: list[tuple[float, int, int, TimeoutFired]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _inbox: list[tuple[int, str, bytes]] = field(default_factory=list)

    @classmethod
    def build(cls, tmp: Path, n: int = 4, **kw: object) -> Chain:
        keys = [PrivateKey.from_secret(f"daemon-val-{i}") for i in range(n)]
        genesis = genesis_for(keys, **kw)  # type: ignore[arg-type]
        chain = cls(genesis, keys)
        for i, key in enumerate(keys):
            ledger = Ledger.open(tmp / f"n{i}" / "chain.sqlite", genesis, fsync=False)
            mempool = Mempool(ledger.state)
            models = ModelStore(BlobStore(tmp / f"n{i}" / "blobs"), genesis.fl)
            app = NodeApp(ledger, mempool, models, CommitStore(tmp / f"n{i}" / "commits.sqlite"))
            engine = create_engine(
                genesis.consensus_engine,
                EngineConfig(
                    chain_id=genesis.chain_id,
                    signer=GuardedSigner(key, MemoryStateStore()),
                    validators=ledger.validator_set(1),
                    options={"timeout_commit": 0.0},
                    block_id=app.block_id,
                ),
            )
            runner = EngineRunner(
                engine,
                app,
                broadcast=lambda d, i=i: chain._bcast(i, d),
                send=lambda p, d, i=i: chain._inbox.append((int(p), str(i), d)),
                schedule=lambda dt, ev, i=i: heapq.heappush(
                    chain._timers, (chain.now + dt, next(chain._seq), i, ev)
                ),
                clock_ms=lambda: 1_700_000_000_000 + int(chain.now * 1000),
            )
            chain.nodes.append(SimNode(key, app, runner, ledger))
        for node in chain.nodes:
            node.runner.feed(Start())
        return chain

    def _bcast(self, src: int, data: bytes) -> None:
        for j in range(len(self.nodes)):
            if j != src:
                self._inbox.append((j, str(src), data))

    def add_tx(self, tx: Tx, payload: bytes | None = None) -> None:
        """Gossip stand-in: every mempool admits the tx."""
        for node in self.nodes:
            node.app.mempool.add(tx, payload)

    def run_until(self, pred: object, max_steps: int = 20_000) -> None:
        assert callable(pred)
        for _ in range(max_steps):
            if pred():
                return
            if self._inbox:
                dst, src, data = self._inbox.pop(0)
                self.nodes[dst].runner.feed(MessageReceived(src, data))
            elif self._timers:
                t, _, i, ev = heapq.heappop(self._timers)
                self.now = max(self.now, t)
                self.nodes[i].runner.feed(ev)
            else:
                raise AssertionError("chain stalled: no messages and no timers")
        raise AssertionError("condition not reached")

    def heights(self) -> list[int]:
        return [n.ledger.height for n in self.nodes]


def close_round(chain: Chain, round: int, seed: int) -> None:
    """Close FL ``round`` (a chain built with ``min_updates=1``) with one update of
    validator 0's, and run the chain until every node is in the next round."""
    g, key = chain.genesis, chain.keys[0]
    meta = chain.nodes[0].ledger.state.meta
    models = chain.nodes[0].app.models
    tx, payload = make_update(
        key,
        g,
        round=round,
        base_ledger_hash=meta.global_model,
        base_fl_hash=models.fl_hash(meta.global_model),
        seed=seed,
        nonce=round,
    )
    chain.add_tx(tx, payload)
    chain.run_until(lambda: all(n.ledger.state.meta.fl_round == round + 1 for n in chain.nodes))


async def connect(a: Host, b: Host) -> None:
    """Dial ``b`` from ``a`` by its full /p2p/ address (hosts from the ``hosts`` fixture)."""
    await a.connect(b.listen_addrs[0].with_peer_id(b.peer_id))
