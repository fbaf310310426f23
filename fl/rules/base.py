"""The parameter schema, and the base class every aggregation rule derives from.

A rule is a frozen dataclass whose fields are its parameters, each declared once::

    trim_beta: float = param(0.1, ge=0, lt=0.5, doc="fraction cut at each end")

The annotation gives the type (``int`` or ``float``; ``| None`` for "unset", ``| str``
for named values listed in ``words``), ``param`` the default and bounds. Everything else
is derived from that one declaration: the checks (errors name the parameter), the
conversions from genesis values (ints, or decimal strings for floats) and from rule text,
the encodings back, and the listing for help. Genesis parsing and the node therefore never
spell a parameter out again.

Rules must be deterministic functions of the fixed-point inputs (``fl.fixedpoint``):
integers only, ties broken by input position, no dependence on thread count or BLAS.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from fl.fixedpoint import Inputs

__all__ = ["AggregationError", "ParamSpec", "Parameters", "Rule", "Value", "param"]

Value = int | float | str | None
Number = int | float


class AggregationError(ValueError):
    """The inputs cannot be aggregated under the rule (too few, duplicates, wrong base),
    or a rule or parameter is invalid; ``param`` then names the parameter."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def param(
    default: Value,
    *,
    ge: Number | None = None,
    gt: Number | None = None,
    le: Number | None = None,
    lt: Number | None = None,
    words: tuple[str, ...] = (),
    alias: str | None = None,
    doc: str = "",
) -> Any:
    """A parameter field: its default, bounds (``ge``/``gt``, ``le``/``lt``), the named
    values it also accepts (``words``), the short name rule text may use (``alias``)."""
    if (ge is not None and gt is not None) or (le is not None and lt is not None):
        raise TypeError("give at most one lower and one upper bound")
    lo = ge if gt is None else gt
    hi = le if lt is None else lt
    bounds = (lo, gt is not None, hi, lt is not None)
    meta = {"bounds": bounds, "words": words, "alias": alias, "doc": doc}
    return dataclasses.field(default=default, metadata=meta)


def _num(x: Number) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


@dataclass(frozen=True)
class ParamSpec:
    """One parameter as its owner declared it."""

    name: str
    kind: type[int] | type[float]
    optional: bool  # None ("unset") is a valid value
    default: Value
    lo: Number | None
    lo_open: bool
    hi: Number | None
    hi_open: bool
    words: tuple[str, ...]
    alias: str | None
    doc: str

    def describe(self) -> str:
        """What a valid value is, for errors and help: ``a number in [0, 0.5)``."""
        what = "an integer" if self.kind is int else "a number"
        if self.lo is not None and self.hi is not None:
            what += f" in {'(' if self.lo_open else '['}{_num(self.lo)}, "
            what += f"{_num(self.hi)}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            what += f" {'>' if self.lo_open else '>='} {_num(self.lo)}"
        elif self.hi is not None:
            what += f" {'<' if self.hi_open else '<='} {_num(self.hi)}"
        return " or ".join([*(repr(w) for w in self.words), what])

    def _bad(self, value: object) -> AggregationError:
        return AggregationError(f"{self.name} must be {self.describe()}, not {value!r}", self.name)

    def check(self, value: object) -> Value:
        """``value`` if valid (floats normalized to ``float``), else AggregationError."""
        if value is None and self.optional:
            return None
        if isinstance(value, str) and value in self.words:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._bad(value)
        if self.kind is int and not isinstance(value, int):
            raise self._bad(value)
        v: Number = value if self.kind is int else float(value)
        if not math.isfinite(v):
            raise self._bad(value)
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            raise self._bad(value)
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            raise self._bad(value)
        return v

    def parse(self, raw: int | str) -> Value:
        """A value from genesis (an int, or a string) or from rule text (a string)."""
        if isinstance(raw, str) and raw in self.words:
            return raw
        try:
            value: Number = self.kind(raw)
        except (TypeError, ValueError):
            raise AggregationError(
                f"{self.name}: bad value {raw!r}, expected {self.describe()}", self.name
            ) from None
        return self.check(value)

    def encode(self, value: Value) -> int | str:
        """The genesis form: ints stay ints, floats travel as their shortest decimal."""
        if value is None:
            raise ValueError(f"{self.name}: an unset value is not written to genesis")
        if isinstance(value, float):
            return repr(value)
        return value

    def text(self, value: Value) -> str:
        """The rule-text form (what ``parse`` reads back)."""
        return str(self.encode(value))


_SPECS: dict[type, tuple[ParamSpec, ...]] = {}  # derived once per class


def _derive_specs(cls: type) -> tuple[ParamSpec, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default
        if "bounds" not in f.metadata or default is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name} must be declared with param()")
        args = typing.get_args(hints[f.name]) or (hints[f.name],)
        kinds = [a for a in args if a in (int, float)]
        if len(kinds) != 1 or (str in args) != bool(f.metadata["words"]):
            raise TypeError(f"{cls.__name__}.{f.name}: annotate int or float (| None, | str)")
        lo, lo_open, hi, hi_open = f.metadata["bounds"]
        spec = ParamSpec(
            name=f.name,
            kind=kinds[0],
            optional=type(None) in args,
            default=default,
            lo=lo,
            lo_open=lo_open,
            hi=hi,
            hi_open=hi_open,
            words=f.metadata["words"],
            alias=f.metadata["alias"],
            doc=f.metadata["doc"],
        )
        spec.check(default)  # a default outside its own bounds is a bug in the class
        out.append(spec)
    return tuple(out)


@dataclass(frozen=True)
class Parameters:
    """A frozen set of declared parameters, checked on construction."""

    @classmethod
    def specs(cls) -> tuple[ParamSpec, ...]:
        """The parameters in declaration order (the order rule text gives them in)."""
        found = _SPECS.get(cls)
        if found is None:
            found = _SPECS[cls] = _derive_specs(cls)
        return found

    @classmethod
    def spec(cls, name: str) -> ParamSpec | None:
        return next((s for s in cls.specs() if s.name == name), None)

    @classmethod
    def of(cls, values: Mapping[str, Value]) -> Self:
        """An instance from checked names; ``__post_init__`` checks the values."""
        return cls(**values)

    def __post_init__(self) -> None:
        for s in self.specs():
            object.__setattr__(self, s.name, s.check(getattr(self, s.name)))

    def changed(self) -> list[tuple[ParamSpec, Value]]:
        """The parameters whose values differ from their defaults, in declaration order."""
        return [(s, v) for s in self.specs() if (v := getattr(self, s.name)) != s.default]


@dataclass(frozen=True)
class Rule(Parameters, ABC):
    """An aggregation rule (Flower's word: a strategy) with its parameter values.

    Subclasses set ``name`` (the genesis name, lowercase) and implement ``combine``; a
    rule that keeps only some updates overrides ``select``. Both see the same ``Inputs``
    (rows in transaction-hash order, norm bounding already applied).
    """

    name: ClassVar[str]

    @classmethod
    def summary(cls) -> str:
        """The first paragraph of the rule's docstring, on one line, for listings."""
        return " ".join((cls.__doc__ or cls.name).strip().split("\n\n")[0].split())

    def select(self, inp: Inputs) -> list[int]:
        """The rows (sorted, distinct) that are combined and count as included."""
        return list(range(inp.n))

    @abstractmethod
    def combine(self, inp: Inputs, selected: list[int]) -> np.ndarray:
        """The aggregated fixed-point delta (int64, flat) of the ``selected`` rows."""
