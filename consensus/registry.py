"""Engines by name, so genesis picks one and node code never imports a concrete engine.

This is the one way in. An engine lives in its own module (or package) that declares
``ENGINE = consensus.spec.EngineSpec(name, build, options, sim)``, and its module path is
listed in ``ENGINE_MODULES``; everything else (genesis validation, the node, the
simulator and its scripts) looks engines up here by name. Engine modules are imported on
first use, so the node depends only on this module, ``consensus.engine`` and
``consensus.app``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache

from consensus.engine import Engine, EngineConfig, Verifier
from consensus.options import OptionError
from consensus.spec import EngineSpec

__all__ = [
    "ENGINE_MODULES",
    "EngineConfig",
    "OptionError",
    "UnknownEngineError",
    "Verifier",
    "check_options",
    "create_engine",
    "engine_names",
    "engine_spec",
]

# One module (or package) per engine, each with a module-level ``ENGINE: EngineSpec``.
ENGINE_MODULES: tuple[str, ...] = (
    "consensus.solo",
    "consensus.tendermint",
)


class UnknownEngineError(ValueError):
    """Genesis names an engine that is not registered."""


@cache
def _specs() -> dict[str, EngineSpec]:
    specs: dict[str, EngineSpec] = {}
    for path in ENGINE_MODULES:
        spec = getattr(importlib.import_module(path), "ENGINE", None)
        if not isinstance(spec, EngineSpec):
            raise TypeError(f"{path} declares no ENGINE = EngineSpec(...)")
        if spec.name in specs:
            raise TypeError(f"{path}: engine name {spec.name!r} is already registered")
        specs[spec.name] = spec
    return specs


def engine_names() -> list[str]:
    return sorted(_specs())


def engine_spec(name: str) -> EngineSpec:
    try:
        return _specs()[name]
    except KeyError:
        raise UnknownEngineError(
            f"unknown consensus engine {name!r}; known: {', '.join(engine_names())}"
        ) from None


def check_options(name: str, options: Mapping[str, object]) -> None:
    """Raise UnknownEngineError, or OptionError naming the first bad option."""
    engine_spec(name).options.check(options)


def create_engine(name: str, config: EngineConfig) -> Engine:
    spec = engine_spec(name)
    engine = spec.build(config)
    if not isinstance(engine, Engine):
        raise TypeError(f"engine {name!r} does not build a consensus.engine.Engine")
    return engine
