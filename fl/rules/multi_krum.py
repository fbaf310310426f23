"""``multi_krum``: the mean of the m best Krum scores (Blanchard et al. 2017); Biscotti's
defence against poisoners in peer-to-peer FL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fl.rules.base import param
from fl.rules.krum import Krum

__all__ = ["MultiKrum"]


@dataclass(frozen=True)
class MultiKrum(Krum):
    """Sample-weighted mean of the m updates with the best Krum scores."""

    name: ClassVar[str] = "multi_krum"
    multi_krum_m: int | None = param(None, ge=1, doc="updates averaged (unset: n - f)")

    def keep(self, n: int) -> int:
        return self.multi_krum_m if self.multi_krum_m is not None else n - self.krum_f
