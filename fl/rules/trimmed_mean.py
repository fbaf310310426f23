"""``trimmed_mean``: the coordinate-wise trimmed mean (Yin et al. 2018), Flower's
``FedTrimmedAvg``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

import numpy as np

from fl.fixedpoint import Inputs, round_div
from fl.rules.base import AggregationError, Rule, param

__all__ = ["TrimmedMean"]


@dataclass(frozen=True)
class TrimmedMean(Rule):
    """Coordinate-wise mean after cutting the floor(beta * n) lowest and highest values."""

    name: ClassVar[str] = "trimmed_mean"
    trim_beta: float = param(0.1, ge=0, lt=0.5, doc="fraction cut at each end")

    def combine(self, inp: Inputs, selected: list[int]) -> np.ndarray:
        n = len(selected)
        # The decimal the user wrote (0.3, not the double nearest it), so 0.3 * 10 trims 3.
        t = math.floor(Fraction(repr(self.trim_beta)) * n)
        keep = n - 2 * t
        if keep < 1:
            raise AggregationError(f"trim_beta={self.trim_beta} leaves no update of {n}")
        out = np.empty(inp.d, np.int64)
        for lo, hi in inp.blocks():
            part = np.sort(inp.block(lo, hi, selected), axis=0)[t : n - t]
            out[lo:hi] = round_div(part.sum(axis=0), keep)
        return out
