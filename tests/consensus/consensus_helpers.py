"""Builders for driving a single engine by hand: keys, signed messages, effect filters."""

from __future__ import annotations

from typing import Any, TypeVar

from consensus.block import Block
from consensus.engine import Broadcast, Effect
from consensus.privval import GuardedSigner, MemoryStateStore
from consensus.registry import EngineConfig
from consensus.sim.network import UnguardedSigner
from consensus.tendermint.engine import TendermintEngine
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
) -> TendermintEngine:
    signer = GuardedSigner(key, store or MemoryStateStore())
    opts = NO_WAIT if options is None else options
    return TendermintEngine(EngineConfig(CHAIN, signer, vset, recovery=recovery, options=opts))


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
