"""What an engine module declares to be registered: ``ENGINE = EngineSpec(...)``.

The spec is the engine's whole registration: its genesis name, how to build it, and the
options it takes. ``consensus.registry`` reads it from each engine module, so genesis
validation, the node and the simulator all learn about an engine from this one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from consensus.engine import Engine, EngineConfig
from consensus.options import OptionSchema

__all__ = ["EngineSpec"]


@dataclass(frozen=True)
class EngineSpec:
    # The name genesis uses (``consensus_engine``); lower case, as genesis names are.
    name: str
    # Builds the engine; it checks ``config.options`` against ``options`` itself, so an
    # engine built directly (in a unit test) is held to the same schema.
    build: Callable[[EngineConfig], Engine]
    options: OptionSchema
