"""Consensus wire types shared by the engines, the ledger and the node.

Votes, proposals, commit certificates, validator sets and double-sign evidence are
engine-neutral records: the ledger needs them to verify a block's last commit and to
slash on evidence, and any engine (Tendermint today, chain-based PoS later) signs the
same ``VoteSignBytes`` so one validator key and one evidence format serve all engines.

Every signature covers the chain id, so a vote from one chain is worthless on another.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, TypeVar

from node.core.codec import (
    U8,
    U32,
    U64,
    Bytes,
    Bytes20,
    Bytes32,
    Bytes64,
    CodecError,
    Record,
    Seq,
    Str,
)
from node.core.crypto import address_of, verify

ChainId = Annotated[str, Str(64, "abcdefghijklmnopqrstuvwxyz0123456789-_.")]
# An empty block hash means "nil" (a vote for no block).
MaybeHash = Annotated[bytes, Bytes(0, 32)]
MAX_VALIDATORS = 1024
R = TypeVar("R", bound=Record)


class VoteType(IntEnum):
    PREVOTE = 1
    PRECOMMIT = 2


class VoteSignBytes(Record):
    """What a validator signs for a vote: chain id, height, round, type and block id."""

    chain_id: ChainId
    height: U64
    round: U32
    type: U8
    block_hash: MaybeHash


class Vote(Record):
    chain_id: ChainId
    height: U64
    round: U32
    type: U8
    block_hash: MaybeHash
    validator: Bytes20
    signature: Bytes64

    def _check(self, path: str) -> None:
        if self.type not in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            raise CodecError(f"unknown vote type {self.type}", path)

    def sign_bytes(self) -> bytes:
        return VoteSignBytes(
            self.chain_id, self.height, self.round, self.type, self.block_hash
        ).encode()

    def verify(self, public_key: bytes) -> bool:
        """True when signed by ``public_key`` and that key is this vote's validator."""
        return address_of(public_key) == self.validator and verify(
            public_key, self.signature, self.sign_bytes()
        )

    @property
    def is_nil(self) -> bool:
        return not self.block_hash


class ProposalSignBytes(Record):
    chain_id: ChainId
    height: U64
    round: U32
    pol_round: U32  # proof-of-lock round + 1 (0 = none), so it stays unsigned
    block_hash: Bytes32


class Proposal(Record):
    """A proposer's signed claim that ``block_hash`` is its value for (height, round)."""

    chain_id: ChainId
    height: U64
    round: U32
    pol_round: U32
    block_hash: Bytes32
    proposer: Bytes20
    signature: Bytes64

    def sign_bytes(self) -> bytes:
        return ProposalSignBytes(
            self.chain_id, self.height, self.round, self.pol_round, self.block_hash
        ).encode()

    def verify(self, public_key: bytes) -> bool:
        return address_of(public_key) == self.proposer and verify(
            public_key, self.signature, self.sign_bytes()
        )


class CommitSig(Record):
    validator: Bytes20
    signature: Bytes64


class Commit(Record):
    """The precommits of more than 2/3 of the voting power for one block.

    It is carried as the next block's ``last_commit``, which is how a syncing node checks a
    block it fetched from an untrusted peer.
    """

    height: U64
    round: U32
    block_hash: Bytes32
    signatures: Annotated[tuple[CommitSig, ...], Seq(MAX_VALIDATORS)]

    def vote_for(self, chain_id: str, sig: CommitSig) -> Vote:
        return Vote(
            chain_id,
            self.height,
            self.round,
            int(VoteType.PRECOMMIT),  # a plain int: the codec does not encode IntEnum
            self.block_hash,
            sig.validator,
            sig.signature,
        )


class Validator(Record):
    public_key: Bytes32
    power: U64

    @property
    def address(self) -> bytes:
        return address_of(self.public_key)


class ValidatorSet(Record):
    """Validators sorted by address; the order is part of the hash so it is canonical."""

    validators: Annotated[tuple[Validator, ...], Seq(MAX_VALIDATORS)]

    def _check(self, path: str) -> None:
        addrs = [v.address for v in self.validators]
        if addrs != sorted(set(addrs)):
            raise CodecError("validators must be sorted by address without duplicates", path)
        if any(v.power == 0 for v in self.validators):
            raise CodecError("validators with zero power must be removed", path)

    @classmethod
    def of(cls, validators: list[Validator] | tuple[Validator, ...]) -> ValidatorSet:
        vs = cls(tuple(sorted((v for v in validators if v.power > 0), key=lambda v: v.address)))
        vs._check("")
        return vs

    @property
    def total_power(self) -> int:
        return sum(v.power for v in self.validators)

    def by_address(self) -> dict[bytes, Validator]:
        return {v.address: v for v in self.validators}

    def quorum(self) -> int:
        """The smallest power that is more than 2/3 of the total."""
        return self.total_power * 2 // 3 + 1

    def verify_commit(self, chain_id: str, commit: Commit) -> None:
        """Raise CommitError unless ``commit`` carries valid precommits of > 2/3 power."""
        members = self.by_address()
        seen: set[bytes] = set()
        power = 0
        for sig in commit.signatures:
            val = members.get(sig.validator)
            if val is None:
                raise CommitError(f"signature from non-validator {sig.validator.hex()}")
            if sig.validator in seen:
                raise CommitError(f"duplicate signature from {sig.validator.hex()}")
            seen.add(sig.validator)
            if not commit.vote_for(chain_id, sig).verify(val.public_key):
                raise CommitError(f"bad precommit signature from {sig.validator.hex()}")
            power += val.power
        if power < self.quorum():
            raise CommitError(f"commit power {power} below quorum {self.quorum()}")


class CommitError(ValueError):
    """A commit certificate does not prove a decision."""


def _by_hash(a: R, b: R) -> tuple[R, R]:
    """Evidence holds its two messages in hash order, so one offence has one encoding."""
    return (a, b) if a.hash < b.hash else (b, a)


class DuplicateVoteEvidence(Record):
    """Two different votes signed by one validator for one (height, round, type)."""

    vote_a: Vote
    vote_b: Vote

    def _check(self, path: str) -> None:
        a, b = self.vote_a, self.vote_b
        if (a.chain_id, a.height, a.round, a.type, a.validator) != (
            b.chain_id,
            b.height,
            b.round,
            b.type,
            b.validator,
        ):
            raise CodecError("votes are not for the same height/round/type/validator", path)
        if a.block_hash == b.block_hash:
            raise CodecError("votes do not conflict", path)
        if a.hash >= b.hash:
            raise CodecError("votes must be ordered by hash (vote_a < vote_b)", path)

    @classmethod
    def of(cls, a: Vote, b: Vote) -> DuplicateVoteEvidence:
        ev = cls(*_by_hash(a, b))
        ev._check("")
        return ev

    @property
    def validator(self) -> bytes:
        return self.vote_a.validator

    @property
    def height(self) -> int:
        return self.vote_a.height

    def verify(self, chain_id: str, public_key: bytes) -> bool:
        """True when both votes are on ``chain_id`` and validly signed by ``public_key``."""
        return (
            self.vote_a.chain_id == chain_id
            and self.vote_a.verify(public_key)
            and self.vote_b.verify(public_key)
        )


class DuplicateProposalEvidence(Record):
    """Two different proposals signed by one proposer for one (height, round)."""

    proposal_a: Proposal
    proposal_b: Proposal

    def _check(self, path: str) -> None:
        a, b = self.proposal_a, self.proposal_b
        if (a.chain_id, a.height, a.round, a.proposer) != (
            b.chain_id,
            b.height,
            b.round,
            b.proposer,
        ):
            raise CodecError("proposals are not for the same height/round/proposer", path)
        if a.sign_bytes() == b.sign_bytes():
            raise CodecError("proposals do not conflict", path)
        if a.hash >= b.hash:
            raise CodecError("proposals must be ordered by hash (proposal_a < proposal_b)", path)

    @classmethod
    def of(cls, a: Proposal, b: Proposal) -> DuplicateProposalEvidence:
        ev = cls(*_by_hash(a, b))
        ev._check("")
        return ev

    @property
    def validator(self) -> bytes:
        return self.proposal_a.proposer

    @property
    def height(self) -> int:
        return self.proposal_a.height

    def verify(self, chain_id: str, public_key: bytes) -> bool:
        """True when both proposals are on ``chain_id`` and validly signed by ``public_key``."""
        return (
            self.proposal_a.chain_id == chain_id
            and self.proposal_a.verify(public_key)
            and self.proposal_b.verify(public_key)
        )
