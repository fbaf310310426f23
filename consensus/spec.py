"""What an engine module declares to be registered: ``ENGINE = EngineSpec(...)``.

The spec is the engine's whole registration: its genesis name, how to build it, the
options it takes, and the small adapter the deterministic simulator drives it with.
``consensus.registry`` reads it from each engine module, so genesis validation, the
node and the simulator all learn about an engine from this one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from consensus.block import Block
from consensus.engine import Engine, EngineConfig, Screen, ScreenContext
from consensus.options import OptionSchema
from node.core.crypto import PrivateKey

__all__ = [
    "BasicSimAdapter",
    "BlockMaker",
    "EngineSpec",
    "MessageScreen",
    "SimAdapter",
    "accept_all",
]

# (height, round, proposer address) -> a block the (simulated) application builds.
BlockMaker = Callable[[int, int, bytes], Block]


class SimAdapter(Protocol):
    """What ``consensus.sim`` needs from an engine beyond the Engine interface.

    The simulator knows nothing of an engine's messages: it runs engines through events
    and effects, delivers their bytes, and checks what gets committed. Only these few
    things are engine-specific. An engine must also catch up by itself: the simulator has
    no block sync, so a node that restarts or rejoins after a partition relies on the
    engine's own messages (Tendermint: status and decision replies) to reach the others.
    """

    @property
    def options(self) -> Mapping[str, object]:
        """Engine options for simulated runs (short timeouts: simulated seconds are
        cheap but not free)."""
        ...

    @property
    def sizes(self) -> tuple[int, ...]:
        """The validator counts the standard seed sweeps run (``scripts/sim_consensus.py``
        and the tests): an engine for one validator says (1,)."""
        ...

    def twin(self, data: bytes, key: PrivateKey, new_block: BlockMaker) -> bytes | None:
        """For an equivocating Byzantine validator: a message that conflicts with the
        engine message ``data`` it just sent, signed with ``key`` (e.g. a vote for
        another block, a proposal of a block from ``new_block``), or None when ``data``
        has no conflicting twin."""
        ...


@dataclass(frozen=True)
class BasicSimAdapter:
    """A SimAdapter for an engine whose messages have no conflicting twins (or that sends
    none, like a single-validator engine): just its options and sizes."""

    sizes: tuple[int, ...]
    options: Mapping[str, object] = field(default_factory=dict)

    def twin(self, data: bytes, key: PrivateKey, new_block: BlockMaker) -> bytes | None:
        return None


MessageScreen = Callable[[bytes, ScreenContext], Screen]


def accept_all(data: bytes, ctx: ScreenContext) -> Screen:
    """The screen of an engine that sends no network messages (or checks them only
    itself): everything within the transport's size bound is forwarded."""
    return Screen.ACCEPT


@dataclass(frozen=True)
class EngineSpec:
    # The name genesis uses (``consensus_engine``); lower case, as genesis names are.
    name: str
    # Builds the engine; it checks ``config.options`` against ``options`` itself, so an
    # engine built directly (in a unit test) is held to the same schema.
    build: Callable[[EngineConfig], Engine]
    options: OptionSchema
    sim: SimAdapter
    # Checks a message from the network before it is forwarded (the node's gossip
    # validator): decode, signer and signature, so junk is not relayed and its sender is
    # scored down. Pure: it may consult only the context, never an engine's state.
    screen: MessageScreen = accept_all
