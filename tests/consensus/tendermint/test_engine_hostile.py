"""The engine against hostile input (issue 15): a peer's checkpoint cannot choose the
validator set, junk bytes paired with a genuine signed proposal cannot hide the real
block, a node that is no validator signs nothing, and messages for future heights are
only buffered from known validators, within a byte budget."""

from __future__ import annotations

import pytest

from consensus.engine import (
    CommitBlock,
    MessageReceived,
    ProposalVerdict,
    RecoveryError,
    RequestVerification,
    Start,
    TimeoutFired,
)
from consensus.sim.network import UnguardedSigner
from consensus.tendermint.engine import TendermintEngine
from consensus.tendermint.messages import Envelope, ProposalMsg
from consensus.tendermint.proposer import ProposerSchedule
from consensus.tendermint.valset import HeightVals, TendermintCheckpoint
from consensus.types import Validator
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

OUTSIDERS = keys(8)[4:]


def _forged_checkpoint(height: int) -> bytes:
    """A checkpoint for ``height`` whose validator sets are the attacker's own keys."""
    fake = valset(OUTSIDERS[:3])
    sched = ProposerSchedule.new([(v.address, v.power) for v in fake.validators])
    rec = HeightVals(fake, sched).record()
    return TendermintCheckpoint(height, rec, rec, None, b"").encode()


def test_a_checkpoint_cannot_choose_the_validator_set() -> None:
    # The application says VSET is in effect: a checkpoint naming other keys is refused
    # with a typed error. (Before: the engine took the checkpoint's set and committed a
    # block on one proposal and precommits from three keys that are no validators.)
    with pytest.raises(RecoveryError, match="validator set"):
        engine(KS[0], VSET, recovery=_forged_checkpoint(1))
    with pytest.raises(RecoveryError):
        engine(KS[0], VSET, recovery=b"\x93junk")


def test_a_checkpoint_must_be_for_the_height_the_application_is_at() -> None:
    e = engine(KS[0], VSET)
    e.handle(Start())
    commit_height(e)
    cp = e.checkpoint().encode()  # resumes at height 2
    with pytest.raises(RecoveryError, match="height"):
        engine(KS[0], VSET, recovery=cp)  # the application says height 1
    again = engine(KS[0], VSET, recovery=cp, initial_height=2)
    assert again.height == 2


def test_a_checkpoint_must_carry_the_next_set_the_application_knows() -> None:
    e = engine(KS[0], VSET)
    e.handle(Start())
    commit_height(e, (Validator(KS[2].public_key, 5),))  # in effect from height 3
    cp = e.checkpoint().encode()
    changed = valset(KS, [1, 1, 5, 1])
    with pytest.raises(RecoveryError, match="validator set"):
        engine(KS[0], VSET, recovery=cp, initial_height=2)  # the next set is not VSET
    again = engine(KS[0], VSET, recovery=cp, initial_height=2, next_validators=changed)
    assert again.height == 2 and again.vals.vset == VSET


def test_junk_bytes_with_a_genuine_signed_proposal_do_not_hide_the_real_block() -> None:
    n = Node()
    x = block("x")
    signer = UnguardedSigner(n.proposer(0))
    p = signer.sign_proposal(CHAIN, 1, 0, 0, x.hash)
    # A relay forwards the genuine signed proposal with other bytes first: dropped.
    junk = Envelope(ProposalMsg(p, b"not the block")).encode()
    assert not of_type(n.feed(junk), RequestVerification)
    assert 0 not in n.e.hs.proposals
    # The genuine copy still gets through and is prevoted.
    (req,) = of_type(n.feed(Envelope(ProposalMsg(p, x.data)).encode()), RequestVerification)
    out = n.e.handle(ProposalVerdict(1, req.block, True))
    assert [v.block_hash for v in broadcast_votes(out)] == [x.hash]


def test_a_node_that_is_no_validator_signs_no_votes() -> None:
    watcher = OUTSIDERS[0]
    e = engine(watcher, VSET)
    out = e.handle(Start())
    x = block("x")
    prop = next(k for k in KS if k.address == e.vals.proposer(0))
    out += e.handle(MessageReceived("p", proposal_msg(prop, 1, 0, x)))
    out += e.handle(ProposalVerdict(1, x, True))
    out += e.handle(TimeoutFired("propose", 1, 0))
    for k in KS[:3]:
        out += e.handle(MessageReceived("p", vote_msg(k, 1, 0, PV, x.hash)))
    out += e.handle(TimeoutFired("prevote", 1, 0))
    assert broadcast_votes(out) == []
    # It still follows the chain: the validators' precommits decide the block for it.
    for k in KS[:3]:
        out += e.handle(MessageReceived("p", vote_msg(k, 1, 0, PC, x.hash)))
    assert [c.block.hash for c in of_type(out, CommitBlock)] == [x.hash]


def _buffered(e: TendermintEngine) -> tuple[int, int]:
    """Messages and bytes held for future heights."""
    return len(e.future), sum(len(data) for _, data, _ in e.future)


def test_future_heights_buffer_only_verified_messages_of_known_validators() -> None:
    e = engine(KS[0], VSET)
    e.handle(Start())
    big = block("x" * (1 << 20))
    # Outsiders' proposals and votes for the next height are not kept,
    for k in OUTSIDERS:
        e.handle(MessageReceived("o", proposal_msg(k, 2, 0, big)))
        e.handle(MessageReceived("o", vote_msg(k, 2, 0, PV, big.hash)))
    # nor is a validator's vote with a forged signature,
    forged = bytearray(vote_msg(KS[1], 2, 0, PV, big.hash))
    forged[-3] ^= 1
    e.handle(MessageReceived("o", bytes(forged)))
    assert _buffered(e) == (0, 0)
    # but a validator's signed vote for the next height is.
    e.handle(MessageReceived("v", vote_msg(KS[1], 2, 0, PV, big.hash)))
    assert _buffered(e)[0] == 1


def test_one_validator_cannot_fill_the_future_buffer() -> None:
    e = engine(KS[0], VSET)
    e.handle(Start())
    for i in range(40):  # 40 MiB of signed proposals for the next heights
        b = block(f"{i}-" + "y" * (1 << 20))
        e.handle(MessageReceived("v", proposal_msg(KS[1], 2 + i % 7, i, b)))
    count, size = _buffered(e)
    assert size < 10 << 20
    # The other validators' messages still fit.
    e.handle(MessageReceived("w", vote_msg(KS[2], 2, 0, PV, block("z").hash)))
    assert _buffered(e)[0] == count + 1


def test_buffered_messages_are_used_at_the_next_height() -> None:
    e = engine(KS[0], VSET)
    e.handle(Start())
    x = block("h2")
    for k in KS[1:]:
        e.handle(MessageReceived("v", vote_msg(k, 2, 0, PC, x.hash)))
    assert _buffered(e)[0] == 3
    commit_height(e)
    assert e.height == 2 and e.hs.precommits[0].power_for(x.hash) == 3
    assert _buffered(e) == (0, 0)
