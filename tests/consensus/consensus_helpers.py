"""Builders for driving a single engine by hand: keys, signed messages, effect filters,
and ``Node``: one Tendermint engine among four validators whose other keys the test holds."""

from __future__ import annotations

from typing import Any, TypeVar

from consensus.block import Block
from consensus.engine import (
    BlockCommitted,
    Broadcast,
    Effect,
    MessageReceived,
    ProposalReady,
    ProposalVerdict,
    RequestVerification,
    Start,
    TimeoutFired,
)
from consensus.privval import GuardedSigner, MemoryStateStore
from consensus.registry import EngineConfig
from consensus.sim.network import UnguardedSigner
from consensus.tendermint.engine import Step, TendermintEngine
from consensus.tendermint.messages import Envelope, ProposalMsg, VoteMsg
from consensus.types import Validator, ValidatorSet, Vote, VoteType
from node.core.codec import sha256
from node.core.crypto import PrivateKey

CHAIN = "test-chain"
E = TypeVar("E")

NO_WAIT: dict[str, Any] = {"timeout_commit": 0}


def keys(n: int) -> list[PrivateKey]:
    return [PrivateKey.from_secret(f"tm-test-{i}") for i in range(n)]


def valset(ks: list[PrivateKey], powers: list[int] | None = None) -> ValidatorSet:
    powers = powers or [1] * len(ks)
    return ValidatorSet.of([Validator(k.public_key, p) for k, p in zip(ks, powers, strict=True)])


def engine(
    key: PrivateKey,
    vset: ValidatorSet,
    store: MemoryStateStore | None = None,
    recovery: bytes | None = None,
    options: dict[str, Any] | None = None,
    *,
    initial_height: int = 1,
    next_validators: ValidatorSet | None = None,
) -> TendermintEngine:
    """An engine of ``key`` that the application says is at ``initial_height`` with
    ``vset`` in effect (and ``next_validators`` at the height after, if that differs)."""
    signer = GuardedSigner(key, store or MemoryStateStore())
    opts = NO_WAIT if options is None else options
    return TendermintEngine(
        EngineConfig(
            CHAIN,
            signer,
            vset,
            initial_height=initial_height,
            next_validators=next_validators,
            recovery=recovery,
            options=opts,
        )
    )


def block(tag: str) -> Block:
    data = f"block-{tag}".encode()
    return Block(sha256(data), data)


def vote_msg(key: PrivateKey, h: int, r: int, t: VoteType, block_hash: bytes) -> bytes:
    v = UnguardedSigner(key).sign_vote(CHAIN, h, r, t, block_hash)
    return Envelope(VoteMsg(v)).encode()


def proposal_msg(key: PrivateKey, h: int, r: int, b: Block, pol_round: int = -1) -> bytes:
    p = UnguardedSigner(key).sign_proposal(CHAIN, h, r, pol_round + 1, b.hash)
    return Envelope(ProposalMsg(p, b.data)).encode()


def of_type(effects: list[Effect], cls: type[E]) -> list[E]:
    return [e for e in effects if isinstance(e, cls)]


def broadcast_votes(effects: list[Effect]) -> list[Vote]:
    out = []
    for e in of_type(effects, Broadcast):
        msg = Envelope.decode(e.data).msg
        if isinstance(msg, VoteMsg):
            out.append(msg.vote)
    return out


PV, PC = VoteType.PREVOTE, VoteType.PRECOMMIT
KS = keys(4)
VSET = valset(KS)


class Node:
    """One engine under test plus the other three validators' keys."""

    def __init__(self, store: MemoryStateStore | None = None) -> None:
        probe = engine(KS[0], VSET)
        proposers = {probe.vals.proposer(r) for r in range(3)}
        me = next(k for k in KS if k.address not in proposers)
        self.key = me
        self.others = [k for k in KS if k is not me]
        self.store = store or MemoryStateStore()
        self.e: TendermintEngine = engine(me, VSET, self.store)
        self.log = self.e.handle(Start())

    def key_of(self, address: bytes):
        return next(k for k in KS if k.address == address)

    def proposer(self, r: int):
        return self.key_of(self.e.vals.proposer(r))

    def feed(self, data: bytes) -> list:
        return self.e.handle(MessageReceived("peer", data))

    def propose(self, r: int, b: Block, pol_round: int = -1, accept: bool = True) -> list:
        out = self.feed(proposal_msg(self.proposer(r), 1, r, b, pol_round))
        if not of_type(out, RequestVerification):  # these bytes were verified before
            return out
        return out + self.e.handle(ProposalVerdict(1, b, accept))

    def votes(self, r: int, t: VoteType, h: bytes, n: int = 2) -> list:
        out = []
        for k in self.others[:n]:
            out += self.feed(vote_msg(k, 1, r, t, h))
        return out

    def next_round(self, r: int) -> list:
        out = self.votes(r, PC, b"", 3)
        return out + self.e.handle(TimeoutFired("precommit", 1, r))


def commit_height(e: TendermintEngine, updates: tuple[Validator, ...] = ()) -> list[Effect]:
    """Decide the current height of ``e`` with the other validators' votes; return the
    effects of its commit."""
    h = e.height
    r = e.round
    x = block(f"h{h}")
    prop = next(k for k in KS if k.address == e.vals.proposer(r))
    if prop.address == e.me:
        e.handle(ProposalReady(h, r, x))
    else:
        e.handle(MessageReceived("p", proposal_msg(prop, h, r, x)))
        e.handle(ProposalVerdict(h, x, True))
    for k in KS:
        if k.address != e.me and k.address in e.vals.members:
            e.handle(MessageReceived("p", vote_msg(k, h, r, PV, x.hash)))
            e.handle(MessageReceived("p", vote_msg(k, h, r, PC, x.hash)))
    assert e.step == Step.DECIDED
    return e.handle(BlockCommitted(h, b"app", updates))
