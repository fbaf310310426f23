"""Catch-up beside the algorithm: decisions for peers behind us, the round a stuck peer
missed, and the certificate check on decisions we receive."""

from __future__ import annotations

from consensus.engine import (
    BlockCommitted,
    CommitBlock,
    Effect,
    MessageReceived,
    ProposalVerdict,
    RequestVerification,
    SendTo,
    Start,
    TimeoutFired,
)
from consensus.tendermint.catchup import (
    CATCHUP_BATCH,
    GLOBAL_REPLY_BYTES_PER_TICK,
    KEEP_DECISIONS,
    MAX_TRACKED_REPLIES,
    PEER_REPLY_BYTES_PER_TICK,
    REPLY_AGAIN_TICKS,
    Catchup,
)
from consensus.tendermint.engine import TendermintEngine
from consensus.tendermint.height import VoteSet
from consensus.tendermint.messages import DecisionMsg, Envelope, ProposalMsg, StatusMsg, VoteMsg
from consensus.types import Commit, CommitSig
from node.core.crypto import verify
from tests.consensus.consensus_helpers import (
    CHAIN,
    KS,
    PC,
    PV,
    VSET,
    Node,
    block,
    commit_height,
    engine,
    keys,
    of_type,
)


def _decided_node() -> tuple[Node, Commit]:
    """A node that decided block x at height 1 and moved on to height 2."""
    n = Node()
    x = block("x")
    n.propose(0, x)
    n.votes(0, PV, x.hash)
    (c,) = of_type(n.votes(0, PC, x.hash), CommitBlock)
    n.e.handle(BlockCommitted(1, b"app"))
    return n, c.commit


def _status(height: int, round: int) -> bytes:
    return Envelope(StatusMsg(height, round)).encode()


def _sent(out: list[Effect]) -> list[object]:
    return [Envelope.decode(s.data).msg for s in of_type(out, SendTo)]


def test_lagging_peer_gets_the_decision_and_catches_up() -> None:
    n, _ = _decided_node()
    x = block("x")
    out = n.e.handle(MessageReceived("slow", Envelope(StatusMsg(1, 0)).encode()))
    (send,) = of_type(out, SendTo)
    decision = Envelope.decode(send.data).msg
    assert isinstance(decision, DecisionMsg) and decision.commit.block_hash == x.hash
    # A fresh node at height 1 adopts it after verifying certificate and block.
    fresh = engine(KS[0], VSET)
    fresh.handle(Start())
    out = fresh.handle(MessageReceived("fast", send.data))
    (req,) = of_type(out, RequestVerification)
    out = fresh.handle(ProposalVerdict(1, req.block, True))
    assert of_type(out, CommitBlock)[0].block == x


def test_forged_decision_is_rejected() -> None:
    n, _ = _decided_node()
    send = of_type(n.e.handle(MessageReceived("s", Envelope(StatusMsg(1, 0)).encode())), SendTo)
    msg = Envelope.decode(send[0].data).msg
    assert isinstance(msg, DecisionMsg)
    short = msg.replace(commit=msg.commit.replace(signatures=msg.commit.signatures[:2]))
    fresh = engine(KS[0], VSET)
    fresh.handle(Start())
    assert not of_type(
        fresh.handle(MessageReceived("f", Envelope(short).encode())), RequestVerification
    )


def _tick(e: TendermintEngine) -> None:
    e.handle(TimeoutFired("gossip", e.height, e.round))


def test_a_peer_far_behind_gets_a_batch_and_no_copy_for_a_while() -> None:
    e = engine(KS[0], VSET)
    e.handle(Start())
    for _ in range(CATCHUP_BATCH + 3):
        commit_height(e)
    sent = _sent(e.handle(MessageReceived("slow", _status(1, 0))))
    assert [m.commit.height for m in sent if isinstance(m, DecisionMsg)] == list(
        range(1, CATCHUP_BATCH + 1)
    )
    # Its status repeated on every gossip tick gets no second copy for REPLY_AGAIN_TICKS
    # ticks (the dedupe does not reset per tick),
    for _ in range(REPLY_AGAIN_TICKS - 1):
        _tick(e)
        assert _sent(e.handle(MessageReceived("slow", _status(1, 0)))) == []
    # another peer is answered on its own,
    assert len(_sent(e.handle(MessageReceived("other", _status(1, 0))))) == CATCHUP_BATCH
    # and then the slow peer is answered again (its copy may have been lost).
    _tick(e)
    assert len(_sent(e.handle(MessageReceived("slow", _status(1, 0))))) == CATCHUP_BATCH
    # Nothing is sent for our own height or beyond.
    assert _sent(e.handle(MessageReceived("x", _status(e.height, 0)))) == []


def test_status_floods_get_answers_bounded_in_bytes_per_peer_and_overall() -> None:
    e = engine(KS[0], VSET)
    e.handle(Start())
    for _ in range(CATCHUP_BATCH + 3):
        commit_height(e)

    def answer(peer: str, height: int) -> int:
        return sum(
            len(s.data)
            for s in of_type(e.handle(MessageReceived(peer, _status(height, 0))), SendTo)
        )

    # One peer asking for every height it could: at most its budget per tick.
    one = sum(answer("greedy", h) for h in range(1, CATCHUP_BATCH + 3))
    assert 0 < one <= PEER_REPLY_BYTES_PER_TICK
    # Thousands of made-up peer IDs in one tick: at most the global budget,
    total = sum(answer(f"sybil-{i}", 1) for i in range(3000))
    assert total <= GLOBAL_REPLY_BYTES_PER_TICK
    # and the memory of whom we answered stays bounded.
    assert len(e.catchup.replied) <= MAX_TRACKED_REPLIES
    # The budget refills with the next tick: an honest peer behind is answered.
    _tick(e)
    assert answer("honest", 1) > 0


def test_only_the_newest_decisions_are_kept_and_replies_stop_below_our_height() -> None:
    _, commit = _decided_node()
    c = Catchup(CHAIN, verify)
    b = block("kept")
    for h in range(1, KEEP_DECISIONS + 6):
        c.remember(h, b, commit)
    assert c.decision(5) is None and c.decision(6) is not None
    assert len(c.decisions) == KEEP_DECISIONS
    out: list[Effect] = []
    c.help_peer("p", 5, KEEP_DECISIONS + 6, out)
    assert out == []  # forgotten: the node's block sync has to serve this peer
    c.help_peer("p", KEEP_DECISIONS + 3, KEEP_DECISIONS + 5, out)
    assert len(out) == 2  # heights H+3 and H+4, not our own (undecided) height


def test_a_peer_in_an_earlier_round_gets_that_rounds_proposal_and_votes() -> None:
    n = Node()
    x = block("x")
    n.propose(0, x)
    n.votes(0, PV, x.hash, 1)
    n.next_round(0)
    assert n.e.round == 1
    sent = _sent(n.e.handle(MessageReceived("stuck", _status(1, 0))))
    (prop,) = [m for m in sent if isinstance(m, ProposalMsg)]
    assert prop.proposal.round == 0 and prop.block == x.data
    votes = [m.vote for m in sent if isinstance(m, VoteMsg)]
    assert {v.round for v in votes} == {0}
    # ours and the others': the prevotes for x (1 + ours) and the three nil precommits
    assert sum(v.type == PV for v in votes) == 2 and sum(v.type == PC for v in votes) == 3
    # A peer in our round (or ahead) needs nothing from us.
    assert _sent(n.e.handle(MessageReceived("peer", _status(1, 1)))) == []


def test_a_certificate_needs_distinct_members_with_two_thirds_of_the_power() -> None:
    n, commit = _decided_node()
    calls: list[bytes] = []

    def counting(pk: bytes, sig: bytes, msg: bytes) -> bool:
        calls.append(sig)
        return verify(pk, sig, msg)

    c = Catchup(CHAIN, counting)
    vals = n.e.vals  # height 2's set: the same four validators
    sigs = commit.signatures
    assert len(sigs) >= 3 and c.certified(commit, vals, VoteSet())
    assert len(calls) == len(sigs)
    outsider = keys(5)[4]
    bad = {
        "below quorum": sigs[:2],
        "duplicate": (sigs[0], sigs[0], sigs[1]),
        "non-member": (*sigs[:2], CommitSig(outsider.address, sigs[2].signature)),
        "bad signature": (*sigs[:2], CommitSig(sigs[2].validator, bytes(64))),
    }
    for why, s in bad.items():
        assert not c.certified(commit.replace(signatures=s), vals, VoteSet()), why
    # Precommits already verified on arrival are not verified again.
    known = VoteSet()
    for sig in sigs:
        known.add(commit.vote_for(CHAIN, sig), 1)
    calls.clear()
    assert c.certified(commit, vals, known) and calls == []
