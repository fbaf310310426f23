"""``median``: the coordinate-wise median (Yin et al. 2018), Flower's ``FedMedian``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fl.fixedpoint import Inputs
from fl.rules.base import Rule

__all__ = ["Median", "column_median"]


def column_median(part: np.ndarray) -> np.ndarray:
    """The median of each column of a column-sorted int64 block; an even count takes the
    midpoint of the middle two, rounded half up."""
    n = part.shape[0]
    return (part[(n - 1) // 2] + part[n // 2] + 1) >> 1


@dataclass(frozen=True)
class Median(Rule):
    """Coordinate-wise median of the updates (unweighted)."""

    name: ClassVar[str] = "median"

    def combine(self, inp: Inputs, selected: list[int]) -> np.ndarray:
        out = np.empty(inp.d, np.int64)
        for lo, hi in inp.blocks():
            # A full sort (numpy's SIMD sort for int64) beats partition along axis 0.
            out[lo:hi] = column_median(np.sort(inp.block(lo, hi, selected), axis=0))
        return out
