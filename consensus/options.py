"""An engine's genesis options, declared once: names, kinds, defaults and their checks.

Genesis carries engine options as an opaque map (``consensus_params``); the engine named
there declares which options it takes in an ``OptionSchema``, and that one declaration
serves everyone who reads the map: genesis validation (through the registry) and the
engine constructor, which reads each value through its option. An unknown option is
refused rather than ignored, so a misspelt ``timeout_propse`` fails at genesis load
instead of silently running with the default. Every error names the option.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Option", "OptionError", "OptionSchema", "Seconds"]

DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


class OptionError(ValueError):
    """An engine option is unknown or has a bad value; ``option`` names it."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option}: {problem}")
        self.option = option


class Option(Protocol):
    """One option: its name, the value used when genesis leaves it out, and its check."""

    @property
    def name(self) -> str: ...

    @property
    def default(self) -> object: ...

    def parse(self, value: object) -> object:
        """The checked value, or OptionError naming this option."""
        ...


@dataclass(frozen=True)
class Seconds:
    """A duration in seconds. Genesis parameters are integers or strings, so a genesis
    file writes whole seconds as an integer and a fraction as a decimal string ("0.5");
    code (tests, the simulator) passes numbers."""

    name: str
    default: float
    positive: bool = False  # refuse 0 too (e.g. a heartbeat period)

    def parse(self, value: object) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float | str)
            or (isinstance(value, str) and not DECIMAL.fullmatch(value))
        ):
            raise OptionError(self.name, f"must be a number of seconds, not {value!r}")
        seconds = float(value)
        if not seconds >= 0 or (self.positive and seconds == 0) or seconds == float("inf"):
            sign = "positive" if self.positive else "non-negative"
            raise OptionError(self.name, f"must be a {sign} number of seconds, not {value!r}")
        return seconds

    def read(self, values: Mapping[str, object]) -> float:
        """This option's checked value in ``values``, or the default when it is absent."""
        return self.parse(values[self.name]) if self.name in values else self.default


class OptionSchema:
    """The options one engine takes (see the module docstring)."""

    def __init__(self, *options: Option) -> None:
        self._options = {o.name: o for o in options}
        if len(self._options) != len(options):
            raise ValueError("option names must be distinct")

    def __iter__(self) -> Iterator[Option]:
        return iter(self._options.values())

    def names(self) -> list[str]:
        return sorted(self._options)

    def check(self, values: Mapping[str, object]) -> None:
        """Raise OptionError for the first unknown option or bad value (by name)."""
        for name in sorted(values):
            opt = self._options.get(name)
            if opt is None:
                known = ", ".join(self.names()) or "none"
                raise OptionError(name, f"unknown option; known: {known}")
            opt.parse(values[name])
