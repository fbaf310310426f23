"""The Tendermint state machine: Algorithm 1 of arXiv:1807.04938, stake-weighted.

Rule numbers in comments (L22, L28, ...) are the line numbers of Algorithm 1. The "upon"
rules are re-evaluated after every event until none fires, which is the paper's execution
model and keeps each rule a direct transcription. Thresholds are by voting power: "2f+1"
is at least ``ValidatorSet.quorum()`` (more than 2/3 of the total) and "f+1" is more than
1/3 of the total.

Beyond the paper, four things a real network needs:

- ``valid(v)`` is the application's ``process_proposal``, asked asynchronously
  (RequestVerification -> ProposalVerdict); rules that need it wait for the verdict.
- Gossip: every ``gossip`` interval the engine re-broadcasts its own messages of the
  current round (and the proof-of-lock prevotes behind its proposal), so lost messages do
  not stall a round after the network stabilises.
- Catch-up: a message from a lower height is answered with the decided block and its
  commit certificate (DecisionMsg); the receiver verifies every precommit in it like a
  vote, asks the application to verify the block, and decides through rule L49.
- Waiting for transactions (CometBFT's ``create_empty_blocks_interval``): with
  ``timeout_empty_blocks`` > 0, round 0 of a new height does not start until the driver
  reports work for a block (TxsAvailable) or that many seconds pass. An FL round trains
  for many seconds with nothing to commit; a block a second meanwhile cost every node a
  proposal, 2n votes to verify and a signing-state fsync, CPU the trainers need. While
  waiting, the node is in round 0's propose step without its timer, so a proposal from a
  proposer that did not wait is still prevoted at once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import IntEnum
from functools import lru_cache

from consensus.block import Block
from consensus.engine import (
    BlockCommitted,
    Broadcast,
    Checkpoint,
    CommitBlock,
    Effect,
    Engine,
    EngineConfig,
    Event,
    EvidenceFound,
    MessageReceived,
    Peer,
    ProposalReady,
    ProposalVerdict,
    RequestProposal,
    RequestVerification,
    ScheduleTimeout,
    SendTo,
    Start,
    TimeoutFired,
    TxsAvailable,
    Verifier,
)
from consensus.options import OptionSchema, Seconds
from consensus.privval import Signer
from consensus.spec import EngineSpec
from consensus.tendermint.messages import (
    DecisionMsg,
    Envelope,
    LockRecord,
    ProposalMsg,
    StatusMsg,
    VoteMsg,
)
from consensus.tendermint.proposer import ProposerSchedule
from consensus.tendermint.valset import HeightVals, TendermintCheckpoint, next_schedule
from consensus.types import (
    Commit,
    CommitSig,
    DuplicateProposalEvidence,
    DuplicateVoteEvidence,
    Proposal,
    Vote,
    VoteType,
)
from node.core.codec import CodecError, sha256

__all__ = ["ENGINE", "OPTIONS", "Step", "TendermintEngine", "Timeouts"]

# Votes and proposals further ahead than this many rounds are dropped: it bounds the
# memory a validator can make us spend by signing votes for absurd rounds.
MAX_ROUND_AHEAD = 64
# Messages for the next heights kept until we get there, and decisions kept to help peers.
MAX_FUTURE_MESSAGES = 4096
KEEP_DECISIONS = 64
CATCHUP_BATCH = 8
# While a height waits for transactions the node has nothing of the round to re-send, and
# its status only changes when the wait ends; it re-announces that status on every
# IDLE_STATUS_EVERY-th gossip tick instead of every tick. On a 10-node testnet, where
# heights wait ~9 s of every ~10 s FL round, status re-sends at 1/s (each flooded through
# the mesh) were most of the consensus layer's CPU while idle.
IDLE_STATUS_EVERY = 5

PROPOSE, PREVOTE, PRECOMMIT, COMMIT, GOSSIP = "propose", "prevote", "precommit", "commit", "gossip"
EMPTY = "empty"  # the wait for transactions before round 0 is over


# Gossip delivers the same vote several times (and the simulator runs many engines in one
# process); decoded records are immutable, so small messages are decoded once.
DECODE_CACHE_MAX_BYTES = 4096


@lru_cache(maxsize=8192)
def _decode(data: bytes) -> ProposalMsg | VoteMsg | DecisionMsg | StatusMsg:
    return Envelope.decode(data).msg


class Step(IntEnum):
    NEW_HEIGHT = 0  # waiting out timeout_commit before round 0
    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3
    DECIDED = 4  # CommitBlock emitted, waiting for BlockCommitted


@dataclass(frozen=True)
class Timeouts:
    """Seconds; round r waits ``base + r * delta`` so timeouts outgrow any finite delay."""

    propose: float = 3.0
    propose_delta: float = 0.5
    prevote: float = 1.0
    prevote_delta: float = 0.5
    precommit: float = 1.0
    precommit_delta: float = 0.5
    commit: float = 1.0
    gossip: float = 1.0
    empty_blocks: float = 0.0  # 0: never wait for transactions before a height's round 0

    @classmethod
    def from_options(cls, options: Mapping[str, object]) -> Timeouts:
        """Genesis options ``timeout_<field>`` (see OPTIONS); absent ones keep defaults."""
        OPTIONS.check(options)
        return cls(**{o.name.removeprefix("timeout_"): o.read(options) for o in TIMEOUT_OPTIONS})

    def options(self) -> dict[str, float]:
        """These timeouts as engine options (what ``from_options`` reads back)."""
        return {f"timeout_{k}": v for k, v in asdict(self).items()}


# Tendermint's genesis options are exactly its timeouts, so the schema is derived from the
# dataclass above: one declaration of names and defaults.
TIMEOUT_OPTIONS = tuple(Seconds(k, v) for k, v in Timeouts().options().items())
OPTIONS = OptionSchema(*TIMEOUT_OPTIONS)


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


class TendermintEngine(Engine):
    valid_block: Block | None

    def __init__(self, config: EngineConfig) -> None:
        self.chain_id = config.chain_id
        self.signer: Signer = config.signer
        self.verifier: Verifier = config.verifier
        self.timeouts = Timeouts.from_options(config.options)
        self.me = self.signer.address
        if config.recovery is not None:
            cp = TendermintCheckpoint.decode(config.recovery)
            self._height = cp.height
            self.vals = HeightVals(cp.current.validators, cp.current.schedule())
            self._next = (cp.next.validators, cp.next.schedule())
            self.last_commit: Commit | None = cp.last_commit
            last = cp.last_commit
        else:
            sched = ProposerSchedule.new(
                [(v.address, v.power) for v in config.validators.validators]
            )
            self._height = config.initial_height
            self.vals = HeightVals(config.validators, sched)
            nsched = sched.copy()
            nsched.increment(1)
            self._next = (config.validators, nsched)
            self.last_commit = None
            last = None
        self.decisions: OrderedDict[int, tuple[Block, Commit]] = OrderedDict()
        if last is not None and config.recovery is not None:
            self.decisions[last.height] = (Block(last.block_hash, cp.last_block), last)
        self.future: list[tuple[Peer, bytes, int]] = []
        self.started = False
        self._reset_height()
        # Resume a crashed height where the signer left off, still locked.
        last_round = self.signer.last_round(self._height)
        if last_round is not None:
            self.round = last_round
        lock = self.signer.lock(self._height)
        if lock is not None:
            self._restore_lock(*lock)
        # Votes signed before a crash may never have left the process: take them back so
        # they count here and get gossiped again (re-sending an identical vote is safe).
        for vote in self.signer.recent_votes(self.chain_id, self._height):
            self.my_votes[(vote.round, vote.type)] = vote
            self._add_vote(vote, [], verified=True)

    def _restore_lock(self, round: int, block_hash: bytes, payload: bytes) -> None:
        """Resume locked after a crash; with the persisted block and its proof-of-lock
        this node can also re-propose the value, as Algorithm 1 expects of it."""
        self.locked_round, self.locked_hash = round, block_hash
        try:
            rec = LockRecord.decode(payload)
        except CodecError:
            return  # a lock without payload still keeps us safe, just less helpful
        block = Block(block_hash, rec.block)
        self.own_blocks.add((block.hash, block.data))  # we verified it before locking
        self.candidates.setdefault(block.hash, []).append(block)
        self.valid_round, self.valid_block = round, block
        for vote in rec.pol:
            if vote.round == round and vote.type == VoteType.PREVOTE:
                self._add_vote(vote, [])

    # ------------------------------------------------------------------ state reset

    def _reset_height(self) -> None:
        self.round = 0
        self.step = Step.NEW_HEIGHT
        self.txs_available = False  # the driver reported work for this height's block
        self.waiting_txs = False  # in round 0's propose step, its start held back
        self.locked_round = -1
        self.locked_hash = b""
        self.valid_round = -1
        self.valid_block = None
        self.proposals: dict[int, tuple[Proposal, Block]] = {}
        self.prevotes: dict[int, VoteSet] = {}
        self.precommits: dict[int, VoteSet] = {}
        self.senders: dict[int, dict[bytes, int]] = {}
        self.sender_power: dict[int, int] = {}
        self.verdicts: dict[tuple[bytes, bytes], bool] = {}
        self.candidates: dict[bytes, list[Block]] = {}
        self.own_blocks: set[tuple[bytes, bytes]] = set()
        self.requested: set[tuple[bytes, bytes]] = set()
        self.decidable: list[tuple[int, bytes]] = []
        self.prevote_timer: set[int] = set()
        self.precommit_timer: set[int] = set()
        self.l36_done: set[int] = set()
        self.proposal_requested: set[int] = set()
        self.my_proposal: dict[int, ProposalMsg] = {}
        self.my_votes: dict[tuple[int, int], Vote] = {}
        self.reported: set[tuple[bytes, int, int]] = set()
        self.replied: set[tuple[Peer, int]] = set()
        self.gossip_ticks = 0

    @property
    def height(self) -> int:
        return self._height

    # ------------------------------------------------------------------ dispatch

    def handle(self, event: Event) -> list[Effect]:
        out: list[Effect] = []
        if isinstance(event, MessageReceived):
            self._on_message(event.peer, event.data, out)
        elif isinstance(event, TimeoutFired):
            self._on_timeout(event, out)
        elif isinstance(event, ProposalVerdict):
            if event.height == self._height:
                key = (event.block.hash, event.block.data)
                if key in self.requested:
                    self.verdicts[key] = event.accepted
        elif isinstance(event, ProposalReady):
            self._on_proposal_ready(event, out)
        elif isinstance(event, BlockCommitted):
            self._on_committed(event, out)
        elif isinstance(event, Start):
            if not self.started:
                self.started = True
                for vote in self.my_votes.values():
                    out.append(Broadcast(Envelope(VoteMsg(vote)).encode()))
                out.append(ScheduleTimeout(GOSSIP, self._height, self.round, self.timeouts.gossip))
                self._start_round(self.round, out)
        elif isinstance(event, TxsAvailable):
            self.txs_available = True
            if self.waiting_txs:
                self._stop_waiting(out)
        if self.started:
            self._progress(out)
        return out

    # ------------------------------------------------------------------ helpers

    def _vote(
        self, type: VoteType, block_hash: bytes, out: list[Effect], lock_payload: bytes = b""
    ) -> None:
        vote = self.signer.sign_vote(
            self.chain_id, self._height, self.round, type, block_hash, lock_payload
        )
        if vote is None:
            return  # the double-sign guard refused (we signed something else before a crash)
        self.my_votes[(self.round, int(type))] = vote
        self._add_vote(vote, out, verified=True)
        out.append(Broadcast(Envelope(VoteMsg(vote)).encode()))

    def _valid(self, block: Block) -> bool | None:
        key = (block.hash, block.data)
        if key in self.own_blocks:
            return True
        return self.verdicts.get(key)

    def _add_candidate(self, round: int, block: Block, out: list[Effect]) -> None:
        key = (block.hash, block.data)
        known = self.candidates.setdefault(block.hash, [])
        if any(b.data == block.data for b in known):
            return
        if len(known) >= 4:
            return  # a hash with that many different byte strings is an attack
        known.append(block)
        if key not in self.own_blocks and key not in self.requested:
            self.requested.add(key)
            out.append(RequestVerification(self._height, round, block))

    def _note_sender(self, round: int, address: bytes) -> None:
        s = self.senders.setdefault(round, {})
        if address not in s:
            p = self.vals.power(address)
            s[address] = p
            self.sender_power[round] = self.sender_power.get(round, 0) + p

    def _round_ok(self, round: int) -> bool:
        return round <= self.round + MAX_ROUND_AHEAD

    # ------------------------------------------------------------------ rounds

    def _enter_height(self, out: list[Effect]) -> None:
        """Start round 0, or wait for transactions first (``timeout_empty_blocks``)."""
        wait = self.timeouts.empty_blocks
        if wait <= 0 or self.txs_available:
            self._start_round(0, out)
            return
        self.round, self.step, self.waiting_txs = 0, Step.PROPOSE, True
        out.append(ScheduleTimeout(EMPTY, self._height, 0, wait))

    def _stop_waiting(self, out: list[Effect]) -> None:
        # Only if still in round 0's propose step: a proposal may have been prevoted (or a
        # later round entered) meanwhile, and then the round is already under way.
        if self.waiting_txs and self.round == 0 and self.step == Step.PROPOSE:
            self._start_round(0, out)
        self.waiting_txs = False

    def _start_round(self, round: int, out: list[Effect]) -> None:
        self.round = round
        self.waiting_txs = False
        self.step = Step.PROPOSE
        h = self._height
        if self.vals.proposer(round) == self.me:
            if self.valid_block is not None:
                self._propose(self.valid_block, self.valid_round, out)
            elif round not in self.proposal_requested:
                self.proposal_requested.add(round)
                out.append(RequestProposal(h, round, self.me, self.last_commit))
        t = self.timeouts
        out.append(ScheduleTimeout(PROPOSE, h, round, t.propose + round * t.propose_delta))

    def _propose(self, block: Block, pol_round: int, out: list[Effect]) -> None:
        if self.round in self.my_proposal:
            return
        p = self.signer.sign_proposal(
            self.chain_id, self._height, self.round, pol_round + 1, block.hash
        )
        if p is None:
            return
        msg = ProposalMsg(p, block.data)
        self.my_proposal[self.round] = msg
        self.own_blocks.add((block.hash, block.data))
        self.proposals[self.round] = (p, block)
        self._add_candidate(self.round, block, out)
        out.append(Broadcast(Envelope(msg).encode()))

    def _on_proposal_ready(self, ev: ProposalReady, out: list[Effect]) -> None:
        if ev.height != self._height or ev.round != self.round or self.step != Step.PROPOSE:
            return
        if self.vals.proposer(self.round) != self.me:
            return
        self._propose(ev.block, -1, out)

    # ------------------------------------------------------------------ rules

    def _progress(self, out: list[Effect]) -> None:
        while self.step not in (Step.NEW_HEIGHT, Step.DECIDED) and (
            self._rule_decide(out)
            or self._rule_skip_round(out)
            or self._rule_proposal(out)
            or self._rule_polka(out)
            or self._rule_nil_polka(out)
            or self._rule_timers(out)
        ):
            pass
        if self.step == Step.NEW_HEIGHT:
            self._rule_decide(out)

    def _rule_proposal(self, out: list[Effect]) -> bool:
        """L22 and L28: prevote for the round's proposal (or nil)."""
        if self.step != Step.PROPOSE or self.round not in self.proposals:
            return False
        p, block = self.proposals[self.round]
        vr = p.pol_round - 1
        if vr == -1:
            ok = self._valid(block)
            if ok is None:
                return False
            good = ok and (self.locked_round == -1 or self.locked_hash == block.hash)
        elif vr < self.round and self._prevotes(vr).power_for(block.hash) >= self.vals.quorum:
            ok = self._valid(block)
            if ok is None:
                return False
            good = ok and (self.locked_round <= vr or self.locked_hash == block.hash)
        else:
            return False
        self._vote(VoteType.PREVOTE, block.hash if good else b"", out)
        self.step = Step.PREVOTE
        return True

    def _rule_polka(self, out: list[Effect]) -> bool:
        """L36: a proposal with 2f+1 prevotes locks (if still prevoting) and sets validValue."""
        r = self.round
        if self.step < Step.PREVOTE or r in self.l36_done or r not in self.proposals:
            return False
        _, block = self.proposals[r]
        if self._prevotes(r).power_for(block.hash) < self.vals.quorum or not self._valid(block):
            return False
        self.l36_done.add(r)
        if self.step == Step.PREVOTE:
            self.locked_round, self.locked_hash = r, block.hash
            pol = tuple(self._prevotes(r).by_hash[block.hash])
            payload = LockRecord(block.data, pol).encode()
            self._vote(VoteType.PRECOMMIT, block.hash, out, payload)
            self.step = Step.PRECOMMIT
        self.valid_round, self.valid_block = r, block
        return True

    def _rule_nil_polka(self, out: list[Effect]) -> bool:
        """L44: 2f+1 nil prevotes -> precommit nil."""
        if self.step != Step.PREVOTE:
            return False
        if self._prevotes(self.round).power_for(b"") < self.vals.quorum:
            return False
        self._vote(VoteType.PRECOMMIT, b"", out)
        self.step = Step.PRECOMMIT
        return True

    def _rule_timers(self, out: list[Effect]) -> bool:
        """L34 and L47: 2f+1 votes of any kind arm the prevote/precommit timeouts."""
        r, h, t = self.round, self._height, self.timeouts
        fired = False
        if (
            self.step == Step.PREVOTE
            and r not in self.prevote_timer
            and self._prevotes(r).total >= self.vals.quorum
        ):
            self.prevote_timer.add(r)
            out.append(ScheduleTimeout(PREVOTE, h, r, t.prevote + r * t.prevote_delta))
            fired = True
        if r not in self.precommit_timer and self._precommits(r).total >= self.vals.quorum:
            self.precommit_timer.add(r)
            out.append(ScheduleTimeout(PRECOMMIT, h, r, t.precommit + r * t.precommit_delta))
            fired = True
        return fired

    def _rule_skip_round(self, out: list[Effect]) -> bool:
        """L55: messages from more than 1/3 of the power in a later round -> go there."""
        best = -1
        for r, power in self.sender_power.items():
            if r > self.round and power * 3 > self.vals.total and r > best:
                best = r
        if best < 0:
            return False
        self._start_round(best, out)
        return True

    def _rule_decide(self, out: list[Effect]) -> bool:
        """L49: a block with 2f+1 precommits in any round is decided once it is valid."""
        for r, block_hash in self.decidable:
            for block in self.candidates.get(block_hash, ()):
                if self._valid(block):
                    self._decide(r, block, out)
                    return True
        return False

    def _decide(self, r: int, block: Block, out: list[Effect]) -> None:
        votes = sorted(self.precommits[r].by_hash[block.hash], key=lambda v: v.validator)
        commit = Commit(
            self._height,
            r,
            block.hash,
            tuple(CommitSig(v.validator, v.signature) for v in votes),
        )
        self.decisions[self._height] = (block, commit)
        while len(self.decisions) > KEEP_DECISIONS:
            self.decisions.popitem(last=False)
        self.step = Step.DECIDED
        out.append(CommitBlock(self._height, block, commit))

    def _prevotes(self, r: int) -> VoteSet:
        vs = self.prevotes.get(r)
        if vs is None:
            vs = self.prevotes[r] = VoteSet()
        return vs

    def _precommits(self, r: int) -> VoteSet:
        vs = self.precommits.get(r)
        if vs is None:
            vs = self.precommits[r] = VoteSet()
        return vs

    # ------------------------------------------------------------------ timeouts

    def _on_timeout(self, ev: TimeoutFired, out: list[Effect]) -> None:
        if ev.kind == GOSSIP:
            self.gossip_ticks += 1
            if not self._idle() or self.gossip_ticks % IDLE_STATUS_EVERY == 0:
                self._gossip(out)
            self.replied.clear()
            out.append(ScheduleTimeout(GOSSIP, self._height, self.round, self.timeouts.gossip))
            return
        if ev.height != self._height:
            return
        if ev.kind == COMMIT:
            if self.step == Step.NEW_HEIGHT:
                self._enter_height(out)
            return
        if ev.kind == EMPTY:
            self._stop_waiting(out)
            return
        if ev.round != self.round:
            return
        if ev.kind == PROPOSE and self.step == Step.PROPOSE:  # L57
            self._vote(VoteType.PREVOTE, b"", out)
            self.step = Step.PREVOTE
        elif ev.kind == PREVOTE and self.step == Step.PREVOTE:  # L61
            self._vote(VoteType.PRECOMMIT, b"", out)
            self.step = Step.PRECOMMIT
        elif ev.kind == PRECOMMIT and self.step in (Step.PROPOSE, Step.PREVOTE, Step.PRECOMMIT):
            self._start_round(self.round + 1, out)  # L65

    def _idle(self) -> bool:
        """Waiting for transactions with nothing of round 0 seen or sent yet."""
        return (
            self.waiting_txs
            and self.round == 0
            and self.step == Step.PROPOSE
            and not self.proposals
            and not self.my_votes
            and not any(vs.votes for vs in (*self.prevotes.values(), *self.precommits.values()))
        )

    def _gossip(self, out: list[Effect]) -> None:
        """Re-send what peers may have lost: the round's proposal (with the prevotes that
        justify its proof-of-lock round) and every vote of the round we hold, ours and
        relayed. Peers drop duplicates before verifying, so this costs bandwidth, not CPU;
        it is what makes a round finish after GST even when a restarted node forgot the
        votes it had sent."""
        out.append(Broadcast(Envelope(StatusMsg(self._height, self.round)).encode()))
        if self.step in (Step.NEW_HEIGHT, Step.DECIDED):
            return
        r = self.round
        prop = self.proposals.get(r)
        if prop is not None:
            p, block = prop
            out.append(Broadcast(Envelope(ProposalMsg(p, block.data)).encode()))
            vr = p.pol_round - 1
            if vr >= 0:
                for v in self._prevotes(vr).by_hash.get(p.block_hash, ()):
                    out.append(Broadcast(Envelope(VoteMsg(v)).encode()))
        for vs in (self._prevotes(r), self._precommits(r)):
            for v in vs.votes.values():
                out.append(Broadcast(Envelope(VoteMsg(v)).encode()))

    # ------------------------------------------------------------------ messages

    def _on_message(self, peer: Peer, data: bytes, out: list[Effect]) -> None:
        try:
            if len(data) <= DECODE_CACHE_MAX_BYTES:
                msg = _decode(data)
            else:
                msg = Envelope.decode(data).msg
        except CodecError:
            return
        if isinstance(msg, StatusMsg):
            if msg.height < self._height:
                self._help_peer(peer, msg.height, out)
            elif msg.height == self._height and msg.round < self.round:
                self._help_round(peer, msg.round, out)
            return
        if isinstance(msg, DecisionMsg):
            height = msg.commit.height
        elif isinstance(msg, VoteMsg):
            height = msg.vote.height
            if msg.vote.chain_id != self.chain_id:
                return
        else:
            height = msg.proposal.height
            if msg.proposal.chain_id != self.chain_id:
                return
        if height < self._height:
            self._help_peer(peer, height, out)
            return
        if height > self._height:
            if len(self.future) < MAX_FUTURE_MESSAGES and height <= self._height + CATCHUP_BATCH:
                self.future.append((peer, data, height))
            return
        if isinstance(msg, VoteMsg):
            self._add_vote(msg.vote, out)
        elif isinstance(msg, ProposalMsg):
            self._on_proposal(msg, out)
        else:
            self._on_decision(msg, out)

    def _help_round(self, peer: Peer, round: int, out: list[Effect]) -> None:
        """A peer is stuck in an earlier round of our height: send it what we saw there
        (its own votes may be all it has if it restarted), as CometBFT's vote gossip
        does for the round a peer reports."""
        prop = self.proposals.get(round)
        if prop is not None:
            out.append(SendTo(peer, Envelope(ProposalMsg(prop[0], prop[1].data)).encode()))
        for vs in (self.prevotes.get(round), self.precommits.get(round)):
            if vs is not None:
                for votes in vs.by_hash.values():
                    for v in votes:
                        out.append(SendTo(peer, Envelope(VoteMsg(v)).encode()))

    def _help_peer(self, peer: Peer, height: int, out: list[Effect]) -> None:
        if (peer, height) in self.replied or height not in self.decisions:
            return
        for h in range(height, min(height + CATCHUP_BATCH, self._height)):
            if h not in self.decisions or (peer, h) in self.replied:
                continue
            self.replied.add((peer, h))
            block, commit = self.decisions[h]
            out.append(SendTo(peer, Envelope(DecisionMsg(commit, block.data)).encode()))

    def _add_vote(self, vote: Vote, out: list[Effect], verified: bool = False) -> None:
        if vote.chain_id != self.chain_id or vote.height != self._height:
            return
        if not self._round_ok(vote.round):
            return
        member = self.vals.members.get(vote.validator)
        if member is None:
            return
        vs = (
            self._prevotes(vote.round)
            if vote.type == VoteType.PREVOTE
            else self._precommits(vote.round)
        )
        if vs.has(vote):
            return
        if not verified and not self.verifier(member.public_key, vote.signature, vote.sign_bytes()):
            return
        prev = vs.votes.get(vote.validator)
        if prev is not None:
            key = (vote.validator, vote.round, vote.type)
            if key not in self.reported:
                self.reported.add(key)
                out.append(EvidenceFound(DuplicateVoteEvidence.of(prev, vote)))
            # Only votes for values we know can matter; this also bounds the memory an
            # equivocator can make us spend.
            if vote.block_hash and vote.block_hash not in self.candidates:
                return
        vs.add(vote, member.power)
        self._note_sender(vote.round, vote.validator)
        if (
            vote.type == VoteType.PRECOMMIT
            and vote.block_hash
            and vs.power_for(vote.block_hash) >= self.vals.quorum
            and (vote.round, vote.block_hash) not in self.decidable
        ):
            self.decidable.append((vote.round, vote.block_hash))

    def _on_proposal(self, msg: ProposalMsg, out: list[Effect]) -> None:
        p = msg.proposal
        if not self._round_ok(p.round) or p.pol_round > p.round:
            return
        if p.proposer != self.vals.proposer(p.round):
            return
        member = self.vals.members[p.proposer]
        prev = self.proposals.get(p.round)
        if prev is not None and prev[0] == p:
            return
        if not self.verifier(member.public_key, p.signature, p.sign_bytes()):
            return
        if prev is not None:
            key = (p.proposer, p.round, 0)
            if key not in self.reported and prev[0].sign_bytes() != p.sign_bytes():
                self.reported.add(key)
                out.append(EvidenceFound(DuplicateProposalEvidence.of(prev[0], p)))
            return
        block = Block(p.block_hash, msg.block)
        self.proposals[p.round] = (p, block)
        self._note_sender(p.round, p.proposer)
        self._add_candidate(p.round, block, out)

    def _on_decision(self, msg: DecisionMsg, out: list[Effect]) -> None:
        c = msg.commit
        if not self._round_ok(c.round):
            return
        # Verify the certificate before taking the block as a candidate.
        members = self.vals.members
        power, seen = 0, set()
        for sig in c.signatures:
            m = members.get(sig.validator)
            if m is None or sig.validator in seen:
                return
            seen.add(sig.validator)
            vote = c.vote_for(self.chain_id, sig)
            if not self._precommits(c.round).has(vote) and not self.verifier(
                m.public_key, vote.signature, vote.sign_bytes()
            ):
                return
            power += m.power
        if power < self.vals.quorum:
            return
        self._add_candidate(c.round, Block(c.block_hash, msg.block), out)
        for sig in c.signatures:
            self._add_vote(c.vote_for(self.chain_id, sig), out, verified=True)

    # ------------------------------------------------------------------ heights

    def _on_committed(self, ev: BlockCommitted, out: list[Effect]) -> None:
        if ev.height != self._height or self.step != Step.DECIDED:
            return
        _, commit = self.decisions[self._height]
        self.last_commit = commit
        cur_set, cur_sched = self._next
        nset, nsched = next_schedule(cur_set, cur_sched, ev.validator_updates)
        self.vals = HeightVals(cur_set, cur_sched)
        self._next = (nset, nsched)
        self._height += 1
        self._reset_height()
        out.append(Checkpoint(self._height - 1, self.checkpoint().encode()))
        if self.timeouts.commit > 0:
            out.append(ScheduleTimeout(COMMIT, self._height, 0, self.timeouts.commit))
        else:
            self._enter_height(out)
        pending, self.future = self.future, []
        for peer, data, height in pending:
            if height >= self._height:
                self._on_message(peer, data, out)

    def checkpoint(self) -> TendermintCheckpoint:
        nset, nsched = self._next
        last = self.decisions.get(self._height - 1)
        return TendermintCheckpoint(
            self._height,
            self.vals.record(),
            HeightVals(nset, nsched).record(),
            self.last_commit,
            last[0].data if last is not None else b"",
        )

    # ------------------------------------------------------------------ introspection

    def fingerprint(self) -> bytes:
        """A digest of the decided blocks this engine still remembers (for tests)."""
        return sha256(b"".join(b.hash for b, _ in self.decisions.values()))


ENGINE = EngineSpec("tendermint", TendermintEngine, OPTIONS)
