"""A deliberately broken engine for the simulator's own tests: every validator commits
the block it built itself, at every height, without asking anyone. Registered (only
inside a test) like any engine, it shows that the simulator takes engines by registry
name and that its checkers catch a fork whatever engine produced it."""

from __future__ import annotations

from consensus.engine import (
    BlockCommitted,
    CommitBlock,
    Effect,
    Engine,
    EngineConfig,
    Event,
    ProposalReady,
    RequestProposal,
    ScheduleTimeout,
    Start,
    TimeoutFired,
)
from consensus.options import OptionSchema
from consensus.spec import BasicSimAdapter, EngineSpec
from consensus.types import Commit

__all__ = ["ENGINE", "MODULE"]

MODULE = __name__
OPTIONS = OptionSchema()
TICK = 0.5


class SelfishEngine(Engine):
    def __init__(self, config: EngineConfig) -> None:
        OPTIONS.check(config.options)
        self._height = config.initial_height
        self.me = config.signer.address
        self.busy = False

    @property
    def height(self) -> int:
        return self._height

    def handle(self, event: Event) -> list[Effect]:
        if isinstance(event, Start | TimeoutFired) and not self.busy:
            self.busy = True
            return [RequestProposal(self._height, 0, self.me, None)]
        if isinstance(event, ProposalReady) and event.height == self._height:
            commit = Commit(event.height, 0, event.block.hash, ())
            return [CommitBlock(event.height, event.block, commit)]
        if isinstance(event, BlockCommitted) and event.height == self._height:
            self._height += 1
            self.busy = False
            return [ScheduleTimeout("tick", self._height, 0, TICK)]
        return []


ENGINE = EngineSpec("selfish", SelfishEngine, OPTIONS, BasicSimAdapter(sizes=(4,)))
