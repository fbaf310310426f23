"""Tendermint wire messages: one canonical envelope for proposals, votes and decisions.

A proposal travels with its block bytes (the engine treats them as opaque). A decision
(a block plus its commit certificate) is what a node sends a peer that is still working on
a height it already decided, so that peer can catch up without trusting the sender: the
certificate's precommits are verified one by one like any other vote.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

from consensus.types import MAX_VALIDATORS, Commit, Proposal, Vote
from node.core.codec import U32, U64, Bytes, Record, Seq

__all__ = [
    "MAX_BLOCK_BYTES",
    "DecisionMsg",
    "Envelope",
    "LockRecord",
    "ProposalMsg",
    "Signed",
    "StatusMsg",
    "VoteMsg",
    "signed_part",
]

MAX_BLOCK_BYTES = 8 << 20
BlockBytes = Annotated[bytes, Bytes(0, MAX_BLOCK_BYTES)]


class ProposalMsg(Record):
    TAG = "proposal"
    proposal: Proposal
    block: BlockBytes


class VoteMsg(Record):
    TAG = "vote"
    vote: Vote


class DecisionMsg(Record):
    TAG = "decision"
    commit: Commit
    block: BlockBytes


class StatusMsg(Record):
    """Unsigned "I am at height h, round r": lets peers that are ahead send decisions even
    when the lagging node has nothing it may sign (e.g. just after a restart)."""

    TAG = "status"
    height: U64
    round: U32


class Envelope(Record):
    MAX_SIZE = MAX_BLOCK_BYTES + (256 << 10)
    msg: ProposalMsg | VoteMsg | DecisionMsg | StatusMsg


class LockRecord(Record):
    """Persisted with a locking precommit (through the signer): the locked block and the
    prevotes that justified it, so a validator restarted while locked can re-propose the
    value and prove the lock instead of blocking the others forever."""

    block: BlockBytes
    pol: Annotated[tuple[Vote, ...], Seq(MAX_VALIDATORS)]


class Signed(NamedTuple):
    """The signed part of a proposal or vote: what a signature check needs."""

    chain_id: str
    height: int
    signer: bytes
    signature: bytes
    sign_bytes: bytes


def signed_part(msg: ProposalMsg | VoteMsg) -> Signed:
    if isinstance(msg, ProposalMsg):
        p = msg.proposal
        return Signed(p.chain_id, p.height, p.proposer, p.signature, p.sign_bytes())
    v = msg.vote
    return Signed(v.chain_id, v.height, v.validator, v.signature, v.sign_bytes())
