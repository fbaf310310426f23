"""The Tendermint engine driven by hand, one event at a time: the rules of Algorithm 1
that safety rests on (locking, proof-of-lock), certificates, evidence, junk handling,
validator-set changes and recovery."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.engine import (
    BlockCommitted,
    Broadcast,
    Checkpoint,
    CommitBlock,
    Effect,
    EvidenceFound,
    MessageReceived,
    ProposalReady,
    ProposalVerdict,
    RequestProposal,
    RequestVerification,
    ScheduleTimeout,
    SendTo,
    Start,
    TimeoutFired,
    TxsAvailable,
)
from consensus.privval import MemoryStateStore
from consensus.tendermint.engine import Step, TendermintEngine
from consensus.tendermint.messages import DecisionMsg, Envelope, ProposalMsg, StatusMsg
from consensus.types import (
    DuplicateProposalEvidence,
    DuplicateVoteEvidence,
    Validator,
)
from tests.consensus.consensus_helpers import (
    CHAIN,
    KS,
    PC,
    PV,
    VSET,
    Node,
    block,
    broadcast_votes,
    commit_height,
    engine,
    keys,
    of_type,
    proposal_msg,
    valset,
    vote_msg,
)


def test_happy_path_commits_with_a_verifiable_certificate() -> None:
    n = Node()
    x = block("x")
    out = n.propose(0, x)
    assert [v.block_hash for v in broadcast_votes(out)] == [x.hash]
    out = n.votes(0, PV, x.hash)
    assert [(v.type, v.block_hash) for v in broadcast_votes(out)] == [(PC, x.hash)]
    out = n.votes(0, PC, x.hash)
    (commit,) = of_type(out, CommitBlock)
    assert commit.block == x and commit.height == 1
    VSET.verify_commit(CHAIN, commit.commit)
    out = n.e.handle(BlockCommitted(1, b"app"))
    assert n.e.height == 2 and of_type(out, Checkpoint)


def test_locked_validator_prevotes_nil_for_another_value_without_pol() -> None:
    n = Node()
    x, y = block("x"), block("y")
    n.propose(0, x)
    n.votes(0, PV, x.hash)  # polka for x: lock on x at round 0
    assert (n.e.hs.locked_round, n.e.hs.locked_hash) == (0, x.hash)
    n.next_round(0)
    assert n.e.round == 1
    out = n.propose(1, y)
    assert [v.block_hash for v in broadcast_votes(out)] == [b""]


def test_locked_validator_prevotes_its_locked_value_again() -> None:
    n = Node()
    x = block("x")
    n.propose(0, x)
    n.votes(0, PV, x.hash)
    n.next_round(0)
    out = n.propose(1, x, pol_round=0)
    assert [v.block_hash for v in broadcast_votes(out)] == [x.hash]


def test_newer_proof_of_lock_unlocks() -> None:
    n = Node()
    x, y = block("x"), block("y")
    n.propose(0, x)
    n.votes(0, PV, x.hash)  # locked on x at round 0
    n.next_round(0)
    n.e.handle(TimeoutFired("propose", 1, 1))  # prevote nil in round 1
    n.votes(1, PV, y.hash, 3)  # others saw a polka for y in round 1 (L28 input)
    n.e.handle(TimeoutFired("prevote", 1, 1))
    n.next_round(1)
    out = n.propose(2, y, pol_round=1)
    assert [v.block_hash for v in broadcast_votes(out)] == [y.hash]


def test_proof_of_lock_older_than_the_lock_is_not_enough() -> None:
    n = Node()
    x, y = block("x"), block("y")
    n.votes(0, PV, y.hash, 3)  # a polka for y in round 0 that we never locked on
    n.e.handle(TimeoutFired("propose", 1, 0))
    n.next_round(0)
    n.propose(1, x)
    n.votes(1, PV, x.hash)  # lock on x at round 1
    assert n.e.hs.locked_round == 1
    n.next_round(1)
    out = n.propose(2, y, pol_round=0)
    assert [v.block_hash for v in broadcast_votes(out)] == [b""]


def test_invalid_block_gets_a_nil_prevote_and_is_never_committed() -> None:
    n = Node()
    x = block("bad")
    out = n.propose(0, x, accept=False)
    assert [v.block_hash for v in broadcast_votes(out)] == [b""]
    out = n.votes(0, PC, x.hash, 3)
    assert not of_type(out, CommitBlock)


def test_equivocating_votes_become_evidence() -> None:
    n = Node()
    k = n.others[0]
    n.feed(vote_msg(k, 1, 0, PV, block("x").hash))
    out = n.feed(vote_msg(k, 1, 0, PV, block("y").hash))
    (ev,) = of_type(out, EvidenceFound)
    assert isinstance(ev.evidence, DuplicateVoteEvidence)
    assert ev.evidence.verify(CHAIN, k.public_key)
    assert DuplicateVoteEvidence.decode(ev.evidence.encode()) == ev.evidence
    # Reported once, not once per duplicate.
    assert not of_type(n.feed(vote_msg(k, 1, 0, PV, b"")), EvidenceFound)


def test_equivocating_proposals_become_evidence() -> None:
    n = Node()
    p = n.proposer(0)
    n.feed(proposal_msg(p, 1, 0, block("x")))
    out = n.feed(proposal_msg(p, 1, 0, block("y")))
    (ev,) = of_type(out, EvidenceFound)
    assert isinstance(ev.evidence, DuplicateProposalEvidence)
    assert ev.evidence.verify(CHAIN, p.public_key)


def test_wrong_proposer_bad_signature_and_outsiders_are_ignored() -> None:
    n = Node()
    x = block("x")
    wrong = n.proposer(1)
    assert wrong is not n.proposer(0)
    assert n.feed(proposal_msg(wrong, 1, 0, x)) == []
    outsider = keys(5)[4]
    assert n.feed(vote_msg(outsider, 1, 0, PV, x.hash)) == []
    forged = bytearray(vote_msg(n.others[0], 1, 0, PV, x.hash))
    forged[-3] ^= 1  # inside the signature
    assert n.feed(bytes(forged)) == []
    # nothing counted: no vote set for round 0, or an empty one
    assert (n.e.hs.prevotes[0].total if 0 in n.e.hs.prevotes else 0) == 0


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_junk_never_crashes(data: bytes) -> None:
    n = Node()
    assert n.feed(data) == []


def test_skips_to_a_round_with_more_than_a_third_of_the_power() -> None:
    n = Node()
    n.feed(vote_msg(n.others[0], 1, 5, PV, b""))
    assert n.e.round == 0  # one of four is not > 1/3
    n.feed(vote_msg(n.others[1], 1, 5, PV, b""))
    assert n.e.round == 5


def test_timeouts_grow_with_the_round() -> None:
    n = Node()
    first = [t for t in of_type(n.log, ScheduleTimeout) if t.kind == "propose"]
    out = n.next_round(0)
    second = [t for t in of_type(out, ScheduleTimeout) if t.kind == "propose"]
    assert second[0].duration > first[0].duration


def test_proposer_asks_the_app_and_proposes_its_block() -> None:
    probe = engine(KS[0], VSET)
    me = next(k for k in KS if k.address == probe.vals.proposer(0))
    e = engine(me, VSET)
    (req,) = of_type(e.handle(Start()), RequestProposal)
    assert req.last_commit is None
    out = e.handle(ProposalReady(1, 0, block("mine")))
    assert of_type(out, Broadcast)
    assert [v.block_hash for v in broadcast_votes(out)] == [block("mine").hash]


def test_the_next_height_starts_from_a_fresh_height_state() -> None:
    """Nothing of a decided height (its lock, valid value, votes, evidence bookkeeping)
    carries over: the per-height state is replaced whole."""
    n = Node()
    x = block("x")
    n.propose(0, x)
    n.votes(0, PV, x.hash)  # locked on x
    n.feed(vote_msg(n.others[2], 1, 0, PV, block("y").hash))
    n.feed(vote_msg(n.others[2], 1, 0, PV, block("z").hash))  # reported equivocation
    n.votes(0, PC, x.hash)
    old = n.e.hs
    assert old.locked_round == 0 and old.reported and old.step == Step.DECIDED
    n.e.handle(BlockCommitted(1, b"app"))
    hs = n.e.hs
    assert hs is not old and n.e.height == 2
    assert (hs.locked_round, hs.locked_hash, hs.valid_round, hs.valid_block) == (-1, b"", -1, None)
    assert not any(vs.votes for vs in (*hs.prevotes.values(), *hs.precommits.values()))
    assert not (hs.reported or hs.decidable or hs.candidates or hs.senders)
    assert hs.round == 0 and hs.step == Step.PROPOSE


def test_validator_updates_take_effect_two_heights_later() -> None:
    e = engine(KS[0], VSET)
    e.handle(Start())
    commit_height(e, (Validator(KS[1].public_key, 10),))  # finalized at height 1
    assert e.vals.power(KS[1].address) == 1  # height 2: unchanged
    commit_height(e)
    assert e.height == 3 and e.vals.power(KS[1].address) == 10  # height 3 = 1 + 2


def test_checkpoint_restores_validator_sets_and_proposers() -> None:
    store = MemoryStateStore()
    e = engine(KS[0], VSET, store)
    e.handle(Start())
    commit_height(e, (Validator(KS[2].public_key, 5),))
    commit_height(e)
    # The application supplies the sets in effect (the checkpoint must agree with them).
    restored = engine(
        KS[0],
        e.vals.vset,
        store,
        recovery=e.checkpoint().encode(),
        initial_height=e.height,
        next_validators=e._next[0],
    )
    assert restored.height == e.height
    assert restored.vals.vset == e.vals.vset != VSET
    assert [restored.vals.proposer(r) for r in range(6)] == [e.vals.proposer(r) for r in range(6)]
    assert restored.last_commit == e.last_commit
    # It can still hand a peer one height behind the decision it is missing.
    status = Envelope(StatusMsg(e.height - 1, 0)).encode()
    (send,) = of_type(restored.handle(MessageReceived("slow", status)), SendTo)
    msg = Envelope.decode(send.data).msg
    assert isinstance(msg, DecisionMsg) and msg.commit == e.last_commit
    assert msg.block == block(f"h{e.height - 1}").data


def test_restart_mid_height_keeps_the_lock_and_resends_votes() -> None:
    n = Node()
    x = block("x")
    n.propose(0, x)
    n.votes(0, PV, x.hash)  # precommitted x: locked
    again = engine(n.key, VSET, n.store)
    assert (again.hs.locked_round, again.hs.locked_hash) == (0, x.hash)
    # The locked block and its proof-of-lock survive too, so it can be re-proposed.
    assert (again.hs.valid_round, again.hs.valid_block) == (0, x)
    assert again.hs.prevotes[0].power_for(x.hash) >= VSET.quorum()
    out = again.handle(Start())
    sent = {(v.type, v.block_hash) for v in broadcast_votes(out)}
    assert {(PV, x.hash), (PC, x.hash)} <= sent


def test_restarted_locked_proposer_re_proposes_its_value_with_the_proof() -> None:
    n = Node()
    x = block("x")
    n.propose(0, x)
    n.votes(0, PV, x.hash)  # locked on x in round 0
    again = engine(n.key, VSET, n.store)
    again.handle(Start())
    r = next(r for r in range(1, 12) if again.vals.proposer(r) == n.key.address)
    out = again.handle(MessageReceived("p", vote_msg(n.others[0], 1, r, PV, b"")))
    out += again.handle(MessageReceived("p", vote_msg(n.others[1], 1, r, PV, b"")))
    assert again.round == r
    props = [Envelope.decode(b.data).msg for b in of_type(out, Broadcast)]
    (p,) = [m for m in props if isinstance(m, ProposalMsg)]
    assert p.proposal.block_hash == x.hash and p.proposal.pol_round == 1  # round 0, +1


@pytest.mark.parametrize("n", [4, 16])
def test_all_honest_engines_in_lockstep_agree(n: int) -> None:
    ks = keys(n)
    vs = valset(ks, list(range(1, n + 1)))
    es = [engine(k, vs) for k in ks]
    queue: list[tuple[int, object]] = [(i, Start()) for i in range(n)]
    decided: dict[int, list[bytes]] = {i: [] for i in range(n)}
    steps = 0
    while queue and steps < 200_000 and min(len(d) for d in decided.values()) < 3:
        steps += 1
        i, ev = queue.pop(0)
        for eff in es[i].handle(ev):  # type: ignore[arg-type]
            if isinstance(eff, Broadcast):
                queue += [(j, MessageReceived(str(i), eff.data)) for j in range(n) if j != i]
            elif isinstance(eff, RequestProposal):
                queue.append((i, ProposalReady(eff.height, eff.round, block(f"{eff.height}"))))
            elif isinstance(eff, RequestVerification):
                queue.append((i, ProposalVerdict(eff.height, eff.block, True)))
            elif isinstance(eff, CommitBlock):
                decided[i].append(eff.block.hash)
                queue.append((i, BlockCommitted(eff.height, b"")))
    assert all(d[:3] == decided[0][:3] for d in decided.values())
    assert len(decided[0]) >= 3


# ------------------------------------------------------------ waiting for transactions

WAIT = {"timeout_commit": 0, "timeout_empty_blocks": 5}


def _at_height_2(key_is_proposer_of_h2: bool) -> tuple[TendermintEngine, list[Effect]]:
    """An engine with ``timeout_empty_blocks`` that has just committed height 1; it is (or
    is not) the proposer of height 2's round 0. Returns it and the commit's effects."""
    probe = engine(KS[0], VSET, options=WAIT)
    probe.handle(Start())
    commit_height(probe)
    me = next(k for k in KS if (k.address == probe.vals.proposer(0)) == key_is_proposer_of_h2)
    e = engine(me, VSET, options=WAIT)
    e.handle(Start())
    return e, commit_height(e)


def test_idle_height_waits_for_transactions_before_round_zero() -> None:
    e, out = _at_height_2(key_is_proposer_of_h2=True)
    assert e.height == 2 and e.round == 0
    assert not of_type(out, RequestProposal)  # nothing to put in a block yet
    timers = [(t.kind, t.height, t.duration) for t in of_type(out, ScheduleTimeout)]
    assert ("empty", 2, 5.0) in timers and not any(k == "propose" for k, _, _ in timers)
    # Work arrives: round 0 starts at once, with its propose timer.
    out = e.handle(TxsAvailable())
    (req,) = of_type(out, RequestProposal)
    assert req.height == 2 and req.round == 0
    assert [t.kind for t in of_type(out, ScheduleTimeout)] == ["propose"]
    assert of_type(e.handle(TxsAvailable()), RequestProposal) == []  # asked once


def test_idle_height_cuts_an_empty_block_after_the_interval() -> None:
    e, _ = _at_height_2(key_is_proposer_of_h2=True)
    assert of_type(e.handle(TimeoutFired("empty", 1, 0)), RequestProposal) == []  # stale
    (req,) = of_type(e.handle(TimeoutFired("empty", 2, 0)), RequestProposal)
    assert req.height == 2


def test_waiting_validator_prevotes_a_proposal_at_once() -> None:
    """A proposer that did not wait (its mempool had txs) is not held up by validators
    still waiting: they are in round 0's propose step and prevote its valid block."""
    e, out = _at_height_2(key_is_proposer_of_h2=False)
    assert not any(t.kind == "propose" for t in of_type(out, ScheduleTimeout))
    x = block("with-txs")
    prop = next(k for k in KS if k.address == e.vals.proposer(0))
    out = e.handle(MessageReceived("p", proposal_msg(prop, 2, 0, x)))
    out += e.handle(ProposalVerdict(2, x, True))
    assert [(v.type, v.block_hash) for v in broadcast_votes(out)] == [(PV, x.hash)]
    # The wait's end changes nothing once the round is under way.
    assert broadcast_votes(e.handle(TimeoutFired("empty", 2, 0))) == []
    assert e.step == Step.PREVOTE


def test_work_reported_during_the_commit_timeout_skips_the_wait() -> None:
    opts = {"timeout_commit": 1, "timeout_empty_blocks": 5}
    probe = engine(KS[0], VSET, options=opts)
    me = next(k for k in KS if k.address == probe.vals.proposer(0))
    e = engine(me, VSET, options=opts)
    e.handle(Start())
    commit_height(e)
    assert e.step == Step.NEW_HEIGHT
    e.handle(TxsAvailable())
    out = e.handle(TimeoutFired("commit", 2, 0))
    assert not any(t.kind == "empty" for t in of_type(out, ScheduleTimeout))
    assert e.step == Step.PROPOSE and not e.hs.waiting_txs


def test_waiting_node_reannounces_its_status_every_fifth_gossip_tick_only() -> None:
    """While a height waits for work the node has nothing of the round to re-send: it
    re-announces its status on every fifth gossip tick, not every tick (each announcement
    is flooded through the mesh); once the round is under way every tick re-sends."""
    from consensus.tendermint.engine import IDLE_STATUS_EVERY

    def statuses(out: list[Effect]) -> int:
        return sum(
            isinstance(Envelope.decode(b.data).msg, StatusMsg) for b in of_type(out, Broadcast)
        )

    e, _ = _at_height_2(key_is_proposer_of_h2=False)
    assert e.hs.waiting_txs
    sent = [statuses(e.handle(TimeoutFired("gossip", 2, 0))) for _ in range(2 * IDLE_STATUS_EVERY)]
    assert sum(sent) == 2 and sent[IDLE_STATUS_EVERY - 1] == 1
    # Every tick still re-arms the timer, so gossip resumes at full rate after the wait.
    out = e.handle(TimeoutFired("gossip", 2, 0))
    assert [t.kind for t in of_type(out, ScheduleTimeout)] == ["gossip"]
    # A proposal arrives (its proposer did not wait) and is prevoted: every tick re-sends.
    x = block("with-txs")
    prop = next(k for k in KS if k.address == e.vals.proposer(0))
    e.handle(MessageReceived("p", proposal_msg(prop, 2, 0, x)))
    e.handle(ProposalVerdict(2, x, True))
    for _ in range(3):
        out = e.handle(TimeoutFired("gossip", 2, 0))
        assert statuses(out) == 1 and broadcast_votes(out)
