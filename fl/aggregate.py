"""Bit-exact robust aggregation of model updates: the entry points and the shared steps.

The aggregated model is consensus state: every validator must derive the same bytes from
the same inputs whatever the arrival order, thread count, BLAS or CPU. ``aggregate`` runs
the steps every rule shares, around the rule's own selection and combine steps:

1. Inputs are sorted by transaction hash (duplicates rejected), checked against the base
   model, weighted by their capped sample counts (a fixed cap, or the median claim) and
   put on the integer grid
   (``fl.fixedpoint``: why integers, and the bounds that keep int64 from overflowing).
2. Optional norm bounding scales each update to at most the median norm or a fixed bound.
3. The rule (``fl.rules``: one module per rule, found by name) selects rows and combines
   them into an int64 fixed-point delta.
4. Optional server momentum adds the decayed previous step.
5. The result ``base + agg * 2**-24`` is formed in float64 (exact inputs, one rounding)
   and rounded to float32: elementwise IEEE operations, identical everywhere; its hash is
   the new model's identity.

Rules and options are written as rule text (``parse_rule``; ``rules_help`` lists them) or
as genesis parameters (``AggregationConfig.from_genesis``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fl.fixedpoint import FRAC_BITS, MAX_UPDATES, MAX_WEIGHT, SCALE_BITS, Inputs
from fl.models import Params, architecture, model_hash
from fl.rules.base import AggregationError
from fl.rules.config import (
    DEFAULT_RULE,
    AggregationConfig,
    default_aggregation,
    parse_rule,
    rules_help,
)
from fl.rules.registry import rule_names
from fl.update import MAX_ABS_DELTA, DecodedUpdate

__all__ = [
    "DEFAULT_RULE",
    "MAX_UPDATES",
    "MAX_WEIGHT",
    "RULES",
    "SCALE_BITS",
    "AggregationConfig",
    "AggregationError",
    "AggregationResult",
    "aggregate",
    "default_aggregation",
    "parse_rule",
    "rules_help",
]

RULES = tuple(rule_names())
_MOMENTUM_BITS = 16  # fixed-point precision of the server momentum coefficient
_MOMENTUM_LIMIT = 1 << 40

assert (1 << (SCALE_BITS + 7)) == int(MAX_ABS_DELTA) << SCALE_BITS == 1 << 31


@dataclass(frozen=True)
class AggregationResult:
    """The new model, its hash, which updates contributed, and the server momentum state."""

    params: Params
    model_hash: bytes
    included: tuple[bytes, ...]
    clipped: tuple[bytes, ...]
    momentum: np.ndarray | None


def _weights(samples: list[int], cap: int | str) -> list[int]:
    """Each update's weight: its claimed sample count, capped at ``cap`` (``median``: the
    lower median of the claims, so one trainer's inflated claim counts like a typical one)
    and at ``MAX_WEIGHT``, which keeps the weighted sums inside int64."""
    limit = sorted(samples)[(len(samples) - 1) // 2] if cap == "median" else int(cap)
    limit = min(limit, MAX_WEIGHT)
    return [min(s, limit) for s in samples]


def _clip(inp: Inputs, nb: str | float) -> list[int]:
    """Set per-update clip factors; return the indices that were scaled down."""
    norms = [math.isqrt(s) for s in inp.squared_norms()]
    if nb == "median":
        bound = sorted(norms)[(inp.n - 1) // 2]
    else:
        assert isinstance(nb, float | int)
        bound = int(np.rint(float(nb) * float(1 << SCALE_BITS))) >> inp.shift
    one = 1 << FRAC_BITS
    factors = [min(one, (bound << FRAC_BITS) // v) if v > bound else one for v in norms]
    inp.factors = np.array(factors, np.int64)
    return [i for i, f in enumerate(factors) if f < one]


def _apply_rule(cfg: AggregationConfig, inp: Inputs) -> tuple[list[int], np.ndarray]:
    """The rule's selection and combined delta, checked against the rule contract (sorted,
    distinct, in-range rows; int64 of the model's size): a rule's bug must not fork."""
    selected = cfg.strategy.select(inp)
    if (
        not selected
        or selected != sorted(set(selected))
        or not 0 <= selected[0] <= selected[-1] < inp.n
    ):
        raise AggregationError(f"rule {cfg.rule!r} selected rows {selected}")
    agg = cfg.strategy.combine(inp, selected)
    if agg.dtype != np.int64 or agg.shape != (inp.d,):
        raise AggregationError(f"rule {cfg.rule!r} returned {agg.dtype}{list(agg.shape)}")
    return selected, agg


def aggregate(
    base: Params,
    updates: Sequence[tuple[bytes, DecodedUpdate]],
    cfg: AggregationConfig,
    *,
    arch: str,
    momentum: np.ndarray | None = None,
) -> AggregationResult:
    """Aggregate ``(tx_hash, update)`` pairs onto ``base``; deterministic to the bit.

    ``momentum`` is the previous server momentum state (int64 fixed-point, as returned in
    the last result) when ``cfg.server_momentum`` is set.
    """
    spec = architecture(arch)
    spec.check(base)
    if not updates:
        raise AggregationError("no updates to aggregate")
    if len(updates) > MAX_UPDATES:
        raise AggregationError(f"{len(updates)} updates exceed the limit {MAX_UPDATES}")
    ordered = sorted(updates, key=lambda p: p[0])
    hashes = [h for h, _ in ordered]
    if len(set(hashes)) != len(hashes) or any(len(h) != 32 for h in hashes):
        raise AggregationError("transaction hashes must be distinct 32-byte values")
    base_h = model_hash(base)
    rows = []
    for h, u in ordered:
        if u.arch != arch or u.base_hash != base_h:
            raise AggregationError(f"update {h.hex()[:16]} is not based on this model")
        spec.check(u.delta)
        rows.append(np.concatenate([u.delta[t.name].ravel() for t in spec.tensors]))
    deltas = np.stack(rows)
    if float(np.max(np.abs(deltas))) > MAX_ABS_DELTA:
        raise AggregationError(f"a delta coordinate exceeds +-{MAX_ABS_DELTA:g}")
    weights = _weights([u.num_samples for _, u in ordered], cfg.weight_cap)
    inp = Inputs(deltas, weights)

    clipped = _clip(inp, cfg.norm_bound) if cfg.norm_bound is not None else []
    selected, agg = _apply_rule(cfg, inp)

    new_momentum = None
    if cfg.server_momentum > 0:
        beta = round(cfg.server_momentum * (1 << _MOMENTUM_BITS))
        prev = np.zeros(inp.d, np.int64) if momentum is None else momentum
        if prev.dtype != np.int64 or prev.shape != (inp.d,):
            raise AggregationError(f"momentum state must be int64[{inp.d}]")
        # Clamp the stored state too, so even a corrupted one cannot overflow int64.
        prev = np.clip(prev, -_MOMENTUM_LIMIT, _MOMENTUM_LIMIT)
        decayed = (prev * beta + (1 << (_MOMENTUM_BITS - 1))) >> _MOMENTUM_BITS
        new_momentum = np.clip(decayed + agg, -_MOMENTUM_LIMIT, _MOMENTUM_LIMIT)
        agg = new_momentum

    step = agg.astype(np.float64) * (2.0**-SCALE_BITS)
    params: Params = {}
    offset = 0
    for t in spec.tensors:
        flat = base[t.name].ravel().astype(np.float64) + step[offset : offset + t.numel]
        params[t.name] = flat.astype(np.float32).reshape(t.shape)
        offset += t.numel
    if not all(np.isfinite(v).all() for v in params.values()):
        raise AggregationError("aggregated model is not finite")
    return AggregationResult(
        params=params,
        model_hash=model_hash(params),
        included=tuple(hashes[i] for i in selected),
        clipped=tuple(hashes[i] for i in clipped),
        momentum=new_momentum,
    )
