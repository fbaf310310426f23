"""The FL worker trains off the loop and submits a valid update, or drops a stale one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fl.data import Mnist, NoTrainingDataError, load_mnist
from fl.models import init_params, model_hash
from fl.partition import partition
from fl.shards import write_shards
from fl.train import TrainingStopped
from fl.update import decode_update
from node.core.codec import sha256
from node.core.crypto import PrivateKey
from node.ledger.tx import ModelUpdate, Tx
from node.services.fl_worker import FLWorker, load_shard
from node.store.ledger import Ledger
from node.store.models import ZERO_HASH
from tests.helpers import wait_for
from tests.node.daemon.chainkit import genesis_for

KEYS = [PrivateKey.from_secret(f"worker-{i}") for i in range(2)]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """KEYS[1]'s own training data: its part of the genesis partition, as `data split`
    writes it (genesis_for lists the trainers in KEYS order)."""
    root = tmp_path_factory.mktemp("shards")
    g = genesis_for(KEYS)
    write_shards(mnist_dir, [root / "node0", root / "node1"], g.fl.partition, g.fl.init_seed)
    return root / "node1"


async def _run(tmp_path: Path, shard_dir: Path, round_now: int) -> tuple[list[Tx], Ledger]:
    g = genesis_for(KEYS, min_updates=1)
    ledger = Ledger.open(tmp_path / "chain.sqlite", g, fsync=False)
    shard = load_shard(shard_dir, max_samples=64, eval_samples=100)
    assert shard is not None and len(shard.labels) == 64
    got: list[Tx] = []
    payloads: list[bytes] = []

    async def submit(tx: Tx, payload: bytes) -> None:
        got.append(tx)
        payloads.append(payload)

    w = FLWorker(
        g, KEYS[1], shard, submit=submit, next_nonce=lambda: 0, current_round=lambda: round_now
    )
    params = init_params("cnn", 0)
    w.on_model(0, ZERO_HASH, params)
    w.on_model(0, ZERO_HASH, params)  # once per round
    result = await w.evaluate(params)
    assert result is not None and 0.0 <= result.accuracy <= 1.0
    # An untrained 10-class model: mean cross-entropy near ln(10), the /fl/history loss.
    assert 1.5 < result.loss < 3.5
    assert w._task is not None
    await asyncio.wait_for(w._task, 60)  # the job ran to its end (a timeout fails the test)
    await w.close()
    for tx, p in zip(got, payloads, strict=True):
        body = tx.body
        assert isinstance(body, ModelUpdate)
        assert body.payload_hash == sha256(p) and body.samples == 64
        assert decode_update(p, "cnn").base_hash == model_hash(params)
    return got, ledger


async def test_worker_submits_an_update_the_ledger_accepts(tmp_path: Path, shard_dir: Path) -> None:
    got, ledger = await _run(tmp_path, shard_dir, 0)
    assert len(got) == 1
    ledger.check_tx(got[0])  # signed, right round and base, a genesis trainer


async def test_worker_drops_an_update_for_a_closed_round(
    tmp_path: Path, shard_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="node.services.fl_worker")
    got, _ = await _run(tmp_path, shard_dir, 1)
    # Trained to the end and then dropped, not lost to a failure on the way.
    assert "round 0 closed while training; update dropped" in caplog.text
    assert got == []


def test_a_node_trains_on_its_own_directory_only(
    tmp_path: Path, mnist_dir: Path, shard_dir: Path
) -> None:
    """The shard is the directory's rows (here the genesis partition's part of trainer 1,
    in order), never derived from a full data set; without data the error says how to
    get some."""
    g = genesis_for(KEYS)
    full: Mnist = load_mnist(mnist_dir)
    rows = partition(g.fl.partition, full.train_labels.numpy(), 2, g.fl.init_seed)[1]
    shard = load_shard(shard_dir, max_samples=1000, eval_samples=10)
    assert shard.images.equal(full.train_images[rows[:1000]])
    assert shard.labels.equal(full.train_labels[rows[:1000]])
    assert shard.test_labels.equal(full.test_labels[:10])
    assert len(load_shard(shard_dir).labels) == len(rows)
    with pytest.raises(NoTrainingDataError, match="fedchain data split"):
        load_shard(tmp_path)


async def test_evaluation_backlog_keeps_only_the_newest_model(shard_dir: Path) -> None:
    """Models that arrive while the worker thread is busy do not
    queue up: only the newest waiting one is evaluated, the ones it replaced are skipped."""
    g = genesis_for(KEYS, min_updates=1)
    shard = load_shard(shard_dir, max_samples=64, eval_samples=100)

    async def submit(tx: Tx, payload: bytes) -> None:
        return None

    w = FLWorker(g, KEYS[1], shard, submit=submit, next_nonce=lambda: 0, current_round=lambda: 0)
    release = threading.Event()
    busy = asyncio.get_running_loop().run_in_executor(w._pool, release.wait)
    params = init_params("cnn", 0)
    jobs = [asyncio.ensure_future(w.evaluate(params)) for _ in range(3)]
    # All three wait behind the busy job (the thread took that one off the queue).
    await wait_for(lambda: w._pool._work_queue.qsize() == 3, 10, "three queued evaluations")
    release.set()
    await busy
    first, second, newest = await asyncio.gather(*jobs)
    assert first is None and second is None
    assert newest is not None and 0.0 <= newest.accuracy <= 1.0
    await w.close()


async def test_worker_trains_exactly_like_the_simulator(tmp_path: Path, shard_dir: Path) -> None:
    """A node trains as the simulator's client with the same index does (same seed, data
    and steps), byte for byte: testnets and ``fl.simulation`` runs are comparable."""
    from fl.simulation import local_update
    from fl.train import TrainConfig, training_seed

    g = genesis_for(KEYS, min_updates=1)
    shard = load_shard(shard_dir, max_samples=64, eval_samples=100)
    assert shard is not None
    payloads: list[bytes] = []

    async def submit(tx: Tx, payload: bytes) -> None:
        payloads.append(payload)

    w = FLWorker(g, KEYS[1], shard, submit=submit, next_nonce=lambda: 0, current_round=lambda: 3)
    params = init_params("cnn", 0)
    w.on_model(3, ZERO_HASH, params)
    assert w._task is not None
    await asyncio.wait_for(w._task, 60)
    await w.close()
    index = g.trainers.index(KEYS[1].address)
    expected, _ = local_update(
        "cnn",
        params,
        shard.images,
        shard.labels,
        TrainConfig(),
        seed=training_seed(g.fl.init_seed, 3, index),
        round_=3,
    )
    other, _ = local_update(
        "cnn",
        params,
        shard.images,
        shard.labels,
        TrainConfig(),
        seed=training_seed(g.fl.init_seed, 3, 1 - index),
        round_=3,
    )
    assert payloads == [expected.encode()]
    assert other.encode() != expected.encode()  # the index does name the randomness


async def test_a_new_round_stops_the_old_rounds_training(
    shard_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The thread of a superseded round's job stops at its next batch, so the new round's
    job (queued behind it on the single training thread) starts at once."""
    g = genesis_for(KEYS, min_updates=1)
    shard = load_shard(shard_dir, max_samples=6000, eval_samples=100)
    rounds = [0]
    got: list[Tx] = []
    training = threading.Event()

    async def submit(tx: Tx, payload: bytes) -> None:
        got.append(tx)

    @contextlib.contextmanager
    def slot(stop: threading.Event) -> Iterator[None]:
        training.set()  # the job holds its slot: train_local runs next, in the thread
        yield

    w = FLWorker(
        g,
        KEYS[1],
        shard,
        submit=submit,
        next_nonce=lambda: 0,
        current_round=lambda: rounds[0],
        slot=slot,
    )
    params = init_params("cnn", 0)
    caplog.set_level(logging.INFO, logger="node.services.fl_worker")
    w.on_model(0, ZERO_HASH, params)
    # Round 0's epoch (thousands of samples) is under way.
    await wait_for(training.is_set, 30, "round 0's training job")
    rounds[0] = 1
    w.on_model(1, ZERO_HASH, params)
    assert w._task is not None
    await asyncio.wait_for(w._task, 120)
    await w.close()
    assert "training round 0 stopped: a newer round began" in caplog.text
    assert [tx.body.round for tx in got] == [1]  # type: ignore[union-attr]


async def test_training_holds_the_injected_slot_and_a_refused_slot_stops_the_job(
    shard_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The composition root's slot limiter wraps each training job in the worker thread;
    a slot the node stops waiting for ends the round's job without an update."""
    g = genesis_for(KEYS, min_updates=1)
    shard = load_shard(shard_dir, max_samples=64, eval_samples=100)
    held: list[str] = []
    refuse = [False]
    got: list[Tx] = []

    async def submit(tx: Tx, payload: bytes) -> None:
        got.append(tx)

    @contextlib.contextmanager
    def slot(stop: threading.Event) -> Iterator[None]:
        if refuse[0]:
            raise TrainingStopped("stopped while waiting for a slot")
        held.append(threading.current_thread().name)
        yield

    w = FLWorker(
        g, KEYS[1], shard, submit=submit, next_nonce=lambda: 0, current_round=lambda: 0, slot=slot
    )
    caplog.set_level(logging.INFO, logger="node.services.fl_worker")
    params = init_params("cnn", 0)
    w.on_model(0, ZERO_HASH, params)
    assert w._task is not None
    await asyncio.wait_for(w._task, 60)
    assert len(held) == 1 and held[0].startswith("fl-work")  # held in the worker thread
    assert len(got) == 1
    refuse[0] = True
    w.on_model(1, ZERO_HASH, params)
    await asyncio.wait_for(w._task, 60)
    await w.close()
    assert "training round 1 stopped" in caplog.text
    assert len(got) == 1  # no update for the stopped job
