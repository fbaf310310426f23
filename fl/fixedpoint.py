"""The integer fixed-point grid every aggregation rule computes on.

The aggregated model is consensus state: every validator must derive the same bytes from
the same inputs whatever the thread count, BLAS or CPU. Floating-point sums are not
associative and libraries reorder them freely (SIMD width, threads, pairwise summation),
so rules never sum floats; they work on the integers this module hands them:

1. Each delta coordinate (float32, |x| <= 2**7, checked at decode) is quantized to
   ``q = rint(x * 2**24)``, an exact IEEE operation, so |q| <= 2**31.
2. Sums, sorts and order statistics run on int64; all bounds are checked below:
   weights are capped at 2**22 and there are at most 256 updates, so weighted sums stay
   below 2**61. Divisions round half up with floor division (:func:`round_div`).
3. Norms and distances use a coarser copy ``q >> shift`` (|.| < 2**b, with b chosen
   from the tensor size so that squared sums fit in int64). The Gram matrix is computed
   with float64 matrix products on column blocks small enough that every partial sum is an
   integer below 2**53, hence exact whatever the summation order, then accumulated in
   int64. Rules combine Gram entries in Python integers.

Columns are processed in blocks of ``_CHUNK`` so the int64 working set stays bounded for
large models; every rule is column-separable or reduces over blocks exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "FRAC_BITS",
    "MAX_UPDATES",
    "MAX_WEIGHT",
    "SCALE_BITS",
    "Inputs",
    "coarse_bits",
    "quantize",
    "round_div",
]

SCALE_BITS = 24
MAX_UPDATES = 256
MAX_WEIGHT = 1 << 22
FRAC_BITS = 30  # fixed-point precision of clip factors
_CHUNK = 1 << 16  # columns per pass; bounds the int64 working set to n * 512 KiB

assert MAX_UPDATES * MAX_WEIGHT * (1 << 31) <= 1 << 61


def quantize(block: np.ndarray) -> np.ndarray:
    # Scaling a float32 by a power of two is exact (no overflow below 2**31), and so is
    # rint: the same integers as the float64 route, at half the memory traffic.
    return np.rint(block * np.float32(1 << SCALE_BITS)).astype(np.int64)


def coarse_bits(num_params: int) -> int:
    """b such that |x| < 2**b over num_params coordinates keeps every squared sum < 2**62."""
    return (61 - max(num_params - 1, 1).bit_length()) // 2


def round_div(num: np.ndarray, den: int) -> np.ndarray:
    """num / den rounded half up, exactly (den > 0)."""
    return (2 * num + den) // (2 * den)


class Inputs:
    """The sorted, stacked, quantization-ready inputs of one aggregation.

    ``deltas`` is float32 ``[n, d]`` in transaction-hash order (row ``i`` is the i-th
    update everywhere: selections, weights, clip factors); ``weights`` are the capped
    sample counts. Norm bounding sets ``factors`` (per-row clip factors,
    ``2**FRAC_BITS`` = 1.0) before any rule reads a block.
    """

    def __init__(self, deltas: np.ndarray, weights: list[int]) -> None:
        self.deltas = deltas
        self.n, self.d = deltas.shape
        self.weights = weights
        self.factors: np.ndarray | None = None
        peak = int(np.rint(float(np.max(np.abs(deltas))) * float(1 << SCALE_BITS)))
        self.shift = max(0, peak.bit_length() - coarse_bits(self.d))

    def block(self, lo: int, hi: int, rows: Sequence[int] | None = None) -> np.ndarray:
        """Fixed-point columns ``lo:hi`` of ``rows`` (sorted, distinct; default all), clip
        factors applied."""
        if rows is None or len(rows) == self.n:
            deltas, factors = self.deltas[:, lo:hi], self.factors
        else:
            index = np.asarray(rows, np.int64)
            deltas = self.deltas[index, lo:hi]
            factors = None if self.factors is None else self.factors[index]
        q = quantize(deltas)
        if factors is not None:
            q = (q * factors[:, None] + (1 << (FRAC_BITS - 1))) >> FRAC_BITS
        return q

    def blocks(self) -> list[tuple[int, int]]:
        return [(lo, min(lo + _CHUNK, self.d)) for lo in range(0, self.d, _CHUNK)]

    def squared_norms(self) -> list[int]:
        total = np.zeros(self.n, np.int64)
        for lo, hi in self.blocks():
            c = self.block(lo, hi) >> self.shift
            total += (c * c).sum(axis=1)
        return [int(v) for v in total]

    def gram(self) -> list[list[int]]:
        b = coarse_bits(self.d)
        sub = max(1, 1 << max(0, 53 - 2 * b))
        total = np.zeros((self.n, self.n), np.int64)
        for lo, hi in self.blocks():
            c = (self.block(lo, hi) >> self.shift).astype(np.float64)
            for s in range(0, c.shape[1], sub):
                part = c[:, s : s + sub]
                total += (part @ part.T).astype(np.int64)
        return [[int(v) for v in row] for row in total]

    def squared_distances(self) -> list[list[int]]:
        """Pairwise squared L2 distances on the coarse grid, as exact Python integers."""
        g = self.gram()
        return [[g[i][i] + g[j][j] - 2 * g[i][j] for j in range(self.n)] for i in range(self.n)]
