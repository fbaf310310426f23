"""The node's trainer: trains on its MNIST shard off the event loop and submits updates.

When a block commits a new global model, ``on_model`` starts one training job for that
round in a single worker thread (torch releases the GIL inside its kernels, and
``torch.set_num_threads`` keeps it to ``threads`` cores, one by default, so consensus timers
on the loop stay on time). The result is encoded as a delta from the global model,
wrapped in a signed ``model_update`` tx and handed to ``submit``, which admits it to the
mempool and gossips it with its payload. A job for a round that is already over when it
finishes is dropped rather than published, and a job whose round closes while it trains
(the round needed fewer updates than there are trainers) stops at its next batch, so the
thread is free for the new round. Training randomness comes from
``fl.train.training_seed(init_seed, round, trainer index)``, the simulator's per-client
seed, so a network reproduces an in-process run of the same federation bit for bit. The
same thread evaluates each new global model (before training on it) on a slice of the
test set for ``/status`` and ``/fl/history``.

The shard is this participant's own data, the training IDX files in its ``fl.data_dir``
and nothing else (``fl.data.load_local_data``, checked on load); the node never derives it
from anyone else's. Test networks get theirs from ``fedchain data split`` (``fl.shards``),
which writes trainer ``i`` the rows the genesis partition gives it, so their runs still
reproduce the simulation. The test set it evaluates on is public: the copy beside the
shard, else the public MNIST location (``fl.data.load_test_set``).

``close`` sets a stop flag that the training and evaluation loops check between batches,
so a node stopping mid-round exits in well under a second instead of finishing the epoch.

Where several nodes share one machine, the composition root injects a ``TrainingSlot``
(``node.testnet.train_slots`` behind it) that each training job holds while it runs, so
the nodes queue for the cores instead of all training at once; this module knows only the
callable, so services never depend on the testnet tooling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import torch

from fl.data import load_local_data, load_test_set
from fl.models import Params, model_hash
from fl.train import (
    Evaluation,
    TrainConfig,
    TrainingStopped,
    TrainResult,
    evaluate_metrics,
    params_delta,
    train_local,
    training_seed,
)
from fl.update import encode_update
from node.core.codec import sha256
from node.core.crypto import PrivateKey
from node.ledger.genesis import Genesis
from node.ledger.tx import ModelUpdate, Tx, sign_tx

__all__ = ["FLWorker", "Shard", "TrainOutcome", "TrainingSlot", "load_shard"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Evaluation runs while the next round trains, so the activations of an evaluation batch
# add to the training peak. Small batches (with channels-last weights) keep evaluation's
# share of peak memory and of the malloc arena small, for slightly more evaluation CPU per
# image; smaller still would save little more memory for noticeably more CPU.
EVAL_BATCH = 32


# How long ``close`` lets a stopping training job finish by itself before cancelling it.
_STOP_GRACE_S = 1.0


class TrainingSlot(Protocol):
    """Held around each training job, in the worker thread: entering may block until the
    machine has a free slot (and may pin the thread to that slot's core); it raises
    ``fl.train.TrainingStopped`` when ``stop`` is set before a slot is free."""

    def __call__(self, stop: threading.Event) -> AbstractContextManager[object]: ...


@dataclass(frozen=True)
class Shard:
    images: torch.Tensor
    labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


@dataclass(frozen=True)
class TrainOutcome:
    round: int
    samples: int
    loss: float
    seconds: float  # training (and encoding) time
    submitted_at: float  # time.monotonic() when the update was handed to the network


def load_shard(
    data_dir: Path,
    *,
    max_samples: int | None = None,
    eval_samples: int = 10_000,
    download: bool = True,
) -> Shard:
    """The training examples in ``data_dir`` (the first ``max_samples`` of them) and the
    first ``eval_samples`` public test images.

    Raises ``fl.data.DataError`` (``NoTrainingDataError`` when the directory is missing or
    empty) with a message naming the file and what to do; ``download`` lets the public test
    set be fetched into the cache when ``data_dir`` has no copy of it.
    """
    local = load_local_data(data_dir, limit=max_samples)
    test_images, test_labels = (
        load_test_set(data_dir, eval_samples, download=download)
        if eval_samples
        else (torch.zeros((0, 28, 28), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    )
    return Shard(local.images, local.labels, test_images, test_labels)


class FLWorker:
    def __init__(
        self,
        genesis: Genesis,
        key: PrivateKey,
        shard: Shard | None,
        *,
        submit: Callable[[Tx, bytes], Awaitable[None]],
        next_nonce: Callable[[], int],
        current_round: Callable[[], int],
        train_config: TrainConfig | None = None,
        encoding: str = "float32",
        slot: TrainingSlot | None = None,
    ) -> None:
        self.genesis = genesis
        self.arch = genesis.fl.model
        self.key = key
        self.shard = shard
        self.submit = submit
        self.next_nonce = next_nonce
        self.current_round = current_round
        self.cfg = train_config or TrainConfig()
        self.encoding = encoding
        self.slot = slot
        # Position in the genesis trainer list: names this trainer's training randomness.
        self._index = genesis.trainers.index(key.address) if key.address in genesis.trainers else 0
        # One thread for training and evaluation. A second one cost a second malloc arena
        # (more peak memory) and only let this node's jobs contend with each other; the
        # round tracker submits a new model's evaluation before its training, so the accuracy is
        # not held back by an epoch, and a superseded epoch stops at its next batch.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fl-work")
        # Set by ``close``; the loops in the worker threads poll it between batches.
        self._stop = threading.Event()
        self._job_stop = threading.Event()  # set when the running job's round is over
        self._eval_newest: object | None = None
        self._task: asyncio.Task[None] | None = None
        self._trained_rounds: set[int] = set()
        self.outcomes: list[TrainOutcome] = []
        self.closed = False

    def on_model(self, round: int, ledger_hash: bytes, params: Params) -> None:
        """A global model for ``round`` is available: train on it (once per round)."""
        if self.closed or self.shard is None or round in self._trained_rounds:
            return
        if self._task is not None and not self._task.done():
            # An older round's job: its result would be stale. Cancelling the task does not
            # stop its thread, so the job's own flag ends the epoch at its next batch (or
            # its wait for a training slot) instead of training on for nothing while this
            # round's job queues behind it.
            self._task.cancel()
            self._job_stop.set()
        self._trained_rounds.add(round)
        self._task = asyncio.get_running_loop().create_task(
            self._train(round, ledger_hash, params), name=f"fl-train-{round}"
        )

    async def evaluate(self, params: Params) -> Evaluation | None:
        """Accuracy and mean cross-entropy of ``params`` on the evaluation slice.

        None when this node has no data, is stopping (the pass was abandoned), or a newer
        model was handed in before this one's evaluation started.
        """
        if self.shard is None or self.closed or len(self.shard.test_labels) == 0:
            return None  # not a trainer, closed, or fl.eval_samples = 0 (no evaluation)
        shard = self.shard
        loop = asyncio.get_running_loop()
        token = self._eval_newest = object()

        def run() -> Evaluation | None:
            # Newest wins: a model replaced while its evaluation waited for the thread is
            # skipped, so a backlog never builds up when rounds close faster than that.
            if token is not self._eval_newest:
                return None
            # Evaluation holds no training slot. On one machine only node0 evaluates by
            # default (node.home.testnet_init); in a slot, its evaluation made one slot's
            # queue a job longer than the other's, so the last trainer of every round
            # trained alone beside an idle core and the round ended later. Beside the two
            # trainers it only shares the cores for a moment.
            return evaluate_metrics(
                self.arch,
                params,
                shard.test_images,
                shard.test_labels,
                batch_size=EVAL_BATCH,
                threads=self.cfg.threads,
                stop=self._stop.is_set,
            )

        try:
            return await loop.run_in_executor(self._pool, run)
        except (TrainingStopped, RuntimeError):
            # RuntimeError: the pool was shut down by ``close`` before the job started.
            if self.closed:
                return None
            raise

    def _in_slot(self, stop: threading.Event, work: Callable[[], T]) -> T:
        """Run ``work`` (in the worker thread) holding a machine-wide compute slot, if
        one was injected. Raises TrainingStopped when ``stop`` is set first."""
        if self.slot is None:
            return work()
        with self.slot(stop):
            return work()

    async def _train(self, round: int, ledger_hash: bytes, params: Params) -> None:
        shard = self.shard
        assert shard is not None
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        seed = training_seed(self.genesis.fl.init_seed, round, self._index)
        job_stop = self._job_stop = threading.Event()
        if self._stop.is_set():
            job_stop.set()
        log.info("round %d: training on %d samples", round, len(shard.labels))
        try:

            def job() -> TrainResult:
                try:
                    return self._in_slot(
                        job_stop,
                        lambda: train_local(
                            self.arch,
                            params,
                            shard.images,
                            shard.labels,
                            self.cfg,
                            seed=seed,
                            round_=round,
                            stop=job_stop.is_set,
                        ),
                    )
                except TrainingStopped:
                    # Logged here, in the thread: a superseded round's task is already
                    # cancelled and never sees this exception.
                    why = (
                        "the node is shutting down"
                        if self._stop.is_set()
                        else "a newer round began"
                    )
                    log.info("training round %d stopped: %s", round, why)
                    raise

            result = await loop.run_in_executor(self._pool, job)
            trained_at = time.monotonic()
            delta = params_delta(result.params, params)
            payload = encode_update(
                delta,
                arch=self.arch,
                base_hash=model_hash(params),
                round_=round,
                num_samples=result.num_samples,
                encoding=self.encoding,
            ).encode()
        except asyncio.CancelledError:
            raise
        except TrainingStopped:
            return
        except Exception:
            log.exception("training round %d failed", round)
            return
        if self.current_round() != round:
            log.info("round %d closed while training; update dropped", round)
            return
        body = ModelUpdate(round, ledger_hash, result.num_samples, sha256(payload), len(payload))
        tx = sign_tx(self.key, self.genesis.chain_id, self.next_nonce(), self.genesis.fees, body)
        try:
            await self.submit(tx, payload)
        except Exception as e:
            log.warning("update for round %d not submitted: %s", round, e)
            return
        now = time.monotonic()
        self.outcomes.append(
            TrainOutcome(round, result.num_samples, result.mean_loss, trained_at - t0, now)
        )
        del self.outcomes[:-16]
        log.info(
            "round %d: trained on %d samples (loss %.4f) in %.1fs, update submitted",
            round,
            result.num_samples,
            result.mean_loss,
            time.monotonic() - t0,
        )

    async def close(self) -> None:
        """Stop the loops at their next batch, then wait for both threads.

        A running job gets a moment to end on its own (it sees the stop flag within one
        batch and logs that it stopped); only a job still busy after that (e.g. handing
        its update to the network) is cancelled.
        """
        self.closed = True
        self._stop.set()
        self._job_stop.set()
        if self._task is not None:
            if not self._task.done():
                await asyncio.wait({self._task}, timeout=_STOP_GRACE_S)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._pool.shutdown(wait=True, cancel_futures=True)
