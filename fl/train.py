"""Local training and evaluation on uint8 MNIST tensors.

Speed matters (a node trains every round, and simulations train many nodes per round on a
few cores), so the loop is minimal: indices are shuffled once per epoch, each batch is
gathered from the uint8 tensor and normalized in place, and no DataLoader or per-sample
Python runs. Torch threads are set per call (default 1) so many node workers can share a
machine without oversubscribing it: on a busy host a second intra-op thread per process
only contends with the other processes' threads, and the whole gets slower, not faster.

SGD is a few lines of tensor ops here rather than ``torch.optim.SGD``: constructing any
``torch.optim`` optimizer imports ``torch._dynamo`` (and sympy with it), which would add a
sizeable share of a node's memory budget to every process. The update is the same
sequence of in-place ops as torch's single-tensor SGD, so results are bit-identical (a test
compares the two). Adam, not used by nodes by default, still comes from ``torch.optim``.

Both loops take an optional ``stop`` callable checked between batches: a node shutting
down while it trains must not wait for the rest of an epoch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fl.models import Params, build_model, get_params, set_params

__all__ = [
    "MNIST_MEAN",
    "MNIST_STD",
    "Evaluation",
    "MomentumSGD",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "TrainingStopped",
    "evaluate",
    "evaluate_metrics",
    "lr_at",
    "normalize",
    "params_delta",
    "resolve_device",
    "train_local",
    "training_seed",
]

# Evaluation batch: small batches stay in the CPU caches, so larger ones cost more CPU per
# image, not less.
EVAL_BATCH_SIZE = 128

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


class TrainError(ValueError):
    """A training configuration is invalid."""


class TrainingStopped(Exception):
    """The ``stop`` callable asked a training or evaluation loop to give up early."""


StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class TrainConfig:
    """Local training hyper-parameters; ``lr_schedule`` is applied across FL rounds.

    ``lr_schedule``: ``constant``, ``cosine`` (to 0 over ``total_rounds``) or
    ``exp:<gamma>`` (``lr * gamma**round``).
    """

    epochs: int = 1
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    total_rounds: int = 1
    threads: int = 1
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.threads < 1:
            raise TrainError("epochs, batch_size and threads must be >= 1")
        if self.optimizer not in ("sgd", "adam"):
            raise TrainError(f"optimizer must be sgd or adam, got {self.optimizer!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise TrainError(f"lr must be positive, got {self.lr}")
        lr_at(self, 0)  # validates the schedule string


@dataclass(frozen=True)
class TrainResult:
    params: Params
    num_samples: int
    steps: int
    mean_loss: float


@dataclass(frozen=True)
class Evaluation:
    """Top-1 accuracy in [0, 1] and mean cross-entropy, from one pass over a test set."""

    accuracy: float
    loss: float


def lr_at(cfg: TrainConfig, round_: int) -> float:
    """The learning rate for FL round ``round_`` under ``cfg.lr_schedule``."""
    kind, _, arg = cfg.lr_schedule.partition(":")
    if kind == "constant" and not arg:
        return cfg.lr
    if kind == "cosine" and not arg:
        frac = min(round_, cfg.total_rounds) / max(cfg.total_rounds, 1)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
    if kind == "exp":
        try:
            gamma = float(arg)
        except ValueError:
            gamma = -1.0
        if 0.0 < gamma <= 1.0:
            return cfg.lr * gamma**round_
    raise TrainError(
        f"lr_schedule must be constant, cosine or exp:<gamma>, got {cfg.lr_schedule!r}"
    )


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise TrainError(f"unknown device {name!r}") from e


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 28, 28]`` -> normalized float32 ``[B, 1, 28, 28]``."""
    x = images.unsqueeze(1).to(torch.float32)
    return x.mul_(1.0 / (255.0 * MNIST_STD)).sub_(MNIST_MEAN / MNIST_STD)


class MomentumSGD:
    """``torch.optim.SGD`` (no dampening, no Nesterov) without importing ``torch._dynamo``.

    Mirrors torch's single-tensor update op for op: ``d = g + wd * p``; ``buf = d`` on the
    first step, else ``buf = momentum * buf + d``; ``p -= lr * buf``.
    """

    def __init__(
        self, params: list[nn.Parameter], lr: float, momentum: float, weight_decay: float
    ) -> None:
        self.params = params
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self._bufs: list[torch.Tensor | None] = [None] * len(params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            d = p.grad if self.weight_decay == 0 else p.grad.add(p, alpha=self.weight_decay)
            if self.momentum != 0:
                buf = self._bufs[i]
                if buf is None:
                    buf = self._bufs[i] = torch.clone(d).detach()
                else:
                    buf.mul_(self.momentum).add_(d)
                d = buf
            p.add_(d, alpha=-self.lr)


def _to_channels_last(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` with its 4-d weights in channels-last (NHWC) layout.

    With NHWC weights oneDNN runs the convolutions on NHWC activations (a 1-channel image
    batch already is one) and picks a much faster kernel than for the default NCHW layout,
    for training and evaluation alike; its per-batch temporaries are smaller too, which
    lowers a node's peak memory. Only the rounding of the sums changes; parameters keep
    their names and shapes, and ``get_params`` still returns C-ordered arrays.
    """
    # ``memory_format`` is a documented keyword of ``Module.to`` missing from its stubs.
    return model.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def _optimizer(
    cfg: TrainConfig, model: nn.Module, lr: float
) -> MomentumSGD | torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    return MomentumSGD(list(model.parameters()), lr, cfg.momentum, cfg.weight_decay)


def training_seed(seed: int, round_: int, client: int) -> int:
    """The seed of trainer number ``client``'s local training in ``round_``.

    A function of the federation's seed (the genesis ``init_seed`` on a chain), the round
    and the trainer's index only, so a node and the in-process simulator train client ``i``
    identically: a testnet reproduces ``fl.simulation``'s models bit for bit, and a
    benchmark comparing the two measures the system, not a luckier batch order.
    """
    digest = hashlib.sha256(f"fedchain/train/{seed}/{round_}/{client}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def train_local(
    arch: str,
    params: Params,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    *,
    seed: int,
    round_: int = 0,
    model: nn.Module | None = None,
    stop: StopCheck | None = None,
) -> TrainResult:
    """Train ``cfg.epochs`` epochs from ``params`` on ``(images, labels)``; return new params.

    ``images``/``labels`` are the node's own samples (uint8 / int64). ``seed`` fixes the
    batch order. Pass a reusable ``model`` of the same architecture to skip construction.
    Raises :class:`TrainingStopped` as soon as ``stop()`` returns true (between batches).
    """
    if len(images) != len(labels) or len(images) == 0:
        raise TrainError(f"need matching non-empty data, got {len(images)}/{len(labels)}")
    device = resolve_device(cfg.device)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        if model is None:
            model = build_model(arch, params)
        else:
            set_params(model, params)
        _to_channels_last(model, device).train()
        opt = _optimizer(cfg, model, lr_at(cfg, round_))
        gen = torch.Generator().manual_seed(seed)
        x_all, y_all = images.to(device), labels.to(device)
        n = len(images)
        steps, loss_sum = 0, torch.zeros((), device=device)
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=gen).to(device)
            for start in range(0, n, cfg.batch_size):
                if stop is not None and stop():
                    raise TrainingStopped(f"stopped after {steps} steps")
                idx = order[start : start + cfg.batch_size]
                loss = nn.functional.cross_entropy(model(normalize(x_all[idx])), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.detach()
                steps += 1
        new = get_params(model)
    finally:
        torch.set_num_threads(previous_threads)
    return TrainResult(new, n, steps, float(loss_sum.item()) / max(steps, 1))


def evaluate(
    arch: str,
    params: Params,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    threads: int | None = None,
    device: str = "auto",
    model: nn.Module | None = None,
) -> float:
    """Top-1 accuracy of ``params`` on ``(images, labels)``, in [0, 1]."""
    return evaluate_metrics(
        arch,
        params,
        images,
        labels,
        batch_size=batch_size,
        threads=threads,
        device=device,
        model=model,
    ).accuracy


def evaluate_metrics(
    arch: str,
    params: Params,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    threads: int | None = None,
    device: str = "auto",
    model: nn.Module | None = None,
    stop: StopCheck | None = None,
) -> Evaluation:
    """Accuracy and mean cross-entropy of ``params`` on ``(images, labels)`` in one pass.

    Raises :class:`TrainingStopped` as soon as ``stop()`` returns true (between batches).
    """
    dev = resolve_device(device)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        if model is None:
            model = build_model(arch, params)
        else:
            set_params(model, params)
        _to_channels_last(model, dev).eval()
        correct = 0
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                if stop is not None and stop():
                    raise TrainingStopped(f"evaluation stopped at image {start}")
                xb = normalize(images[start : start + batch_size].to(dev))
                yb = labels[start : start + batch_size].to(dev)
                logits = model(xb)
                loss_sum += nn.functional.cross_entropy(logits, yb, reduction="sum").double()
                correct += int((logits.argmax(1) == yb).sum())
    finally:
        torch.set_num_threads(previous_threads)
    n = max(len(images), 1)
    return Evaluation(correct / n, float(loss_sum.item()) / n)


def params_delta(new: Params, base: Params) -> Params:
    """``new - base`` per tensor (float32), the payload of an update."""
    return {k: (new[k] - base[k]).astype(np.float32) for k in base}
