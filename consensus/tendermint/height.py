"""What the Tendermint engine knows about the one height it is deciding.

Everything Algorithm 1 keeps for a height (round and step, lock and valid value, the
proposals and votes of every round, which rules already fired) lives in one
``HeightState``. The engine replaces it whole when it moves to the next height, so
nothing of a decided height can leak into the next one, and adding a per-height field
cannot be forgotten in a hand-written reset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from consensus.block import Block
from consensus.tendermint.messages import ProposalMsg
from consensus.types import Proposal, Vote

__all__ = ["HeightState", "Step", "VoteSet"]

# A block is identified by its hash *and* bytes: a Byzantine proposer may pair one signed
# hash with several byte strings, and only the application can tell which one is valid.
BlockKey = tuple[bytes, bytes]


class Step(IntEnum):
    NEW_HEIGHT = 0  # waiting out timeout_commit before round 0
    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3
    DECIDED = 4  # CommitBlock emitted, waiting for BlockCommitted


class VoteSet:
    """The votes of one (round, type).

    ``total`` counts each validator once (the "2f+1 of anything" and timer rules), while
    ``power_for(v)`` counts every validator that signed a vote for v, even one that also
    signed something else. Counting an equivocator towards two values is safe -- any two
    quorums still share an honest validator -- and it is needed for liveness: otherwise
    whichever of a Byzantine validator's twin votes arrives first would decide forever
    whether this node can see a proof-of-lock that the others saw.
    """

    __slots__ = ("by_hash", "power", "seen", "total", "votes")

    def __init__(self) -> None:
        self.votes: dict[bytes, Vote] = {}
        self.power: dict[bytes, int] = {}
        self.by_hash: dict[bytes, list[Vote]] = {}
        self.seen: set[tuple[bytes, bytes]] = set()
        self.total = 0

    def add(self, vote: Vote, power: int) -> None:
        if vote.validator not in self.votes:
            self.votes[vote.validator] = vote
            self.total += power
        key = (vote.validator, vote.block_hash)
        if key not in self.seen:
            self.seen.add(key)
            self.power[vote.block_hash] = self.power.get(vote.block_hash, 0) + power
            self.by_hash.setdefault(vote.block_hash, []).append(vote)

    def has(self, vote: Vote) -> bool:
        return (vote.validator, vote.block_hash) in self.seen

    def power_for(self, block_hash: bytes) -> int:
        return self.power.get(block_hash, 0)


@dataclass(slots=True)
class HeightState:
    """The state of one height (see the module docstring); owned by the engine."""

    round: int = 0
    step: Step = Step.NEW_HEIGHT
    txs_available: bool = False  # the driver reported work for this height's block
    waiting_txs: bool = False  # in round 0's propose step, its start held back
    # Algorithm 1's lockedRound/lockedValue and validRound/validValue (-1: none).
    locked_round: int = -1
    locked_hash: bytes = b""
    valid_round: int = -1
    valid_block: Block | None = None
    # round -> the proposer's signed proposal and the block it came with
    proposals: dict[int, tuple[Proposal, Block]] = field(default_factory=dict)
    prevotes: dict[int, VoteSet] = field(default_factory=dict)
    precommits: dict[int, VoteSet] = field(default_factory=dict)
    # round -> power of every validator heard from in it (rule L55's f+1)
    senders: dict[int, dict[bytes, int]] = field(default_factory=dict)
    sender_power: dict[int, int] = field(default_factory=dict)
    # blocks: the application's verdicts, what was asked, what we built or locked on
    verdicts: dict[BlockKey, bool] = field(default_factory=dict)
    requested: set[BlockKey] = field(default_factory=set)
    own_blocks: set[BlockKey] = field(default_factory=set)
    # hash -> the byte strings seen with it (a few at most, see the engine)
    candidates: dict[bytes, list[Block]] = field(default_factory=dict)
    # (round, hash) with 2f+1 precommits: decided once the block is known to be valid
    decidable: list[tuple[int, bytes]] = field(default_factory=list)
    # rules that fire once per round
    prevote_timer: set[int] = field(default_factory=set)
    precommit_timer: set[int] = field(default_factory=set)
    l36_done: set[int] = field(default_factory=set)
    proposal_requested: set[int] = field(default_factory=set)
    # what this node signed, to re-send: round -> proposal, (round, type) -> vote
    my_proposal: dict[int, ProposalMsg] = field(default_factory=dict)
    my_votes: dict[tuple[int, int], Vote] = field(default_factory=dict)
    # (validator, round, type; 0 for proposals) already reported as evidence
    reported: set[tuple[bytes, int, int]] = field(default_factory=set)
    gossip_ticks: int = 0

    def prevotes_of(self, round: int) -> VoteSet:
        vs = self.prevotes.get(round)
        if vs is None:
            vs = self.prevotes[round] = VoteSet()
        return vs

    def precommits_of(self, round: int) -> VoteSet:
        vs = self.precommits.get(round)
        if vs is None:
            vs = self.precommits[round] = VoteSet()
        return vs

    def valid(self, block: Block) -> bool | None:
        """Algorithm 1's valid(v): True for blocks we built or locked on, else the
        application's verdict (None while it is pending or was never asked)."""
        key = (block.hash, block.data)
        if key in self.own_blocks:
            return True
        return self.verdicts.get(key)

    def note_sender(self, round: int, address: bytes, power: int) -> None:
        s = self.senders.setdefault(round, {})
        if address not in s:
            s[address] = power
            self.sender_power[round] = self.sender_power.get(round, 0) + power

    def idle(self) -> bool:
        """Waiting for transactions with nothing of round 0 seen or sent yet."""
        return (
            self.waiting_txs
            and self.round == 0
            and self.step == Step.PROPOSE
            and not self.proposals
            and not self.my_votes
            and not any(vs.votes for vs in (*self.prevotes.values(), *self.precommits.values()))
        )
