"""``bulyan``: Krum-select, then a coordinate-wise trimmed mean around the median
(El Mhamdi, Guerraoui and Rouault 2018, "The Hidden Vulnerability of Distributed Learning
in Byzantium").

Krum alone can be steered coordinate by coordinate: an update that is close to the
others in L2 may still carry one huge coordinate. Bulyan first picks theta = n - 2f
updates by applying Krum again and again to the ones not yet picked, then, per
coordinate, averages only the beta = theta - 2f picked values nearest their median, so
each coordinate of the result lies within the range of the honest values. It needs
n >= 4f + 3 updates.

Everything is exact: Krum scores are sums of integer squared distances
(``fl.fixedpoint``), ties go to the earlier update (transaction-hash order), and the
"nearest to the median" order is a stable sort of the value-sorted column, so equal
distances go to the lower value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fl.fixedpoint import Inputs, round_div
from fl.rules.base import AggregationError, Rule, param
from fl.rules.median import column_median

__all__ = ["Bulyan", "iterated_krum"]


def iterated_krum(dist: list[list[int]], f: int, count: int) -> list[int]:
    """The rows Krum picks ``count`` times in a row, each time among the rows not yet
    picked (scores over ``remaining - f - 2`` nearest remaining rows), in pick order.

    Re-scoring from scratch after every pick costs O(n^3 log n); instead each row keeps
    its score over a window, the prefix of its distance-sorted neighbours that holds its
    k nearest remaining rows. A pick removes one row and k shrinks by one, so each window
    either loses the picked row or drops its farthest remaining one: O(n^2) in all.
    """
    n = len(dist)
    order = [
        sorted((j for j in range(n) if j != i), key=lambda j: (dist[i][j], j)) for i in range(n)
    ]
    rank = [[0] * n for _ in range(n)]
    for i, row in enumerate(order):
        for p, j in enumerate(row):
            rank[i][j] = p
    k = max(n - f - 2, 0)
    score = [sum(dist[i][j] for j in order[i][:k]) for i in range(n)]
    cut = [k] * n  # order[i][:cut[i]] holds exactly k remaining rows
    picked: list[int] = []
    gone = [False] * n
    for _ in range(count):
        best = min((i for i in range(n) if not gone[i]), key=lambda i: (score[i], i))
        picked.append(best)
        gone[best] = True
        if k == 0:
            continue
        for i in range(n):
            if gone[i]:
                continue
            if rank[i][best] < cut[i]:
                score[i] -= dist[i][best]
            else:
                c = cut[i] - 1
                while gone[order[i][c]]:
                    c -= 1
                score[i] -= dist[i][order[i][c]]
                cut[i] = c
        k -= 1
    return picked


@dataclass(frozen=True)
class Bulyan(Rule):
    """Iterated Krum picks n - 2f updates; per coordinate, the mean of the picked values
    nearest their median."""

    name: ClassVar[str] = "bulyan"
    bulyan_f: int = param(0, ge=0, doc="updates that may be Byzantine; needs n >= 4f + 3")

    def select(self, inp: Inputs) -> list[int]:
        f, n = self.bulyan_f, inp.n
        if n < 4 * f + 3:
            raise AggregationError(f"bulyan with f={f} needs at least {4 * f + 3} updates, got {n}")
        return sorted(iterated_krum(inp.squared_distances(), f, n - 2 * f))

    def combine(self, inp: Inputs, selected: list[int]) -> np.ndarray:
        beta = len(selected) - 2 * self.bulyan_f
        out = np.empty(inp.d, np.int64)
        for lo, hi in inp.blocks():
            part = np.sort(inp.block(lo, hi, selected), axis=0)
            nearest = np.argsort(np.abs(part - column_median(part)), axis=0, kind="stable")
            kept = np.take_along_axis(part, nearest[:beta], axis=0)
            out[lo:hi] = round_div(kept.sum(axis=0), beta)
        return out
