"""``fedavg``: the sample-weighted mean (McMahan et al. 2017), Flower's ``FedAvg``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fl.fixedpoint import Inputs, round_div
from fl.rules.base import AggregationError, Rule

__all__ = ["FedAvg"]


@dataclass(frozen=True)
class FedAvg(Rule):
    """Sample-weighted mean of the updates (each weight is min(samples, cap))."""

    name: ClassVar[str] = "fedavg"

    def combine(self, inp: Inputs, selected: list[int]) -> np.ndarray:
        w = np.array([inp.weights[i] for i in selected], np.int64)
        total = int(w.sum())
        if total == 0:
            raise AggregationError("all selected updates have zero weight")
        out = np.empty(inp.d, np.int64)
        for lo, hi in inp.blocks():
            q = inp.block(lo, hi, selected)
            out[lo:hi] = round_div(w @ q, total)  # integer matmul: exact, no BLAS
        return out
