"""The node's trainer: trains on its MNIST shard off the event loop and submits updates.

When a block commits a new global model, ``on_model`` starts one training job for that
round in a single worker thread (torch releases the GIL inside its kernels, and
``torch.set_num_threads`` keeps it to ``threads`` cores, one by default, so consensus timers
on the loop stay on time). The result is encoded as a delta from the global model,
wrapped in a signed ``model_update`` tx and handed to ``submit``, which admits it to the
mempool and gossips it with its payload. A job for a round that is already over when it
finishes is dropped rather than published. A second thread evaluates each new global
model on a slice of the test set for ``/status`` and ``/fl/history``.

The shard is this node's part of ``partition(genesis.fl.partition, labels, #trainers,
init_seed)``, indexed by the node's position in the genesis trainer list, so the nodes of
one network split the data disjointly without talking about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from fl.data import load_mnist
from fl.models import Params, model_hash
from fl.partition import partition
from fl.train import TrainConfig, evaluate, params_delta, train_local
from fl.update import encode_update
from node.codec import sha256
from node.crypto import PrivateKey
from node.ledger.genesis import Genesis
from node.ledger.tx import ModelUpdate, Tx, sign_tx

__all__ = ["FLWorker", "Shard", "TrainOutcome", "load_shard"]

log = logging.getLogger(__name__)

# Activations of a 2,000-image evaluation batch took a node's peak RSS from ~500 MB to
# ~820 MB; 250 images cost the same time per image.
EVAL_BATCH = 250


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
    genesis: Genesis,
    address: bytes,
    data_dir: str | None,
    *,
    max_samples: int | None = None,
    eval_samples: int = 10_000,
) -> Shard | None:
    """This trainer's training shard and an evaluation slice; None if not a trainer."""
    if address not in genesis.trainers:
        return None
    mnist = load_mnist(data_dir or None, download=data_dir in (None, ""))
    index = genesis.trainers.index(address)
    parts = partition(
        genesis.fl.partition,
        mnist.train_labels.numpy(),
        len(genesis.trainers),
        genesis.fl.init_seed,
    )
    idx = torch.from_numpy(parts[index])
    if max_samples is not None:
        idx = idx[:max_samples]
    n_eval = min(eval_samples, len(mnist.test_labels))
    return Shard(
        mnist.train_images[idx],
        mnist.train_labels[idx],
        mnist.test_images[:n_eval],
        mnist.test_labels[:n_eval],
    )


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
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fl-train")
        # Evaluation has its own thread: queued behind a training job, the accuracy of a
        # model would often arrive only after the next model had replaced it.
        self._eval_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fl-eval")
        self._task: asyncio.Task[None] | None = None
        self._trained_rounds: set[int] = set()
        self.outcomes: list[TrainOutcome] = []
        self.closed = False

    def on_model(self, round: int, ledger_hash: bytes, params: Params) -> None:
        """A global model for ``round`` is available: train on it (once per round)."""
        if self.closed or self.shard is None or round in self._trained_rounds:
            return
        if self._task is not None and not self._task.done():
            self._task.cancel()  # an older round's job: its result would be stale
        self._trained_rounds.add(round)
        self._task = asyncio.get_running_loop().create_task(
            self._train(round, ledger_hash, params), name=f"fl-train-{round}"
        )

    async def evaluate(self, params: Params) -> float | None:
        if self.shard is None or self.closed:
            return None
        shard = self.shard
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._eval_pool,
            lambda: evaluate(
                self.arch,
                params,
                shard.test_images,
                shard.test_labels,
                batch_size=EVAL_BATCH,
                threads=self.cfg.threads,
            ),
        )

    async def _train(self, round: int, ledger_hash: bytes, params: Params) -> None:
        shard = self.shard
        assert shard is not None
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        seed = int.from_bytes(sha256(self.key.address + round.to_bytes(8, "big"))[:8], "big")
        try:
            result = await loop.run_in_executor(
                self._pool,
                lambda: train_local(
                    self.arch, params, shard.images, shard.labels, self.cfg, seed=seed, round_=round
                ),
            )
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
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._eval_pool.shutdown(wait=True, cancel_futures=True)
