"""The single-validator engine behind ``fedchain start --dev``.

With one validator there is nothing to agree on, so a height is: ask the application for a
block, sign one precommit for it (through the same double-sign guard, so a dev chain's
commits verify exactly like a BFT chain's), commit. A block is produced as soon as the
mempool reports transactions (TxsAvailable) or, when idle, once per heartbeat so the chain
and its FL rounds keep moving.
"""

from __future__ import annotations

from consensus.block import Block
from consensus.engine import (
    BlockCommitted,
    Checkpoint,
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
    TxsAvailable,
)
from consensus.options import OptionSchema, Seconds
from consensus.spec import BasicSimAdapter, EngineSpec
from consensus.types import Commit, CommitSig, VoteType
from node.core.codec import U64, CodecError, Record

__all__ = ["ENGINE", "OPTIONS", "SoloCheckpoint", "SoloEngine", "SoloSigningError"]

HEARTBEAT = "heartbeat"
# An idle chain still cuts a block this often, so FL rounds keep moving.
HEARTBEAT_PERIOD = Seconds(HEARTBEAT, 1.0, positive=True)
OPTIONS = OptionSchema(HEARTBEAT_PERIOD)


class SoloSigningError(RuntimeError):
    """The signer refused even a fresh round: its state file belongs to another chain."""


class SoloCheckpoint(Record):
    height: U64
    last_commit: Commit | None


class SoloEngine(Engine):
    def __init__(self, config: EngineConfig) -> None:
        vals = config.validators.validators
        if len(vals) != 1 or vals[0].address != config.signer.address:
            raise ValueError("the solo engine needs exactly one validator: this node's key")
        OPTIONS.check(config.options)
        self.chain_id = config.chain_id
        self.signer = config.signer
        self.heartbeat = HEARTBEAT_PERIOD.read(config.options)
        self._height = config.initial_height
        self.last_commit: Commit | None = None
        if config.recovery is not None:
            try:
                cp = SoloCheckpoint.decode(config.recovery)
            except CodecError as e:
                raise ValueError(f"bad solo checkpoint: {e}") from e
            self._height, self.last_commit = cp.height, cp.last_commit
        self.started = False
        self.busy = False  # a proposal or commit is in flight
        self.pending_txs = False
        self.epoch = 0  # invalidates heartbeats armed before the last block

    @property
    def height(self) -> int:
        return self._height

    def handle(self, event: Event) -> list[Effect]:
        out: list[Effect] = []
        if isinstance(event, Start) and not self.started:
            self.started = True
            self._arm(out)
        elif isinstance(event, TxsAvailable):
            self.pending_txs = True
            self._produce(out)
        elif isinstance(event, TimeoutFired):
            if event.kind == HEARTBEAT and event.round == self.epoch:
                self._produce(out)
        elif isinstance(event, ProposalReady):
            self._on_ready(event.height, event.block, out)
        elif isinstance(event, BlockCommitted) and event.height == self._height and self.busy:
            self._height += 1
            self.busy = False
            self.epoch += 1
            cp = SoloCheckpoint(self._height, self.last_commit)
            out.append(Checkpoint(event.height, cp.encode()))
            if self.pending_txs:
                self._produce(out)
            else:
                self._arm(out)
        return out

    def _arm(self, out: list[Effect]) -> None:
        out.append(ScheduleTimeout(HEARTBEAT, self._height, self.epoch, self.heartbeat))

    def _produce(self, out: list[Effect]) -> None:
        if not self.started or self.busy:
            return
        self.busy = True
        self.pending_txs = False
        out.append(RequestProposal(self._height, 0, self.signer.address, self.last_commit))

    def _on_ready(self, height: int, block: Block, out: list[Effect]) -> None:
        if height != self._height or not self.busy:
            return
        round = 0
        vote = self.signer.sign_vote(self.chain_id, height, round, VoteType.PRECOMMIT, block.hash)
        if vote is None:
            # We crashed after signing a different block at this height: signing it again
            # in the same round would be a double sign, so use the next unused round.
            round = (self.signer.last_round(height) or 0) + 1
            vote = self.signer.sign_vote(
                self.chain_id, height, round, VoteType.PRECOMMIT, block.hash
            )
            if vote is None:
                raise SoloSigningError(f"signer refused height {height} round {round}")
        commit = Commit(height, round, block.hash, (CommitSig(vote.validator, vote.signature),))
        self.last_commit = commit
        out.append(CommitBlock(height, block, commit))


# In the simulator: one validator, who has no one to equivocate to; the default heartbeat
# is already short in simulated time.
ENGINE = EngineSpec("solo", SoloEngine, OPTIONS, BasicSimAdapter(sizes=(1,)))
