"""The catch-up supervisor against scripted parts: it starts consensus from local state or
a peer's checkpoint, stops the engine before it block-syncs when a peer proves a lag and
starts a new one after, stops the node when a block does not apply, and leaves no engine
or watcher behind on close. (Whole nodes catching up: tests/node/daemon.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from consensus.engine import Event
from node.app.application import AppError
from node.p2p.peer_id import IdentityKey, PeerID
from node.rpc.metrics import NodeMetrics
from node.services.block_sync import CatchUpPolicy, Probe
from node.services.catchup import CatchUp
from node.services.consensus_driver import ConsensusHandle
from tests.helpers import wait_for

PEER = IdentityKey.from_seed(b"\x09" * 32).peer_id
MODEL = b"\x0a" * 32


@dataclass
class Driver:
    engine: object
    handle: ConsensusHandle
    started: bool = False
    closed: bool = False
    seen_at_close: tuple[object, bool] | None = None

    def start(self) -> None:
        self.started = True

    def feed(self, event: Event) -> None:
        return None

    async def close(self) -> None:
        # What the rest of the node saw while this engine was being stopped.
        self.seen_at_close = (self.handle.driver, self.handle.catching_up)
        self.closed = True


@dataclass
class Engines:
    local_engines: list[object | None]
    name: str = "scripted"

    def local(self) -> object | None:
        return self.local_engines.pop(0) if len(self.local_engines) > 1 else self.local_engines[0]

    def from_checkpoint(self, data: bytes, height: int) -> object | None:
        return None


@dataclass
class Sync:
    """BlockSync as the supervisor uses it."""

    applied: list[int] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    peer_engine: object | None = None
    fail: BaseException | None = None
    resume_gate: asyncio.Event | None = None
    syncs: int = 0
    waiting_for_gate: bool = False
    peers_at_sync: list[int] = field(default_factory=list)
    host: Any = None

    async def sync(self, until: int | None = None) -> int:
        if self.fail is not None:
            raise self.fail
        self.syncs += 1
        if self.host is not None:
            self.peers_at_sync.append(len(self.host.peers))
        return self.applied.pop(0) if self.applied else 0

    async def probe(self, peer: PeerID, timeout: float = 5.0) -> Probe:
        return self.probes.pop(0) if self.probes else Probe(peer, 5, 5, 5)

    async def resume_from_checkpoint(
        self, build: Callable[..., object], *, local: Callable[[], object], tries: int
    ) -> object | None:
        if self.resume_gate is not None:
            self.waiting_for_gate = True
            await self.resume_gate.wait()
        made = local()
        return made if made is not None else self.peer_engine


@dataclass
class Blobs:
    fetched: list[tuple[bytes, int, int]] = field(default_factory=list)

    async def fetch_model(
        self, models: object, digest: bytes, round: int, *, tries: int = 20, pause: float = 1.0
    ) -> bool:
        self.fetched.append((digest, round, tries))
        return True


@dataclass
class Parts:
    handle: ConsensusHandle
    catchup: CatchUp
    sync: Sync
    blobs: Blobs
    drivers: list[Driver]
    resumed: list[int]
    failures: list[BaseException]
    metrics: NodeMetrics
    host: SimpleNamespace


def _parts(
    local: list[object | None],
    sync: Sync | None = None,
    *,
    bootstrap: tuple[str, ...] = (),
    peers: list[PeerID] | None = None,
    held: bool = True,
    watch: bool = True,
    peer_wait: float = 5.0,
) -> Parts:
    handle = ConsensusHandle(catching_up=True)
    drivers: list[Driver] = []
    resumed: list[int] = []
    failures: list[BaseException] = []
    host = SimpleNamespace(
        config=SimpleNamespace(persistent=(), bootstrap=bootstrap),
        peers=[PEER] if peers is None else peers,
    )
    host.connected_peers = lambda: list(host.peers)
    ledger = SimpleNamespace(height=5, state=SimpleNamespace(meta=SimpleNamespace(
        global_model=MODEL, fl_round=2
    )))  # fmt: skip
    sync = sync or Sync()
    sync.host = host
    blobs = Blobs()
    metrics = NodeMetrics()

    def drive(engine: object) -> Driver:
        drivers.append(Driver(engine, handle))
        return drivers[-1]

    async def on_resumed() -> None:
        resumed.append(len(drivers))

    catchup = CatchUp(
        handle,
        host=host,  # type: ignore[arg-type]
        ledger=ledger,  # type: ignore[arg-type]
        models=SimpleNamespace(  # type: ignore[arg-type]
            has=lambda digest: held, intact=lambda digest: held
        ),
        blocksync=sync,  # type: ignore[arg-type]
        blobsync=blobs,  # type: ignore[arg-type]
        engines=Engines(local),  # type: ignore[arg-type]
        drive=drive,  # type: ignore[arg-type]
        on_resumed=on_resumed,
        on_failure=failures.append,
        metrics=metrics,
        watch=watch,
        peer_wait=peer_wait,
        interval=0.01,
        policy=CatchUpPolicy(patience=60.0, far_lag=8),
    )
    return Parts(handle, catchup, sync, blobs, drivers, resumed, failures, metrics, host)


def _count(metrics: NodeMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(f"fedchain_{name}_total")
    return 0.0 if value is None else value


async def test_consensus_starts_from_local_state_and_close_stops_it() -> None:
    p = _parts(["own engine"], watch=False)
    p.catchup.start()
    assert [d.engine for d in p.drivers] == ["own engine"] and p.drivers[0].started
    assert p.handle.driver is p.drivers[0] and not p.handle.catching_up
    await p.catchup.close()
    assert p.drivers[0].closed and p.handle.driver is None


async def test_without_local_state_the_watcher_starts_from_a_peer_checkpoint() -> None:
    p = _parts([None], Sync(peer_engine="peer engine"))
    p.catchup.start()
    assert p.drivers == [] and p.handle.catching_up  # /status says so meanwhile
    try:
        await wait_for(lambda: p.handle.running, 10, "consensus from a peer's checkpoint")
        assert p.drivers[0].engine == "peer engine" and not p.handle.catching_up
        await wait_for(lambda: p.resumed == [1], 10, "the round tracker told")
    finally:
        await p.catchup.close()


async def test_proven_lag_stops_the_engine_before_syncing_and_starts_a_new_one() -> None:
    far = Probe(PEER, 5, 100, 7)  # two certified blocks ahead, a far tip claimed
    p = _parts(["old engine", "new engine"], Sync(applied=[3, 0], probes=[far]), held=False)
    p.catchup.start()
    try:
        await wait_for(lambda: len(p.drivers) == 2, 10, "a new engine after the sync")
        old, new = p.drivers
        # Removed from the handle (so nothing feeds it) before it was stopped.
        assert old.closed and old.seen_at_close == (None, True)
        assert new.engine == "new engine" and new.started and p.handle.driver is new
        assert not p.handle.catching_up
        assert _count(p.metrics, "catchups") == 1 and _count(p.metrics, "blocks_synced") == 3
        # The model of the round reached is tried once while consensus is paused.
        assert p.blobs.fetched == [(MODEL, 2, 1)]
        await wait_for(lambda: p.resumed == [2], 10, "the round tracker told")
    finally:
        await p.catchup.close()
    assert new.closed and p.handle.driver is None


async def test_a_block_that_does_not_apply_stops_the_node() -> None:
    broken = AppError("committed block 6 does not apply")
    p = _parts(["engine"], Sync(probes=[Probe(PEER, 5, 100, 7)], fail=broken))
    p.catchup.start()
    try:
        await wait_for(lambda: p.failures, 10, "the failure reported")
        assert p.failures == [broken]
        assert p.drivers[0].closed and not p.handle.running  # no engine left running
    finally:
        await p.catchup.close()


async def test_start_up_waits_for_a_first_peer_then_syncs_and_fetches_the_model() -> None:
    p = _parts([None], Sync(applied=[4, 2, 0]), bootstrap=("/dns/boot",), peers=[], held=False)
    asyncio.get_running_loop().call_later(0.05, p.host.peers.append, PEER)
    await asyncio.wait_for(p.catchup.sync_at_start(), 10)
    assert p.sync.peers_at_sync[0] == 1  # the first sync waited for the peer
    assert _count(p.metrics, "blocks_synced") == 6 and p.sync.syncs == 3
    assert p.blobs.fetched == [(MODEL, 2, 20)]


async def test_start_up_without_peers_to_wait_for_or_on_a_dev_chain() -> None:
    alone = _parts([None], peers=[], peer_wait=60.0)
    await asyncio.wait_for(alone.catchup.sync_at_start(), 5)  # no peer configured: no wait
    assert alone.sync.syncs == 1
    dev = _parts([None], watch=False)
    await dev.catchup.sync_at_start()
    assert dev.sync.syncs == 0 and dev.blobs.fetched == []


@pytest.mark.parametrize("gate_open", [False, True])
async def test_close_while_resuming_leaves_no_engine(gate_open: bool) -> None:
    gate = asyncio.Event()
    p = _parts([None], Sync(peer_engine="peer engine", resume_gate=gate))
    p.catchup.start()
    await wait_for(lambda: p.sync.waiting_for_gate, 10, "the watcher waiting for a checkpoint")
    if gate_open:
        gate.set()
        await wait_for(lambda: p.handle.running, 10, "consensus")
    await asyncio.wait_for(p.catchup.close(), 10)
    assert p.handle.driver is None and all(d.closed for d in p.drivers)
