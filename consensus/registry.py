"""Engines by name, so genesis picks one and node code never imports a concrete engine.

Concrete engines are imported lazily from a dotted path: the node depends only on this
module, ``consensus.engine`` and ``consensus.app``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from consensus.engine import Engine
from consensus.privval import Signer
from consensus.types import ValidatorSet
from node.core.crypto import verify

__all__ = ["ENGINES", "EngineConfig", "UnknownEngineError", "create_engine", "engine_names"]

Verifier = Callable[[bytes, bytes, bytes], bool]


@dataclass(frozen=True)
class EngineConfig:
    """Everything an engine needs; ``options`` holds engine-specific settings from genesis."""

    chain_id: str
    signer: Signer
    # The validator set of ``initial_height`` (the genesis set when starting fresh).
    validators: ValidatorSet
    initial_height: int = 1
    # The latest Checkpoint.data the engine emitted, when restarting.
    recovery: bytes | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    # (public_key, signature, message) -> bool. Injected so a simulator running many
    # nodes in one process can share a memo; defaults to node.core.crypto.verify.
    verifier: Verifier = verify


class UnknownEngineError(ValueError):
    """Genesis names an engine that is not registered."""


ENGINES: dict[str, str] = {
    "tendermint": "consensus.tendermint.engine:TendermintEngine",
    "solo": "consensus.solo:SoloEngine",
}


def engine_names() -> list[str]:
    return sorted(ENGINES)


def create_engine(name: str, config: EngineConfig) -> Engine:
    try:
        target = ENGINES[name]
    except KeyError:
        raise UnknownEngineError(
            f"unknown consensus engine {name!r}; known: {', '.join(engine_names())}"
        ) from None
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    engine = cls(config)
    if not isinstance(engine, Engine):
        raise TypeError(f"{target} does not implement consensus.engine.Engine")
    return engine
