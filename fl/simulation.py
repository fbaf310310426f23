"""The FL round loop, in-process: what a node does per round, for many clients at once.

:func:`local_update` is one trainer's round (train from the global model, take the delta,
optionally privatize, encode), the in-process counterpart of the node's FL worker round.
:func:`run_federation` drives whole rounds for simulations and benchmarks: every client's
update goes through the same encode -> bytes -> decode -> aggregate path as on the chain,
so attacks that produce invalid bytes are rejected exactly where a validator would.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from fl import attacks
from fl.aggregate import AggregationConfig, aggregate, default_aggregation
from fl.data import Mnist
from fl.models import Params, build_model, init_params, model_hash
from fl.privacy import RDPAccountant
from fl.train import TrainConfig, evaluate, params_delta, train_local, training_seed
from fl.update import DecodedUpdate, ModelUpdate, UpdateError, clip_and_noise, decode_update
from fl.update import encode_update as _encode

__all__ = [
    "Client",
    "DPConfig",
    "FederationConfig",
    "RoundReport",
    "local_update",
    "run_federation",
]


@dataclass(frozen=True)
class DPConfig:
    """Clip each update to L2 norm ``clip`` and add N(0, (noise_multiplier*clip)^2)."""

    clip: float
    noise_multiplier: float
    delta: float = 1e-5  # the delta at which RoundReport.epsilon is stated


@dataclass(frozen=True)
class Client:
    """A simulated node: its sample indices and (for experiments) its behaviour."""

    indices: np.ndarray
    attack: str = "none"

    def __post_init__(self) -> None:
        if self.attack not in attacks.ATTACKS:
            raise ValueError(f"unknown attack {self.attack!r}; expected one of {attacks.ATTACKS}")


@dataclass(frozen=True)
class FederationConfig:
    arch: str = "cnn"
    seed: int = 0
    rounds: int = 10
    train: TrainConfig = field(default_factory=TrainConfig)
    # The genesis default (``fl.rules.config.DEFAULT_RULE``), so a default simulation and a
    # default testnet aggregate alike and produce the very same models.
    aggregation: AggregationConfig = field(default_factory=default_aggregation)
    encoding: str = "float32"
    topk: float | None = None
    dp: DPConfig | None = None
    attack_scale: float = 10.0
    eval_threads: int | None = None
    workers: int = 0  # 0: train clients in this process; n: in n worker processes
    eval_samples: int | None = None  # evaluate on the first n test images (None: all 10,000)


@dataclass(frozen=True)
class RoundReport:
    round: int
    accuracy: float
    elapsed_s: float
    train_s: float
    aggregate_s: float
    model_hash: bytes
    included: int
    rejected: int
    epsilon: float | None = None  # per-client DP guarantee so far (None without DP)


def local_update(
    arch: str,
    global_params: Params,
    images: torch.Tensor,
    labels: torch.Tensor,
    train: TrainConfig,
    *,
    seed: int,
    round_: int,
    encoding: str = "float32",
    topk: float | None = None,
    dp: DPConfig | None = None,
    rng: np.random.Generator | None = None,
    model: nn.Module | None = None,
    base_hash: bytes | None = None,
) -> tuple[ModelUpdate, Params]:
    """One trainer's round: train, delta, optional DP, encode. Returns (update, raw delta)."""
    result = train_local(
        arch, global_params, images, labels, train, seed=seed, round_=round_, model=model
    )
    delta = params_delta(result.params, global_params)
    if dp is not None:
        noise_rng = rng if rng is not None else np.random.default_rng(seed)
        delta = clip_and_noise(delta, dp.clip, dp.noise_multiplier, noise_rng)
    upd = _encode(
        delta,
        arch=arch,
        base_hash=base_hash if base_hash is not None else model_hash(global_params),
        round_=round_,
        num_samples=result.num_samples,
        encoding=encoding,
        topk=topk,
    )
    return upd, delta


# Per-process state of client training: every client's local data (set in-process, or
# inherited through fork by worker processes) and one reusable module per architecture.
_CLIENT_DATA: list[tuple[torch.Tensor, torch.Tensor]] = []
_MODELS: dict[str, nn.Module] = {}


def _init_worker(data: list[tuple[torch.Tensor, torch.Tensor]], threads: int) -> None:
    global _CLIENT_DATA
    _CLIENT_DATA = data
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class _Task:
    client: int
    attack: str
    round_: int
    params: Params
    base_hash: bytes
    stale: Params | None
    cfg: FederationConfig


def _client_round(task: _Task) -> tuple[bytes, Params | None]:
    """One client's round: the bytes it publishes, plus its honest delta when a stale
    free-rider needs one to replay later."""
    cfg = task.cfg
    x, y = _CLIENT_DATA[task.client]
    seed = training_seed(cfg.seed, task.round_, task.client)
    model = _MODELS.get(cfg.arch)
    if model is None:
        model = _MODELS[cfg.arch] = build_model(cfg.arch, task.params)
    rng = np.random.default_rng(seed)
    upd, delta = local_update(
        cfg.arch,
        task.params,
        x,
        y,
        cfg.train,
        seed=seed,
        round_=task.round_,
        encoding=cfg.encoding,
        topk=cfg.topk,
        dp=cfg.dp,
        rng=rng,
        model=model,
        base_hash=task.base_hash,
    )
    blob = _attack_bytes(task.attack, upd, delta, task.stale, cfg, rng)
    return blob, (delta if task.attack == "stale" and task.stale is None else None)


def run_federation(
    data: Mnist,
    clients: Sequence[Client],
    cfg: FederationConfig,
    *,
    initial: Params | None = None,
    stop_accuracy: float | None = None,
    on_round: Callable[[RoundReport], None] | None = None,
) -> list[RoundReport]:
    """Run ``cfg.rounds`` FL rounds (or until ``stop_accuracy``); report each round.

    Attack names are those of :data:`fl.attacks.ATTACKS`; ``nan`` clients send NaN bytes.
    With ``cfg.workers > 0`` clients train in that many worker processes (forked, so the
    data is shared, not copied), each with ``cfg.train.threads`` torch threads; results do
    not depend on the worker count, since every client's randomness comes from
    ``(seed, round, client)``.
    """
    local = []
    for c in clients:
        idx = torch.from_numpy(c.indices)
        y = data.train_labels[idx]
        local.append(
            (data.train_images[idx], attacks.flip_labels(y) if c.attack == "label_flip" else y)
        )
    with contextlib.ExitStack() as stack:
        pool: concurrent.futures.ProcessPoolExecutor | None = None
        if cfg.workers > 0:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            pool = stack.enter_context(
                concurrent.futures.ProcessPoolExecutor(
                    cfg.workers,
                    mp_context=ctx,
                    initializer=_init_worker,
                    initargs=(local, cfg.train.threads),
                )
            )
        else:
            previous = list(_CLIENT_DATA)
            _CLIENT_DATA[:] = local
            stack.callback(_CLIENT_DATA.__setitem__, slice(None), previous)
        return _rounds(data, clients, cfg, pool, initial, stop_accuracy, on_round)


def _rounds(
    data: Mnist,
    clients: Sequence[Client],
    cfg: FederationConfig,
    pool: concurrent.futures.ProcessPoolExecutor | None,
    initial: Params | None,
    stop_accuracy: float | None,
    on_round: Callable[[RoundReport], None] | None,
) -> list[RoundReport]:
    params = initial if initial is not None else init_params(cfg.arch, cfg.seed)
    eval_model = build_model(cfg.arch, params)
    stale: dict[int, Params] = {}
    momentum: np.ndarray | None = None
    # Every client contributes every round: one full-participation Gaussian mechanism each.
    accountant = RDPAccountant() if cfg.dp is not None else None
    reports: list[RoundReport] = []
    start = time.perf_counter()
    base_hash = model_hash(params)
    for r in range(cfg.rounds):
        t0 = time.perf_counter()
        tasks = [
            _Task(i, c.attack, r, params, base_hash, stale.get(i), cfg)
            for i, c in enumerate(clients)
        ]
        outputs = list(pool.map(_client_round, tasks) if pool else map(_client_round, tasks))
        pairs: list[tuple[bytes, DecodedUpdate]] = []
        rejected = 0
        for i, (blob, honest) in enumerate(outputs):
            if honest is not None:
                stale[i] = honest
            try:
                pairs.append((hashlib.sha256(blob).digest(), decode_update(blob, cfg.arch)))
            except UpdateError:
                rejected += 1
        t1 = time.perf_counter()
        result = aggregate(params, pairs, cfg.aggregation, arch=cfg.arch, momentum=momentum)
        params, momentum, base_hash = result.params, result.momentum, result.model_hash
        epsilon = None
        if accountant is not None and cfg.dp is not None:
            accountant.step(cfg.dp.noise_multiplier)
            epsilon = accountant.epsilon(cfg.dp.delta)
        t2 = time.perf_counter()
        acc = evaluate(
            cfg.arch,
            params,
            data.test_images[: cfg.eval_samples],
            data.test_labels[: cfg.eval_samples],
            threads=cfg.eval_threads,
            device=cfg.train.device,
            model=eval_model,
        )
        report = RoundReport(
            r + 1,
            acc,
            time.perf_counter() - start,
            t1 - t0,
            t2 - t1,
            result.model_hash,
            len(result.included),
            rejected,
            epsilon,
        )
        reports.append(report)
        if on_round is not None:
            on_round(report)
        if stop_accuracy is not None and acc >= stop_accuracy:
            break
    return reports


def _attack_bytes(
    attack: str,
    upd: ModelUpdate,
    delta: Params,
    stale: Params | None,
    cfg: FederationConfig,
    rng: np.random.Generator,
) -> bytes:
    """The bytes a client with behaviour ``attack`` publishes instead of ``upd``."""
    if attack in ("none", "label_flip"):
        return upd.encode()
    if attack == "nan":
        return attacks.nan_update(upd)
    if attack == "sign_flip":
        bad = attacks.sign_flip(delta, cfg.attack_scale)
    elif attack == "gaussian":
        bad = attacks.gaussian_noise(delta, 0.1, rng)
    elif attack == "free_rider":
        bad = attacks.free_rider(delta)
    elif attack == "stale":
        bad = attacks.free_rider(delta, stale if stale is not None else delta)
    else:
        raise ValueError(f"unknown attack {attack!r}")
    return _encode(
        bad,
        arch=upd.arch,
        base_hash=upd.base_hash,
        round_=upd.round,
        num_samples=upd.num_samples,
        encoding=upd.encoding,
        topk=cfg.topk,
    ).encode()
