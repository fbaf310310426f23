"""The catch-up supervisor: keeps this node's consensus running at the chain's height.

Start-up (``sync_at_start``): wait a few seconds for a first peer when peers are
configured, pull missing blocks (``node.services.block_sync``), and fetch the current
global model by hash rather than replaying every round (also when the stored copy is
damaged: ``ModelStore.intact``). ``start`` then builds the engine
for the height reached from this node's own state (``EngineFactory.local``); when sync
went past its own checkpoint, the watcher starts it from a peer's as soon as it runs.

Running: the engine's own catch-up only reaches as far back as its peers remember
decisions, so a node that falls further behind (partitioned, paused, or it lost the
messages of a height in a reconnect) would otherwise stay at its height forever. The
watcher probes one peer a second for certified blocks past our height
(``BlockSync.probe``); when ``LagDetector`` says we are really behind, it stops the
engine, block-syncs, fetches the current global model, and rebuilds the engine from a
peer's checkpoint at the height reached (``catching_up`` in /status meanwhile). A failing
store or a certified block that does not apply means the node cannot follow the chain:
the supervisor reports it (``on_failure``) instead of idling without consensus.

The supervisor is the one writer of the ``ConsensusHandle``: it installs the driver it
started and removes it before stopping it. ``close`` stops the watcher first (so nothing
restarts an engine), then whichever driver runs or is being stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from prometheus_client import Counter

from consensus.engine import Engine
from node.app.application import AppError
from node.p2p.host import Host
from node.services.blob_sync import BlobSync
from node.services.block_sync import BadSyncPeer, BlockSync, CatchUpPolicy, LagDetector, Probe
from node.services.consensus_driver import AsyncConsensus, ConsensusHandle
from node.services.engine_factory import EngineFactory
from node.store.chain import StoreError
from node.store.ledger import Ledger
from node.store.models import ModelStore

__all__ = ["CatchUp", "CatchUpMetrics"]

log = logging.getLogger(__name__)

# Peer checkpoints tried per attempt to (re)start the engine; the watcher tries again a
# second later when all fail, so a node never gives up on consensus for good.
RESUME_TRIES = 10
PROBE_TIMEOUT = 5.0


class CatchUpMetrics(Protocol):
    """The node metrics the supervisor counts (``node.rpc.metrics.NodeMetrics``)."""

    blocks_synced: Counter
    catchups: Counter


class CatchUp:
    def __init__(
        self,
        consensus: ConsensusHandle,
        *,
        host: Host,
        ledger: Ledger,
        models: ModelStore,
        blocksync: BlockSync,
        blobsync: BlobSync,
        engines: EngineFactory,
        drive: Callable[[Engine], AsyncConsensus],
        on_resumed: Callable[[], Awaitable[None]],
        on_failure: Callable[[BaseException], None],
        metrics: CatchUpMetrics,
        watch: bool = True,
        peer_wait: float = 5.0,
        interval: float = 1.0,
        policy: CatchUpPolicy | None = None,
    ) -> None:
        self.consensus = consensus
        self.host = host
        self.ledger = ledger
        self.models = models
        self.blocksync = blocksync
        self.blobsync = blobsync
        self.engines = engines
        self.drive = drive
        self.on_resumed = on_resumed
        self.on_failure = on_failure
        self.metrics = metrics
        self.watch = watch  # False on a single-node dev chain: no peers to follow
        self.peer_wait = peer_wait
        self.interval = interval
        self.detector = LagDetector(policy)
        self._watcher: asyncio.Task[None] | None = None
        self._paused: AsyncConsensus | None = None  # being stopped by the watcher
        self._closed = False

    # ----------------------------------------------------------------- start-up

    async def sync_at_start(self) -> None:
        """Catch up with the peers before consensus starts (see the module docstring)."""
        if not self.watch:
            return
        cfg = self.host.config
        if cfg.persistent or cfg.bootstrap:
            deadline = time.monotonic() + self.peer_wait
            while not self.host.connected_peers() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        await self._sync_passes()
        meta = self.ledger.state.meta
        # Read, not only looked up: a damaged model is dropped and fetched again by hash.
        if not self.models.intact(meta.global_model):
            await self.blobsync.fetch_model(self.models, meta.global_model, meta.fl_round)

    def start(self) -> None:
        """Start the engine from local state when that is enough, and the watcher (which
        starts the engine from a peer's checkpoint when local state was not enough)."""
        engine = self.engines.local()
        if engine is not None:
            self._run_engine(engine)
        if self.watch:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="catch-up")

    async def _sync_passes(self, passes: int = 5) -> int:
        """Block-sync until a pass applies nothing (at most ``passes``); blocks applied."""
        applied = 0
        for _ in range(passes):
            n = await self.blocksync.sync()
            if n == 0:
                break
            applied += n
            self.metrics.blocks_synced.inc(n)
            log.info("block sync applied %d blocks, now at height %d", n, self.ledger.height)
        return applied

    def _run_engine(self, engine: Engine) -> None:
        if self._closed:
            return
        height = self.ledger.height
        driver = self.drive(engine)
        self.consensus.driver = driver
        driver.start()
        self.consensus.catching_up = False
        log.info("consensus (%s) started at height %d", self.engines.name, height + 1)

    # ----------------------------------------------------------------- falling behind

    async def _watch(self) -> None:
        while True:
            try:
                if not self.consensus.running:
                    await self._resume()
                else:
                    probe = await self._probe()
                    now = time.monotonic()
                    if probe is not None and self.detector.observe(self.ledger.height, probe, now):
                        await self._resync(probe)
            except (AppError, StoreError, sqlite3.Error) as e:
                # A certified block that does not apply, or a failing store: this node
                # cannot follow the chain; stop loudly rather than idle without consensus.
                log.exception("catching up failed")
                self.on_failure(e)
                return
            except Exception:
                # Peers' faults end as BadSyncPeer inside sync; whatever else went wrong,
                # the next round of the loop tries again (and restarts the engine).
                log.exception("catching up failed; trying again")
            await asyncio.sleep(self.interval)

    async def _probe(self) -> Probe | None:
        peers = self.host.connected_peers()
        if not peers:
            return None
        peer = random.choice(peers)
        try:
            return await self.blocksync.probe(peer, timeout=PROBE_TIMEOUT)
        except BadSyncPeer as e:
            log.info("lag probe of %s: %s", peer, e)
            return None

    async def _resync(self, probe: Probe) -> None:
        """Stop the engine, block-sync, and start a new engine at the height reached."""
        log.warning(
            "behind the chain at height %d (%s has certified blocks to %d, claims %d): "
            "pausing consensus to sync",
            self.ledger.height,
            probe.peer,
            probe.proven,
            probe.tip,
        )
        self.consensus.catching_up = True
        self.metrics.catchups.inc()
        driver, self.consensus.driver = self.consensus.driver, None
        if driver is not None:
            self._paused = driver
            await driver.close()
            self._paused = None
        applied = await self._sync_passes()
        self.detector.synced(applied, time.monotonic())
        log.info("caught up %d blocks, now at height %d", applied, self.ledger.height)
        meta = self.ledger.state.meta
        if not self.models.has(meta.global_model):
            # One try only while consensus is paused (a round-closing proposal needs it
            # as the base); the tracker keeps trying once the engine runs again.
            await self.blobsync.fetch_model(self.models, meta.global_model, meta.fl_round, tries=1)
        await self._resume()

    async def _resume(self) -> None:
        """(Re)start the engine at our height, from our own state or a peer's checkpoint
        (syncing up to exactly its height: peers keep committing meanwhile); bounded."""
        self.consensus.catching_up = True
        engine = await self.blocksync.resume_from_checkpoint(
            lambda cp: self.engines.from_checkpoint(cp.data, cp.height),
            local=self.engines.local,
            tries=RESUME_TRIES,
        )
        if engine is None:
            log.warning("no usable checkpoint for height %d yet: retrying", self.ledger.height)
            return
        self._run_engine(engine)
        await self.on_resumed()

    # ----------------------------------------------------------------- stop

    async def close(self) -> None:
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
        if self._paused is not None:
            await self._paused.close()
        driver, self.consensus.driver = self.consensus.driver, None
        if driver is not None:
            await driver.close()
