"""``krum``: the update nearest its neighbours (Blanchard et al. 2017), Flower's ``Krum``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from fl.fixedpoint import Inputs
from fl.rules.base import AggregationError, param
from fl.rules.fedavg import FedAvg

__all__ = ["Krum", "krum_scores"]


def krum_scores(dist: list[list[int]], rows: Sequence[int], f: int) -> list[tuple[int, int]]:
    """``(score, row)`` for each of ``rows``, best first: the sum of squared distances to
    its ``len(rows) - f - 2`` nearest other rows. Ties go to the earlier row."""
    closest = max(len(rows) - f - 2, 0)
    scores = []
    for i in rows:
        near = sorted(dist[i][j] for j in rows if j != i)
        scores.append((sum(near[:closest]), i))
    return sorted(scores)


@dataclass(frozen=True)
class Krum(FedAvg):
    """The one update whose n - f - 2 nearest neighbours are nearest (sum of squares)."""

    name: ClassVar[str] = "krum"
    krum_f: int = param(0, ge=0, doc="updates that may be Byzantine; needs n >= 2f + 3")

    def keep(self, n: int) -> int:
        """How many of the best-scored updates are averaged."""
        return 1

    def select(self, inp: Inputs) -> list[int]:
        f, n = self.krum_f, inp.n
        if n < 2 * f + 3:
            raise AggregationError(
                f"{self.name} with f={f} needs at least {2 * f + 3} updates, got {n}"
            )
        scores = krum_scores(inp.squared_distances(), range(n), f)
        return sorted(i for _, i in scores[: min(self.keep(n), n)])
