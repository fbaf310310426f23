"""The Tendermint state machine: Algorithm 1 of arXiv:1807.04938, stake-weighted.

Rule numbers in comments (L22, L28, ...) are the line numbers of Algorithm 1. The "upon"
rules are re-evaluated after every event until none fires, which is the paper's execution
model and keeps each rule a direct transcription. Thresholds are by voting power: "2f+1"
is at least ``ValidatorSet.quorum()`` (more than 2/3 of the total) and "f+1" is more than
1/3 of the total.

The state of the height being decided is one ``HeightState``
(``consensus.tendermint.height``), replaced whole at each new height; the engine itself
keeps only what spans heights (validator sets, the last commit, catch-up, early messages).

Beyond the paper, four things a real network needs:

- ``valid(v)`` is the application's ``process_proposal``, asked asynchronously
  (RequestVerification -> ProposalVerdict); rules that need it wait for the verdict.
- Gossip: every ``gossip`` interval the engine re-broadcasts its own messages of the
  current round (and the proof-of-lock prevotes behind its proposal), so lost messages do
  not stall a round after the network stabilises.
- Catch-up: a message from a lower height is answered with the decided block and its
  commit certificate (DecisionMsg); the receiver verifies every precommit in it like a
  vote, asks the application to verify the block, and decides through rule L49. That
  gossip lives beside the algorithm in ``consensus.tendermint.catchup``.
- Waiting for transactions (CometBFT's ``create_empty_blocks_interval``): with
  ``timeout_empty_blocks`` > 0, round 0 of a new height does not start until the driver
  reports work for a block (TxsAvailable) or that many seconds pass. An FL round trains
  for many seconds with nothing to commit; a block a second meanwhile cost every node a
  proposal, 2n votes to verify and a signing-state fsync, CPU the trainers need. While
  waiting, the node is in round 0's propose step without its timer, so a proposal from a
  proposer that did not wait is still prevoted at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
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
    RecoveryError,
    RequestProposal,
    RequestVerification,
    ScheduleTimeout,
    Start,
    TimeoutFired,
    TxsAvailable,
    Verifier,
)
from consensus.options import OptionSchema, Seconds
from consensus.privval import Signer
from consensus.tendermint.catchup import CATCHUP_BATCH, KEEP_DECISIONS, Catchup
from consensus.tendermint.future import FutureBuffer
from consensus.tendermint.height import HeightState, Step, VoteSet
from consensus.tendermint.messages import (
    DecisionMsg,
    Envelope,
    LockRecord,
    ProposalMsg,
    StatusMsg,
    VoteMsg,
    signed_part,
)
from consensus.tendermint.proposer import ProposerSchedule
from consensus.tendermint.valset import (
    HeightVals,
    ScheduleRecord,
    TendermintCheckpoint,
    next_schedule,
)
from consensus.types import (
    Commit,
    CommitSig,
    DuplicateProposalEvidence,
    DuplicateVoteEvidence,
    Validator,
    ValidatorSet,
    Vote,
    VoteType,
)
from node.core.codec import CodecError

__all__ = ["KEEP_DECISIONS", "OPTIONS", "Step", "TendermintEngine", "Timeouts"]

# Votes and proposals further ahead than this many rounds are dropped: it bounds the
# memory a validator can make us spend by signing votes for absurd rounds.
MAX_ROUND_AHEAD = 64
# While a height waits for transactions the node has nothing of the round to re-send, and
# its status only changes when the wait ends; it re-announces that status on every
# IDLE_STATUS_EVERY-th gossip tick instead of every tick. Heights of an FL chain spend
# most of a round waiting, and a status re-sent on every tick (each flooded through the
# mesh) would be most of the consensus layer's CPU while it idles.
IDLE_STATUS_EVERY = 5

PROPOSE, PREVOTE, PRECOMMIT, COMMIT, GOSSIP = "propose", "prevote", "precommit", "commit", "gossip"
EMPTY = "empty"  # the wait for transactions before round 0 is over


# Gossip delivers the same vote several times (and the simulator runs many engines in one
# process); decoded records are immutable, so small messages are decoded once.
DECODE_CACHE_MAX_BYTES = 4096


@lru_cache(maxsize=8192)
def _decode(data: bytes) -> ProposalMsg | VoteMsg | DecisionMsg | StatusMsg:
    return Envelope.decode(data).msg


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


class TendermintEngine(Engine):
    def __init__(self, config: EngineConfig) -> None:
        self.chain_id = config.chain_id
        self.signer: Signer = config.signer
        self.verifier: Verifier = config.verifier
        self.timeouts = Timeouts.from_options(config.options)
        self.block_id = config.block_id
        self.me = self.signer.address
        self.catchup = Catchup(self.chain_id, self.verifier)
        vset = config.validators
        nset = config.validators if config.next_validators is None else config.next_validators
        self._height = config.initial_height
        self.last_commit: Commit | None = None
        if config.recovery is not None:
            cp = _recovery(config.recovery, config.initial_height, vset, nset)
            self.vals = HeightVals(vset, _schedule(cp.current))
            self._next = (nset, _schedule(cp.next))
            self.last_commit = cp.last_commit
            if cp.last_commit is not None:
                last = cp.last_commit
                self.catchup.remember(last.height, Block(last.block_hash, cp.last_block), last)
        else:
            sched = ProposerSchedule.new([(v.address, v.power) for v in vset.validators])
            self.vals = HeightVals(vset, sched)
            self._next = next_schedule(vset, sched, _changes(vset, nset))
        self._next_vals: HeightVals | None = None
        self.future = FutureBuffer()
        self.started = False
        # This height's state (see consensus.tendermint.height), replaced whole at the next.
        self.hs = HeightState()
        # Resume a crashed height where the signer left off, still locked.
        last_round = self.signer.last_round(self._height)
        if last_round is not None:
            self.hs.round = last_round
        lock = self.signer.lock(self._height)
        if lock is not None:
            self._restore_lock(*lock)
        # Votes signed before a crash may never have left the process: take them back so
        # they count here and get gossiped again (re-sending an identical vote is safe).
        for vote in self.signer.recent_votes(self.chain_id, self._height):
            self.hs.my_votes[(vote.round, vote.type)] = vote
            self._add_vote(vote, [], verified=True)

    def _restore_lock(self, round: int, block_hash: bytes, payload: bytes) -> None:
        """Resume locked after a crash; with the persisted block and its proof-of-lock
        this node can also re-propose the value, as Algorithm 1 expects of it."""
        hs = self.hs
        hs.locked_round, hs.locked_hash = round, block_hash
        try:
            rec = LockRecord.decode(payload)
        except CodecError:
            return  # a lock without payload still keeps us safe, just less helpful
        block = Block(block_hash, rec.block)
        hs.own_blocks.add((block.hash, block.data))  # we verified it before locking
        hs.candidates.setdefault(block.hash, []).append(block)
        hs.valid_round, hs.valid_block = round, block
        for vote in rec.pol:
            if vote.round == round and vote.type == VoteType.PREVOTE:
                self._add_vote(vote, [])

    @property
    def height(self) -> int:
        return self._height

    @property
    def round(self) -> int:
        return self.hs.round

    @property
    def step(self) -> Step:
        return self.hs.step

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
                if key in self.hs.requested:
                    self.hs.verdicts[key] = event.accepted
        elif isinstance(event, ProposalReady):
            self._on_proposal_ready(event, out)
        elif isinstance(event, BlockCommitted):
            self._on_committed(event, out)
        elif isinstance(event, Start):
            if not self.started:
                self.started = True
                for vote in self.hs.my_votes.values():
                    out.append(Broadcast(Envelope(VoteMsg(vote)).encode()))
                out.append(
                    ScheduleTimeout(GOSSIP, self._height, self.hs.round, self.timeouts.gossip)
                )
                self._start_round(self.hs.round, out)
        elif isinstance(event, TxsAvailable):
            self.hs.txs_available = True
            if self.hs.waiting_txs:
                self._stop_waiting(out)
        if self.started:
            self._progress(out)
        return out

    # ------------------------------------------------------------------ helpers

    def _vote(
        self, type: VoteType, block_hash: bytes, out: list[Effect], lock_payload: bytes = b""
    ) -> None:
        if self.me not in self.vals.members:
            return  # a node that is no validator here follows the height without voting
        hs = self.hs
        vote = self.signer.sign_vote(
            self.chain_id, self._height, hs.round, type, block_hash, lock_payload
        )
        if vote is None:
            return  # the double-sign guard refused (we signed something else before a crash)
        hs.my_votes[(hs.round, int(type))] = vote
        self._add_vote(vote, out, verified=True)
        out.append(Broadcast(Envelope(VoteMsg(vote)).encode()))

    def _add_candidate(self, round: int, block: Block, out: list[Effect]) -> None:
        hs = self.hs
        key = (block.hash, block.data)
        known = hs.candidates.setdefault(block.hash, [])
        if any(b.data == block.data for b in known):
            return
        if len(known) >= 4:
            return  # a hash with that many different byte strings is an attack
        known.append(block)
        if key not in hs.own_blocks and key not in hs.requested:
            hs.requested.add(key)
            out.append(RequestVerification(self._height, round, block))

    def _round_ok(self, round: int) -> bool:
        return round <= self.hs.round + MAX_ROUND_AHEAD

    # ------------------------------------------------------------------ rounds

    def _enter_height(self, out: list[Effect]) -> None:
        """Start round 0, or wait for transactions first (``timeout_empty_blocks``)."""
        hs = self.hs
        wait = self.timeouts.empty_blocks
        if wait <= 0 or hs.txs_available:
            self._start_round(0, out)
            return
        hs.round, hs.step, hs.waiting_txs = 0, Step.PROPOSE, True
        out.append(ScheduleTimeout(EMPTY, self._height, 0, wait))

    def _stop_waiting(self, out: list[Effect]) -> None:
        # Only if still in round 0's propose step: a proposal may have been prevoted (or a
        # later round entered) meanwhile, and then the round is already under way.
        hs = self.hs
        if hs.waiting_txs and hs.round == 0 and hs.step == Step.PROPOSE:
            self._start_round(0, out)
        hs.waiting_txs = False

    def _start_round(self, round: int, out: list[Effect]) -> None:
        hs = self.hs
        hs.round = round
        hs.waiting_txs = False
        hs.step = Step.PROPOSE
        h = self._height
        if self.vals.proposer(round) == self.me:
            if hs.valid_block is not None:
                self._propose(hs.valid_block, hs.valid_round, out)
            elif round not in hs.proposal_requested:
                hs.proposal_requested.add(round)
                out.append(RequestProposal(h, round, self.me, self.last_commit))
        t = self.timeouts
        out.append(ScheduleTimeout(PROPOSE, h, round, t.propose + round * t.propose_delta))

    def _propose(self, block: Block, pol_round: int, out: list[Effect]) -> None:
        hs = self.hs
        if hs.round in hs.my_proposal:
            return
        p = self.signer.sign_proposal(
            self.chain_id, self._height, hs.round, pol_round + 1, block.hash
        )
        if p is None:
            return
        msg = ProposalMsg(p, block.data)
        hs.my_proposal[hs.round] = msg
        hs.own_blocks.add((block.hash, block.data))
        hs.proposals[hs.round] = (p, block)
        self._add_candidate(hs.round, block, out)
        out.append(Broadcast(Envelope(msg).encode()))

    def _on_proposal_ready(self, ev: ProposalReady, out: list[Effect]) -> None:
        hs = self.hs
        if ev.height != self._height or ev.round != hs.round or hs.step != Step.PROPOSE:
            return
        if self.vals.proposer(hs.round) != self.me:
            return
        self._propose(ev.block, -1, out)

    # ------------------------------------------------------------------ rules

    def _progress(self, out: list[Effect]) -> None:
        while self.hs.step not in (Step.NEW_HEIGHT, Step.DECIDED) and (
            self._rule_decide(out)
            or self._rule_skip_round(out)
            or self._rule_proposal(out)
            or self._rule_polka(out)
            or self._rule_nil_polka(out)
            or self._rule_timers(out)
        ):
            pass
        if self.hs.step == Step.NEW_HEIGHT:
            self._rule_decide(out)

    def _rule_proposal(self, out: list[Effect]) -> bool:
        """L22 and L28: prevote for the round's proposal (or nil)."""
        hs = self.hs
        if hs.step != Step.PROPOSE or hs.round not in hs.proposals:
            return False
        p, block = hs.proposals[hs.round]
        vr = p.pol_round - 1
        if vr == -1:
            ok = hs.valid(block)
            if ok is None:
                return False
            good = ok and (hs.locked_round == -1 or hs.locked_hash == block.hash)
        elif vr < hs.round and hs.prevotes_of(vr).power_for(block.hash) >= self.vals.quorum:
            ok = hs.valid(block)
            if ok is None:
                return False
            good = ok and (hs.locked_round <= vr or hs.locked_hash == block.hash)
        else:
            return False
        self._vote(VoteType.PREVOTE, block.hash if good else b"", out)
        hs.step = Step.PREVOTE
        return True

    def _rule_polka(self, out: list[Effect]) -> bool:
        """L36: a proposal with 2f+1 prevotes locks (if still prevoting) and sets validValue."""
        hs = self.hs
        r = hs.round
        if hs.step < Step.PREVOTE or r in hs.l36_done or r not in hs.proposals:
            return False
        _, block = hs.proposals[r]
        if hs.prevotes_of(r).power_for(block.hash) < self.vals.quorum or not hs.valid(block):
            return False
        hs.l36_done.add(r)
        if hs.step == Step.PREVOTE:
            hs.locked_round, hs.locked_hash = r, block.hash
            pol = tuple(hs.prevotes_of(r).by_hash[block.hash])
            payload = LockRecord(block.data, pol).encode()
            self._vote(VoteType.PRECOMMIT, block.hash, out, payload)
            hs.step = Step.PRECOMMIT
        hs.valid_round, hs.valid_block = r, block
        return True

    def _rule_nil_polka(self, out: list[Effect]) -> bool:
        """L44: 2f+1 nil prevotes -> precommit nil."""
        hs = self.hs
        if hs.step != Step.PREVOTE:
            return False
        if hs.prevotes_of(hs.round).power_for(b"") < self.vals.quorum:
            return False
        self._vote(VoteType.PRECOMMIT, b"", out)
        hs.step = Step.PRECOMMIT
        return True

    def _rule_timers(self, out: list[Effect]) -> bool:
        """L34 and L47: 2f+1 votes of any kind arm the prevote/precommit timeouts."""
        hs = self.hs
        r, h, t = hs.round, self._height, self.timeouts
        fired = False
        if (
            hs.step == Step.PREVOTE
            and r not in hs.prevote_timer
            and hs.prevotes_of(r).total >= self.vals.quorum
        ):
            hs.prevote_timer.add(r)
            out.append(ScheduleTimeout(PREVOTE, h, r, t.prevote + r * t.prevote_delta))
            fired = True
        if r not in hs.precommit_timer and hs.precommits_of(r).total >= self.vals.quorum:
            hs.precommit_timer.add(r)
            out.append(ScheduleTimeout(PRECOMMIT, h, r, t.precommit + r * t.precommit_delta))
            fired = True
        return fired

    def _rule_skip_round(self, out: list[Effect]) -> bool:
        """L55: messages from more than 1/3 of the power in a later round -> go there."""
        best = -1
        for r, power in self.hs.sender_power.items():
            if r > self.hs.round and power * 3 > self.vals.total and r > best:
                best = r
        if best < 0:
            return False
        self._start_round(best, out)
        return True

    def _rule_decide(self, out: list[Effect]) -> bool:
        """L49: a block with 2f+1 precommits in any round is decided once it is valid."""
        hs = self.hs
        for r, block_hash in hs.decidable:
            for block in hs.candidates.get(block_hash, ()):
                if hs.valid(block):
                    self._decide(r, block, out)
                    return True
        return False

    def _decide(self, r: int, block: Block, out: list[Effect]) -> None:
        votes = sorted(self.hs.precommits[r].by_hash[block.hash], key=lambda v: v.validator)
        commit = Commit(
            self._height,
            r,
            block.hash,
            tuple(CommitSig(v.validator, v.signature) for v in votes),
        )
        self.catchup.remember(self._height, block, commit)
        self.hs.step = Step.DECIDED
        out.append(CommitBlock(self._height, block, commit))

    # ------------------------------------------------------------------ timeouts

    def _on_timeout(self, ev: TimeoutFired, out: list[Effect]) -> None:
        hs = self.hs
        if ev.kind == GOSSIP:
            hs.gossip_ticks += 1
            if not hs.idle() or hs.gossip_ticks % IDLE_STATUS_EVERY == 0:
                self._gossip(out)
            self.catchup.tick()
            out.append(ScheduleTimeout(GOSSIP, self._height, hs.round, self.timeouts.gossip))
            return
        if ev.height != self._height:
            return
        if ev.kind == COMMIT:
            if hs.step == Step.NEW_HEIGHT:
                self._enter_height(out)
            return
        if ev.kind == EMPTY:
            self._stop_waiting(out)
            return
        if ev.round != hs.round:
            return
        if ev.kind == PROPOSE and hs.step == Step.PROPOSE:  # L57
            self._vote(VoteType.PREVOTE, b"", out)
            hs.step = Step.PREVOTE
        elif ev.kind == PREVOTE and hs.step == Step.PREVOTE:  # L61
            self._vote(VoteType.PRECOMMIT, b"", out)
            hs.step = Step.PRECOMMIT
        elif ev.kind == PRECOMMIT and hs.step in (Step.PROPOSE, Step.PREVOTE, Step.PRECOMMIT):
            self._start_round(hs.round + 1, out)  # L65

    def _gossip(self, out: list[Effect]) -> None:
        """Re-send what peers may have lost: our status (so peers behind us can ask for
        decisions), the round's proposal (with the prevotes that justify its proof-of-lock
        round) and every vote of the round we hold, ours and relayed. Peers drop duplicates
        before verifying, so this costs bandwidth, not CPU; it is what makes a round finish
        after GST even when a restarted node forgot the votes it had sent."""
        hs = self.hs
        out.append(self.catchup.status(self._height, hs.round))
        if hs.step in (Step.NEW_HEIGHT, Step.DECIDED):
            return
        r = hs.round
        prop = hs.proposals.get(r)
        if prop is not None:
            p, block = prop
            out.append(Broadcast(Envelope(ProposalMsg(p, block.data)).encode()))
            vr = p.pol_round - 1
            if vr >= 0:
                for v in hs.prevotes_of(vr).by_hash.get(p.block_hash, ()):
                    out.append(Broadcast(Envelope(VoteMsg(v)).encode()))
        for vs in (hs.prevotes_of(r), hs.precommits_of(r)):
            for v in vs.votes.values():
                out.append(Broadcast(Envelope(VoteMsg(v)).encode()))

    # ------------------------------------------------------------------ messages

    def _on_message(
        self, peer: Peer, data: bytes, out: list[Effect], checked: ValidatorSet | None = None
    ) -> None:
        """``checked``: the set a buffered message was already verified against."""
        try:
            if len(data) <= DECODE_CACHE_MAX_BYTES:
                msg = _decode(data)
            else:
                msg = Envelope.decode(data).msg
        except CodecError:
            return
        if isinstance(msg, StatusMsg):
            self.catchup.on_status(peer, msg, self._height, self.hs, out)
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
            self.catchup.help_peer(peer, height, self._height, out)
            return
        if height > self._height:
            if height <= self._height + CATCHUP_BATCH:
                self._keep_for_later(peer, data, height, msg)
            return
        verified = checked is not None and checked == self.vals.vset
        if isinstance(msg, VoteMsg):
            self._add_vote(msg.vote, out, verified=verified)
        elif isinstance(msg, ProposalMsg):
            self._on_proposal(msg, out, verified=verified)
        else:
            self._on_decision(msg, out, verified=verified)

    def _expected_vals(self) -> HeightVals:
        """The validators expected beyond our height: the next height's, which the
        application already fixed (changes take effect two heights after the block)."""
        if self._next_vals is None:
            self._next_vals = HeightVals(*self._next)
        return self._next_vals

    def _keep_for_later(
        self, peer: Peer, data: bytes, height: int, msg: ProposalMsg | VoteMsg | DecisionMsg
    ) -> None:
        """Buffer a message for a future height once it is checked against the validators
        expected there (see ``consensus.tendermint.future``); anything else is dropped."""
        vals = self._expected_vals()
        if isinstance(msg, DecisionMsg):
            c = msg.commit
            if self.block_id(msg.block) != c.block_hash:
                return
            if not self.catchup.certified(c, vals, VoteSet()):
                return
            signer = b"decision" + height.to_bytes(8, "big")
        else:
            _, _, signer, sig, signed = signed_part(msg)
            member = vals.members.get(signer)
            if member is None or not self.verifier(member.public_key, sig, signed):
                return
        self.future.add(peer, data, height, signer, vals.vset)

    def _add_vote(self, vote: Vote, out: list[Effect], verified: bool = False) -> None:
        if vote.chain_id != self.chain_id or vote.height != self._height:
            return
        if not self._round_ok(vote.round):
            return
        member = self.vals.members.get(vote.validator)
        if member is None:
            return
        hs = self.hs
        vs = (
            hs.prevotes_of(vote.round)
            if vote.type == VoteType.PREVOTE
            else hs.precommits_of(vote.round)
        )
        if vs.has(vote):
            return
        if not verified and not self.verifier(member.public_key, vote.signature, vote.sign_bytes()):
            return
        prev = vs.votes.get(vote.validator)
        if prev is not None:
            key = (vote.validator, vote.round, vote.type)
            if key not in hs.reported:
                hs.reported.add(key)
                out.append(EvidenceFound(DuplicateVoteEvidence.of(prev, vote)))
            # Only votes for values we know can matter; this also bounds the memory an
            # equivocator can make us spend.
            if vote.block_hash and vote.block_hash not in hs.candidates:
                return
        vs.add(vote, member.power)
        hs.note_sender(vote.round, vote.validator, member.power)
        if (
            vote.type == VoteType.PRECOMMIT
            and vote.block_hash
            and vs.power_for(vote.block_hash) >= self.vals.quorum
            and (vote.round, vote.block_hash) not in hs.decidable
        ):
            hs.decidable.append((vote.round, vote.block_hash))

    def _on_proposal(self, msg: ProposalMsg, out: list[Effect], verified: bool = False) -> None:
        hs = self.hs
        p = msg.proposal
        if not self._round_ok(p.round) or p.pol_round > p.round:
            return
        if p.proposer != self.vals.proposer(p.round):
            return
        member = self.vals.members[p.proposer]
        prev = hs.proposals.get(p.round)
        if prev is not None and prev[0] == p:
            return
        if not verified and not self.verifier(member.public_key, p.signature, p.sign_bytes()):
            return
        if prev is not None:
            key = (p.proposer, p.round, 0)
            if key not in hs.reported and prev[0].sign_bytes() != p.sign_bytes():
                hs.reported.add(key)
                out.append(EvidenceFound(DuplicateProposalEvidence.of(prev[0], p)))
            return
        if self.block_id(msg.block) != p.block_hash:
            # Not the block the proposer signed (a relay paired its signature with other
            # bytes): junk, and the proposal is not taken as seen, so the genuine copy
            # still counts when it arrives.
            return
        block = Block(p.block_hash, msg.block)
        hs.proposals[p.round] = (p, block)
        hs.note_sender(p.round, p.proposer, member.power)
        self._add_candidate(p.round, block, out)

    def _on_decision(self, msg: DecisionMsg, out: list[Effect], verified: bool = False) -> None:
        """A peer's decision of our height: verify the certificate (and that the bytes
        are the certified block) before taking the block as a candidate; its precommits
        then decide it through L49."""
        c = msg.commit
        if not self._round_ok(c.round):
            return
        if not verified and not self.catchup.certified(
            c, self.vals, self.hs.precommits_of(c.round)
        ):
            return
        if self.block_id(msg.block) != c.block_hash:
            return
        self._add_candidate(c.round, Block(c.block_hash, msg.block), out)
        for sig in c.signatures:
            self._add_vote(c.vote_for(self.chain_id, sig), out, verified=True)

    # ------------------------------------------------------------------ heights

    def _on_committed(self, ev: BlockCommitted, out: list[Effect]) -> None:
        if ev.height != self._height or self.hs.step != Step.DECIDED:
            return
        _, self.last_commit = self.catchup.decisions[self._height]  # kept by _decide
        cur_set, cur_sched = self._next
        nset, nsched = next_schedule(cur_set, cur_sched, ev.validator_updates)
        self.vals = HeightVals(cur_set, cur_sched)
        self._next = (nset, nsched)
        self._next_vals = None
        self._height += 1
        self.hs = HeightState()
        out.append(Checkpoint(self._height - 1, self.checkpoint().encode()))
        if self.timeouts.commit > 0:
            out.append(ScheduleTimeout(COMMIT, self._height, 0, self.timeouts.commit))
        else:
            self._enter_height(out)
        for peer, data, height, checked in self.future.take():
            if height >= self._height:
                self._on_message(peer, data, out, checked)

    def checkpoint(self) -> TendermintCheckpoint:
        nset, nsched = self._next
        last = self.catchup.decision(self._height - 1)
        return TendermintCheckpoint(
            self._height,
            self.vals.record(),
            HeightVals(nset, nsched).record(),
            self.last_commit,
            last[0].data if last is not None else b"",
        )


def _recovery(
    data: bytes, height: int, vset: ValidatorSet, nset: ValidatorSet
) -> TendermintCheckpoint:
    """The checkpoint in ``data`` if it resumes exactly where the application is: at
    ``height``, with the sets the application's state has for that height and the next.
    The checkpoint may be a peer's: its sets are only ever compared, never adopted."""
    try:
        cp = TendermintCheckpoint.decode(data)
    except CodecError as e:
        raise RecoveryError(f"checkpoint does not decode: {e}") from e
    if cp.height != height:
        raise RecoveryError(f"checkpoint resumes at height {cp.height}, not {height}")
    if cp.current.validators != vset:
        raise RecoveryError(f"checkpoint's validator set for height {height} is not ours")
    if cp.next.validators != nset:
        raise RecoveryError(f"checkpoint's validator set for height {height + 1} is not ours")
    if cp.last_commit is not None and cp.last_commit.height != height - 1:
        raise RecoveryError(f"checkpoint's last commit is not for height {height - 1}")
    return cp


def _schedule(rec: ScheduleRecord) -> ProposerSchedule:
    try:
        return rec.schedule()
    except ValueError as e:
        raise RecoveryError(f"checkpoint's proposer schedule: {e}") from e


def _changes(old: ValidatorSet, new: ValidatorSet) -> tuple[Validator, ...]:
    """The validator updates that turn ``old`` into ``new`` (power 0 removes)."""
    before, after = old.by_address(), new.by_address()
    ups = [v for a, v in after.items() if before.get(a) != v]
    ups += [Validator(v.public_key, 0) for a, v in before.items() if a not in after]
    return tuple(sorted(ups, key=lambda v: v.address))
