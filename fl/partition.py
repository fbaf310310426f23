"""Deterministic splits of the training set across nodes.

Every node computes the same global assignment from ``(spec, seed, n)`` and keeps only its
own part, so no coordinator is needed and any observer can check who trained on what.
Randomness comes from numpy's PCG64 seeded by ``seed``: fixed by the seed, independent of
thread count or platform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PartitionError",
    "PartitionSpec",
    "parse_partition",
    "partition",
    "partition_indices",
    "split_validation",
]

_MAX_DIRICHLET_TRIES = 100


class PartitionError(ValueError):
    """A partition string or its parameters are invalid."""


@dataclass(frozen=True)
class PartitionSpec:
    """``kind`` is ``iid``, ``dirichlet`` (``alpha``) or ``shards`` (``shards`` per node)."""

    kind: str
    alpha: float = 0.0
    shards: int = 0

    def __str__(self) -> str:
        if self.kind == "dirichlet":
            return f"dirichlet:{self.alpha:g}"
        if self.kind == "shards":
            return f"shards:{self.shards}"
        return self.kind


def parse_partition(text: str) -> PartitionSpec:
    """Parse ``iid``, ``dirichlet:<alpha>`` (alpha > 0) or ``shards:<k>`` (k >= 1)."""
    kind, sep, arg = text.strip().partition(":")
    if kind == "iid" and not sep:
        return PartitionSpec("iid")
    if kind == "dirichlet" and sep:
        try:
            alpha = float(arg)
        except ValueError:
            raise PartitionError(f"dirichlet alpha must be a number, got {arg!r}") from None
        if not math.isfinite(alpha) or alpha <= 0:
            raise PartitionError(f"dirichlet alpha must be positive and finite, got {arg!r}")
        return PartitionSpec("dirichlet", alpha=alpha)
    if kind == "shards" and sep:
        if not arg.isdigit() or int(arg) < 1:
            raise PartitionError(f"shards:<k> needs a positive integer k, got {arg!r}")
        return PartitionSpec("shards", shards=int(arg))
    raise PartitionError(
        f"unknown partition {text!r}; expected iid, dirichlet:<alpha> or shards:<k>"
    )


def partition(spec: PartitionSpec | str, labels: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """Sample indices of every node; each list is sorted and the lists are disjoint."""
    if isinstance(spec, str):
        spec = parse_partition(spec)
    labels = np.asarray(labels)
    total = len(labels)
    if n < 1 or n > total:
        raise PartitionError(f"cannot split {total} samples across {n} nodes")
    rng = np.random.Generator(np.random.PCG64(seed))
    if spec.kind == "iid":
        parts = np.array_split(rng.permutation(total), n)
    elif spec.kind == "shards":
        num_shards = n * spec.shards
        if num_shards > total:
            raise PartitionError(f"{num_shards} shards exceed {total} samples")
        # Stable sort: ties keep index order, so the shards depend on the seed alone.
        by_label = np.argsort(labels, kind="stable")
        shards = np.array_split(by_label, num_shards)
        order = rng.permutation(num_shards)
        parts = [
            np.concatenate([shards[s] for s in order[i * spec.shards : (i + 1) * spec.shards]])
            for i in range(n)
        ]
    elif spec.kind == "dirichlet":
        parts = _dirichlet(labels, n, spec.alpha, rng)
    else:
        raise PartitionError(f"unknown partition kind {spec.kind!r}")
    return [np.sort(p).astype(np.int64) for p in parts]


def _dirichlet(
    labels: np.ndarray, n: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per class, split its samples across nodes by Dirichlet(alpha) proportions.

    Small alphas can leave a node empty; like the usual implementations we redraw (a
    bounded number of times) until every node holds at least one sample.
    """
    classes = np.unique(labels)
    for _ in range(_MAX_DIRICHLET_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(n)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            props = rng.dirichlet(np.full(n, alpha))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(np.int64)
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].append(chunk)
        out = [np.concatenate(p) for p in parts]
        if min(len(p) for p in out) > 0:
            return out
    raise PartitionError(f"dirichlet:{alpha:g} left a node empty in every draw; raise alpha")


def partition_indices(
    spec: PartitionSpec | str, labels: np.ndarray, n: int, index: int, seed: int
) -> np.ndarray:
    """The sample indices of node ``index`` (0-based) of ``n``."""
    if not 0 <= index < n:
        raise PartitionError(f"node index {index} outside [0, {n})")
    return partition(spec, labels, n, seed)[index]


def split_validation(
    indices: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of a node's samples for local validation, deterministically."""
    if not 0.0 <= fraction < 1.0:
        raise PartitionError(f"validation fraction must be in [0, 1), got {fraction}")
    rng = np.random.Generator(np.random.PCG64(seed))
    shuffled = rng.permutation(np.asarray(indices, dtype=np.int64))
    n_val = int(len(shuffled) * fraction)
    return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])
