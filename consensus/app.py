"""The application boundary every engine talks to, shaped like CometBFT's ABCI++.

The engine never parses a block: the application (the ledger) owns the block format and
hands the engine opaque bytes plus the hash that votes and commits refer to. Checking that
the bytes really hash to that id is part of ``process_proposal``, so a peer that pairs a
signed hash with junk bytes only gets its block rejected.

``AppConnector`` executes the application-facing effects of any engine synchronously and
turns the answers into events; the node's driver and the simulator both run it inline, on
the thread that drives the engine (the node keeps its slow work, training, elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from consensus.block import Block
from consensus.engine import (
    BlockCommitted,
    CommitBlock,
    Effect,
    Event,
    ProposalReady,
    ProposalVerdict,
    RequestProposal,
    RequestVerification,
)
from consensus.types import Commit, Validator

__all__ = [
    "AppConnector",
    "Application",
    "Block",
    "FinalizeResult",
    "PrepareProposalRequest",
]


@dataclass(frozen=True)
class PrepareProposalRequest:
    height: int
    round: int
    proposer: bytes
    # The certificate of height - 1 (None at the first height); the block must carry it.
    last_commit: Commit | None
    # Proposer's wall clock in milliseconds, supplied by the driver (engines have no clock).
    time_ms: int


@dataclass(frozen=True)
class FinalizeResult:
    app_hash: bytes
    # New powers keyed by public key; power 0 removes a validator. They take effect at
    # height H + 2 for a block finalized at H (see consensus.tendermint.valset).
    validator_updates: tuple[Validator, ...] = ()


class Application(Protocol):
    """What consensus needs from the state machine it orders blocks for."""

    def prepare_proposal(self, req: PrepareProposalRequest) -> Block:
        """Build the block this node proposes (the FL aggregation lives here)."""
        ...

    def process_proposal(self, height: int, block: Block) -> bool:
        """Accept or reject a proposed block; must be deterministic across honest nodes."""
        ...

    def finalize_block(self, height: int, block: Block, commit: Commit) -> FinalizeResult:
        """Execute a decided block; ``commit`` proves the decision."""
        ...

    def commit(self) -> None:
        """Make the finalized state durable before the engine moves to the next height."""
        ...


class AppConnector:
    """Runs app-facing effects against an Application and returns the resulting events.

    Effects that are not for the application (network, timers, evidence, checkpoints) are
    ignored here; the caller routes them.
    """

    def __init__(self, app: Application) -> None:
        self.app = app

    def execute(self, effect: Effect, now_ms: int) -> list[Event]:
        if isinstance(effect, RequestProposal):
            block = self.app.prepare_proposal(
                PrepareProposalRequest(
                    effect.height, effect.round, effect.proposer, effect.last_commit, now_ms
                )
            )
            return [ProposalReady(effect.height, effect.round, block)]
        if isinstance(effect, RequestVerification):
            ok = self.app.process_proposal(effect.height, effect.block)
            return [ProposalVerdict(effect.height, effect.block, ok)]
        if isinstance(effect, CommitBlock):
            result = self.app.finalize_block(effect.height, effect.block, effect.commit)
            self.app.commit()
            return [BlockCommitted(effect.height, result.app_hash, result.validator_updates)]
        return []
