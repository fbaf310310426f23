"""Aggregation rules by name: the ``Rule`` subclasses that define a ``name``, found in the
modules of this package.

Discovery imports every module of ``fl.rules`` once, on first use, and collects the rule
classes each defines (a class a module imports from a sibling, as ``multi_krum`` imports
``Krum``, counts only where it is defined). Adding a rule is adding its module: no list
to edit, and no import-order effects, since nothing registers itself.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from functools import cache

from fl.rules.base import AggregationError, Rule

__all__ = ["rule_class", "rule_names"]


@cache
def _rules() -> dict[str, type[Rule]]:
    import fl.rules

    found: dict[str, type[Rule]] = {}
    for info in pkgutil.iter_modules(fl.rules.__path__):
        module = importlib.import_module(f"fl.rules.{info.name}")
        for obj in vars(module).values():
            if not (
                inspect.isclass(obj)
                and issubclass(obj, Rule)
                and obj.__module__ == module.__name__
                and "name" in vars(obj)
            ):
                continue
            if "__dataclass_fields__" not in vars(obj) or inspect.isabstract(obj):
                raise TypeError(f"{obj.__qualname__}: a rule is a concrete @dataclass(frozen=True)")
            if obj.name in found:
                raise TypeError(f"rule name {obj.name!r} is defined twice")
            found[obj.name] = obj
    return dict(sorted(found.items()))


def rule_names() -> list[str]:
    """Every registered rule name, sorted (for help texts and errors)."""
    return list(_rules())


def rule_class(name: str) -> type[Rule]:
    try:
        return _rules()[name]
    except KeyError:
        known = ", ".join(rule_names())
        raise AggregationError(f"unknown rule {name!r}; known: {known}") from None
