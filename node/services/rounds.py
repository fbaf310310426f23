"""FL round tracking: what happens when a block closes a round, and the FL status the node
reports (``FLStatus``: /status, /model, /fl/history).

The tracker listens to committed blocks. Each block moves the height, round and block-time
metrics; a block that closes a round starts the round's follow-up as a task of its own:
prune payloads and models of rounds long closed (late joiners fetch only the current
model; a few rounds stay for stragglers), fetch the new global model by hash if this node
did not aggregate it, announce it, and write the round's benchmark line.

Announcing a model (``announce_model``) tells the RPC view (the snapshot served by
/model) and the FL worker (train on it), and evaluates it on the worker's thread. The
evaluation task is created before the training job, so its job reaches the worker's
single thread first (tasks start in creation order) and the accuracy does not wait for an
epoch. The round's history row and the /status accuracy change in the same step, so a
client that sees the accuracy in one sees it in the other; /status keeps the newest
evaluated model's accuracy together with its round, since an evaluation may finish after
later rounds closed, or be skipped.

While the node catches up, the rounds that block sync closes are not followed up one by
one: only the final model is fetched once sync is done, and the catch-up supervisor calls
``resumed`` when consensus runs again, which announces the current model if the view and
the worker have not seen it, and starts the round's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from prometheus_client import Counter, Gauge, Histogram

from node.app.application import CommittedBlock
from node.p2p.tasks import TaskSet
from node.services.blob_sync import BlobSync
from node.services.round_log import RoundLog
from node.services.status import FLStatus, ModelSnapshot, RoundStats
from node.store.blobs import BlobError, BlobStore
from node.store.ledger import Ledger
from node.store.models import ModelBytesError, ModelStore

if TYPE_CHECKING:
    from fl.models import Params
    from fl.train import Evaluation
    from node.services.fl_worker import FLWorker

__all__ = ["KEEP_ROUNDS", "RoundMetrics", "RoundTracker"]

log = logging.getLogger(__name__)

# Rounds whose payloads and models stay in the blob store after they closed.
KEEP_ROUNDS = 3


class RoundMetrics(Protocol):
    """The node metrics the tracker keeps (``node.rpc.metrics.NodeMetrics``)."""

    height: Gauge
    fl_round: Gauge
    txs_committed: Counter
    block_seconds: Histogram
    round_seconds: Histogram
    test_accuracy: Gauge


class RoundTracker:
    def __init__(
        self,
        ledger: Ledger,
        models: ModelStore,
        blobs: BlobStore,
        blobsync: BlobSync,
        *,
        syncing: Callable[[], bool],
        metrics: RoundMetrics,
        round_log: RoundLog | None = None,
    ) -> None:
        self.ledger = ledger
        self.models = models
        self.blobs = blobs
        self.blobsync = blobsync
        self.syncing = syncing
        self.metrics = metrics
        self.round_log = round_log
        self.status = FLStatus()
        self.worker: FLWorker | None = None  # attached once its shard is loaded
        self._round_started = time.monotonic()
        self._last_block = time.monotonic()
        self._tasks = TaskSet("rounds")
        metrics.height.set(ledger.height)
        metrics.fl_round.set(ledger.state.meta.fl_round)

    def attach_worker(self, worker: FLWorker) -> None:
        """This node trains: hand the worker the current model (and every later one)."""
        self.worker = worker
        self.announce_model()

    # ----------------------------------------------------------------- blocks

    def on_commit(self, ev: CommittedBlock) -> None:
        """``NodeApp`` listener: called after every committed block."""
        m = self.metrics
        m.height.set(ev.block.height)
        m.fl_round.set(ev.block.header.fl_round)
        m.txs_committed.inc(len(ev.block.txs))
        now = time.monotonic()
        m.block_seconds.observe(now - self._last_block)
        self._last_block = now
        if ev.new_round and not self.syncing() and not self._tasks.closed:
            seconds = time.monotonic() - self._round_started
            self._round_started = time.monotonic()
            m.round_seconds.observe(seconds)
            log.info(
                "height %d closed FL round %d with %d updates (%.1fs)",
                ev.block.height,
                ev.block.header.fl_round - 1,
                ev.updates,
                seconds,
            )
            closed_at = self._round_started
            self._tasks.spawn(self._new_round(ev, seconds, closed_at), name="new-round")

    async def _new_round(self, ev: CommittedBlock, seconds: float, closed_at: float) -> None:
        h = ev.block.header
        with contextlib.suppress(OSError, sqlite3.Error):
            self.blobs.prune(h.fl_round, KEEP_ROUNDS, pinned=[h.global_model_hash])
        if not self.models.has(h.global_model_hash):
            await self.blobsync.fetch_model(self.models, h.global_model_hash, h.fl_round)
        row = RoundStats(
            h.fl_round - 1, h.height, ev.updates, None, None, seconds, h.global_model_hash.hex()
        )
        accuracy = self.announce_model(row)
        if accuracy is None:
            self.status.history.append(row)  # no evaluation here: the row has no accuracy
        result = await accuracy if accuracy is not None else None
        if self.round_log is not None:
            outcomes = self.worker.outcomes if self.worker is not None else []
            acc = result.accuracy if result else None
            self.round_log.record(ev, seconds, acc, closed_at, outcomes)

    async def resumed(self) -> None:
        """Consensus runs again after a catch-up (see the module docstring)."""
        meta = self.ledger.state.meta
        snapshot = self.status.snapshot
        if snapshot is None or snapshot.round != meta.fl_round:
            if not self.models.has(meta.global_model):
                await self.blobsync.fetch_model(self.models, meta.global_model, meta.fl_round)
            self._round_started = time.monotonic()
            self.announce_model()

    # ----------------------------------------------------------------- models

    def announce_model(
        self, row: RoundStats | None = None
    ) -> asyncio.Task[Evaluation | None] | None:
        """Tell the worker and the RPC view about the current global model; the returned
        evaluation appends ``row`` (the round that made the model) to the history."""
        meta = self.ledger.state.meta
        try:
            params: Params = self.models.resolve(meta.global_model)
        except (KeyError, BlobError, ModelBytesError, OSError) as e:
            # Missing or damaged (then removed): the node goes on without it; it is
            # fetched by hash at the next start-up, resume or round.
            log.info("global model of round %d not available: %s", meta.fl_round, e)
            return None
        self.status.snapshot = ModelSnapshot.from_params(meta.fl_round, self.models.arch, params)
        if self.worker is None or self._tasks.closed:
            return None
        task: asyncio.Task[Evaluation | None] = self._tasks.spawn(
            self._evaluate(self.worker, params, meta.fl_round, row), name="evaluate"
        )
        self.worker.on_model(meta.fl_round, meta.global_model, params)
        return task

    async def _evaluate(
        self, worker: FLWorker, params: Params, round: int, row: RoundStats | None
    ) -> Evaluation | None:
        result = await worker.evaluate(params)
        status = self.status
        if row is not None:
            if result is not None:
                row = replace(row, accuracy=result.accuracy, loss=result.loss)
            status.history.append(row)
        seen = status.test_accuracy_round
        if result is not None and (seen is None or round >= seen):
            status.test_accuracy, status.test_accuracy_round = result.accuracy, round
            self.metrics.test_accuracy.set(result.accuracy)
        return result

    async def close(self) -> None:
        """Cancel and await the rounds' follow-ups and evaluations (close the worker
        first, so an evaluation in its thread stops at its next batch)."""
        await self._tasks.aclose()
