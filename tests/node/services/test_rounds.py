"""The round tracker on a real chain: a closed round's model is announced to the RPC view
and the worker (evaluation first), evaluated into its history row and /status, and
logged; rounds closed by block sync are caught up once consensus resumes; a late
evaluation never replaces a newer accuracy."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

from fl.models import Params
from fl.train import Evaluation
from node.rpc.metrics import NodeMetrics
from node.services.gossip import GossipTraffic
from node.services.round_log import RoundLog
from node.services.rounds import RoundTracker
from node.store.blobs import BlobStore
from node.store.models import ZERO_HASH, ModelStore
from tests.helpers import wait_for
from tests.node.daemon.chainkit import Chain, SimNode, close_round


@dataclass
class Worker:
    """The FL worker as the tracker uses it; evaluation of round r waits for gates[r]."""

    gates: dict[int, asyncio.Event] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    models: list[tuple[int, bytes]] = field(default_factory=list)
    outcomes: list[object] = field(default_factory=list)

    def on_model(self, round: int, ledger_hash: bytes, params: Params) -> None:
        self.models.append((round, ledger_hash))
        asyncio.get_running_loop().create_task(self._train())

    async def _train(self) -> None:
        self.order.append("train")

    async def evaluate(self, params: Params) -> Evaluation | None:
        self.order.append("evaluate")
        round = self.models[-1][0]  # the model this evaluation was started for
        gate = self.gates.get(round)
        if gate is not None:
            await gate.wait()
        return Evaluation(accuracy=(round + 1) / 4, loss=2.0 - round)


@dataclass
class Fetches:
    """BlobSync.fetch_model: copies the model from ``source`` (a peer that has it)."""

    source: ModelStore
    asked: list[tuple[bytes, int, int]] = field(default_factory=list)

    async def fetch_model(
        self, models: ModelStore, digest: bytes, round: int, *, tries: int = 20
    ) -> bool:
        self.asked.append((digest, round, tries))
        models.put_bytes(self.source.blobs.get(digest), digest, round=round)
        return True


def _tracker(
    node: SimNode,
    tmp_path: Path,
    *,
    syncing: bool = False,
    models: ModelStore | None = None,
) -> tuple[RoundTracker, NodeMetrics, Fetches]:
    models = models or node.app.models
    metrics = NodeMetrics()
    fetches = Fetches(node.app.models)
    tracker = RoundTracker(
        node.ledger,
        models,
        models.blobs,
        fetches,  # type: ignore[arg-type]
        syncing=lambda: syncing,
        metrics=metrics,
        round_log=RoundLog(tmp_path / "rounds.jsonl", GossipTraffic(100, 50)),
    )
    node.app.listeners.append(tracker.on_commit)
    return tracker, metrics, fetches


def _sample(metrics: NodeMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


async def test_a_closed_round_is_announced_evaluated_and_logged(tmp_path: Path) -> None:
    chain = Chain.build(tmp_path, min_updates=1)
    node = chain.nodes[0]
    tracker, metrics, _ = _tracker(node, tmp_path)
    worker = Worker()
    tracker.attach_worker(worker)  # type: ignore[arg-type]
    assert worker.models == [(0, ZERO_HASH)]  # told about the genesis model at once
    assert tracker.status.snapshot is not None and tracker.status.snapshot.round == 0
    try:
        close_round(chain, 0, seed=1)
        await wait_for(lambda: tracker.status.history, 10, "the round's history row")
        meta = node.ledger.state.meta
        (row,) = tracker.status.history
        assert (row.round, row.updates, row.model_hash) == (0, 1, meta.global_model.hex())
        closing = node.ledger.store.block(row.height)
        assert closing is not None and closing.header.fl_round == 1  # the block that closed it
        assert (row.accuracy, row.loss) == (0.5, 1.0)  # the evaluation of round 1's model
        snap = tracker.status.snapshot
        assert snap is not None and (snap.round, snap.model_hash) == (1, meta.global_model)
        assert (tracker.status.test_accuracy, tracker.status.test_accuracy_round) == (0.5, 1)
        assert worker.models[-1] == (1, meta.global_model)
        # The evaluation reached the worker before the training job of the same model.
        await wait_for(lambda: worker.order.count("train") == 2, 10, "round 1's training")
        assert worker.order[-2:] == ["evaluate", "train"]
        assert _sample(metrics, "fedchain_round_seconds_count") == 1
        assert _sample(metrics, "fedchain_height") == node.ledger.height
        assert _sample(metrics, "fedchain_test_accuracy") == 0.5
        log = tmp_path / "rounds.jsonl"
        line = await wait_for(lambda: log.exists() and log.read_text(), 10, "the log line")
        rec = json.loads(line)
        assert (rec["round"], rec["updates"], rec["accuracy"]) == (0, 1, 0.5)
        assert (rec["gossip_bytes_in"], rec["gossip_bytes_out"]) == (100, 50)
    finally:
        await tracker.close()


async def test_rounds_closed_while_syncing_are_caught_up_when_consensus_resumes(
    tmp_path: Path,
) -> None:
    chain = Chain.build(tmp_path, min_updates=1)
    node = chain.nodes[0]
    late = ModelStore(BlobStore(tmp_path / "late-blobs"), chain.genesis.fl)
    tracker, metrics, fetches = _tracker(node, tmp_path, syncing=True, models=late)
    worker = Worker()
    tracker.attach_worker(worker)  # type: ignore[arg-type]
    status = tracker.status
    try:
        await wait_for(lambda: status.test_accuracy_round == 0, 10, "the genesis evaluation")
        close_round(chain, 0, seed=2)
        assert len(tracker._tasks) == 0  # no follow-up of a round closed by sync
        assert _sample(metrics, "fedchain_round_seconds_count") == 0
        await tracker.resumed()
        meta = node.ledger.state.meta
        assert fetches.asked == [(meta.global_model, 1, 20)]  # fetched by hash, not replayed
        snap = tracker.status.snapshot
        assert snap is not None and snap.round == 1
        assert worker.models[-1] == (1, meta.global_model)
        assert tracker.status.history == []  # no rows for rounds this node did not see
        await tracker.resumed()  # already announced: nothing again
        assert len(worker.models) == 2 and len(fetches.asked) == 1
    finally:
        await tracker.close()


async def test_a_late_evaluation_does_not_replace_a_newer_accuracy(tmp_path: Path) -> None:
    chain = Chain.build(tmp_path, min_updates=1)
    node = chain.nodes[0]
    tracker, _, _ = _tracker(node, tmp_path)
    slow = asyncio.Event()
    worker = Worker(gates={1: slow})
    tracker.attach_worker(worker)  # type: ignore[arg-type]
    status = tracker.status
    try:
        close_round(chain, 0, seed=3)  # round 1's model: its evaluation is held back
        await wait_for(lambda: worker.order.count("evaluate") == 2, 10, "round 1's evaluation")
        close_round(chain, 1, seed=4)  # round 2's model: evaluated at once
        await wait_for(lambda: status.test_accuracy_round == 2, 10, "round 2's accuracy")
        assert [r.round for r in status.history] == [1]
        slow.set()
        await wait_for(lambda: len(status.history) == 2, 10, "round 0's row")
        assert [(r.round, r.accuracy) for r in status.history] == [(1, 0.75), (0, 0.5)]
        assert (status.test_accuracy, status.test_accuracy_round) == (0.75, 2)
    finally:
        await tracker.close()


async def test_a_model_this_node_does_not_hold_is_not_announced(tmp_path: Path) -> None:
    chain = Chain.build(tmp_path, min_updates=1)
    node = chain.nodes[0]
    close_round(chain, 0, seed=5)
    empty = ModelStore(BlobStore(tmp_path / "empty"), chain.genesis.fl)
    tracker, _, _ = _tracker(node, tmp_path, models=empty)
    worker = Worker()
    tracker.worker = worker  # type: ignore[assignment]
    assert tracker.announce_model() is None
    assert tracker.status.snapshot is None and worker.models == []
    await tracker.close()
