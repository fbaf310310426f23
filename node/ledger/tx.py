"""Signed transactions: the envelope, its bodies, and the typed errors a tx can fail with.

A ``Tx`` carries the sender's raw Ed25519 public key (not only its address) so anyone can
verify the signature without a key registry, and the address is derived from it
(``node.core.crypto.address_of``). The signature covers ``TxSignBytes``: a domain prefix plus
the canonical encoding of chain id, sender, nonce, fee and body. Because the chain id and
the per-sender nonce are signed, a tx replayed on another chain or a second time on this one
fails (``WrongChain`` / ``BadNonce``).

Fees are gas-free but size-based: ``fee >= base + per_byte * len(tx.encode())`` with both
parameters from genesis, so the cost of a tx tracks what it costs every node to gossip,
store and hash it.

A ``model_update`` carries only the digest and size of the update payload; the payload
bytes travel beside the tx in gossip and live in the blob store, so blocks stay small while
every validator can still fetch the payload by hash and re-check the aggregation. The
ledger treats the payload as opaque bytes bounded by the genesis ``max_update_bytes``.
"""

from __future__ import annotations

from functools import cached_property
from typing import ClassVar

from consensus.types import ChainId, DuplicateProposalEvidence, DuplicateVoteEvidence
from node.core.codec import U32, U64, Bytes20, Bytes32, Bytes64, CodecError, Record, sha256
from node.core.crypto import PrivateKey, address_of, verify
from node.ledger.genesis import FeeParams

__all__ = [
    "MAX_TX_BYTES",
    "BadNonce",
    "BadSignature",
    "Body",
    "DuplicateUpdate",
    "Evidence",
    "EvidenceError",
    "FeeTooLow",
    "InsufficientFunds",
    "InsufficientStake",
    "ModelUpdate",
    "NotATrainer",
    "ProposalEvidence",
    "Stake",
    "StaleUpdate",
    "Transfer",
    "Tx",
    "TxError",
    "TxSignBytes",
    "TxTooLarge",
    "Unstake",
    "WrongChain",
    "sign_tx",
]

# Evidence (two full votes) is the largest body; 2 KiB leaves ample room and keeps gossip
# and mempool accounting simple.
MAX_TX_BYTES = 2048
SIGN_DOMAIN = b"fedchain/tx/v1\x00"
_SIG_ENTRY = b"\xa9signature\xc4\x40"  # fixstr "signature", then bin8 of 64 bytes


# --------------------------------------------------------------------------- bodies


class Transfer(Record):
    """Move ``amount`` from the sender to the account ``to``."""

    TAG: ClassVar[str] = "transfer"
    to: Bytes20
    amount: U64


class Stake(Record):
    """Bond ``amount`` of the sender's balance to the sender's own key.

    A bond of at least ``min_validator_stake`` makes the sender a validator (voting power =
    stake) and one of at least ``min_trainer_stake`` registers it as a trainer; genesis can
    set the trainer minimum below the validator minimum so trainers need not validate.
    """

    TAG: ClassVar[str] = "stake"
    amount: U64

    def _check(self, path: str) -> None:
        if self.amount == 0:
            raise CodecError("stake amount must be positive", path)


class Unstake(Record):
    """Start unbonding ``amount``; it returns to the balance after the unbonding period."""

    TAG: ClassVar[str] = "unstake"
    amount: U64

    def _check(self, path: str) -> None:
        if self.amount == 0:
            raise CodecError("unstake amount must be positive", path)


class ModelUpdate(Record):
    """A trainer's update for FL ``round`` trained from the global model ``base_model``."""

    TAG: ClassVar[str] = "model_update"
    round: U64
    base_model: Bytes32
    samples: U32
    payload_hash: Bytes32
    payload_size: U32

    def _check(self, path: str) -> None:
        if self.samples == 0:
            raise CodecError("an update must be trained on at least one sample", path)
        if self.payload_size == 0:
            raise CodecError("empty update payload", path)


class Evidence(Record):
    """Proof that a validator signed two conflicting votes; anyone may submit it."""

    TAG: ClassVar[str] = "evidence"
    evidence: DuplicateVoteEvidence


class ProposalEvidence(Record):
    """Proof that a proposer signed two different proposals for one height and round;
    anyone may submit it. Its own body kind (not a second field of ``Evidence``), so the
    encoding of vote evidence stays what it was."""

    TAG: ClassVar[str] = "proposal_evidence"
    evidence: DuplicateProposalEvidence


Body = Transfer | Stake | Unstake | ModelUpdate | Evidence | ProposalEvidence


# --------------------------------------------------------------------------- envelope


class TxSignBytes(Record):
    chain_id: ChainId
    sender: Bytes32
    nonce: U64
    fee: U64
    body: Body


class Tx(Record):
    MAX_SIZE: ClassVar[int] = MAX_TX_BYTES

    chain_id: ChainId
    sender: Bytes32  # raw Ed25519 public key
    nonce: U64
    fee: U64
    body: Body
    signature: Bytes64

    @classmethod
    def from_bytes(cls, data: bytes) -> Tx:
        """Decode wire bytes, remembering them so hash and size cost nothing more."""
        data = bytes(data)
        tx = cls.decode(data)
        tx.__dict__["hash"] = sha256(data)
        tx.__dict__["size"] = len(data)
        sign_bytes = tx._slice_sign_bytes(data)
        if sign_bytes is not None:
            tx.__dict__["_sign_bytes"] = sign_bytes
        return tx

    def _slice_sign_bytes(self, data: bytes) -> bytes | None:
        # The canonical Tx map is the TxSignBytes map plus a trailing signature entry, so
        # the signed bytes are a slice of the wire bytes: no second encoding per tx.
        if data[0] == 0x86 and data.endswith(_SIG_ENTRY + self.signature):
            return SIGN_DOMAIN + b"\x85" + data[1 : len(data) - len(_SIG_ENTRY) - 64]
        return None

    @cached_property
    def _wire(self) -> bytes:
        """The canonical encoding, computed once for hash, size and signed bytes (txs
        decoded inside a block do not come through ``from_bytes``)."""
        return self.encode()

    @cached_property
    def hash(self) -> bytes:
        return sha256(self._wire)

    @cached_property
    def size(self) -> int:
        """Length of the canonical encoding (what the size-based fee is charged on)."""
        return len(self._wire)

    @cached_property
    def address(self) -> bytes:
        return address_of(self.sender)

    def sign_bytes(self) -> bytes:
        cached = self.__dict__.get("_sign_bytes")
        if cached is None:
            cached = self._slice_sign_bytes(self._wire)
            if cached is None:  # unreachable for a canonical Tx; kept as the definition
                cached = (
                    SIGN_DOMAIN
                    + TxSignBytes(
                        self.chain_id, self.sender, self.nonce, self.fee, self.body
                    ).encode()
                )
            self.__dict__["_sign_bytes"] = cached
        return bytes(cached)

    def signature_ok(self) -> bool:
        ok = self.__dict__.get("_sig_ok")
        if ok is None:
            ok = verify(self.sender, self.signature, self.sign_bytes())
            self.__dict__["_sig_ok"] = ok
        return bool(ok)


def sign_tx(key: PrivateKey, chain_id: str, nonce: int, fee: int | FeeParams, body: Body) -> Tx:
    """Sign a tx; given ``FeeParams`` instead of an amount, pay exactly the minimum fee."""
    if isinstance(fee, FeeParams):
        # The fee's own encoding length feeds back into the size; iterate to a fixed point
        # (at most a few rounds: msgpack integer widths only grow).
        amount = fee.base
        while True:
            size = Tx(chain_id, key.public_key, nonce, amount, body, b"\x00" * 64).size
            need = fee.base + fee.per_byte * size
            if need <= amount:
                break
            amount = need
        fee = amount
    unsigned = Tx(chain_id, key.public_key, nonce, fee, body, b"\x00" * 64)
    return unsigned.replace(signature=key.sign(unsigned.sign_bytes()))


# --------------------------------------------------------------------------- errors


class TxError(Exception):
    """A transaction is invalid here and now; the subclass says why (for RPC and logs)."""

    code: ClassVar[str] = "invalid"


class TxTooLarge(TxError):
    code = "too_large"


class BadSignature(TxError):
    code = "bad_signature"


class WrongChain(TxError):
    code = "wrong_chain"


class BadNonce(TxError):
    code = "bad_nonce"


class FeeTooLow(TxError):
    code = "fee_too_low"


class InsufficientFunds(TxError):
    code = "insufficient_funds"


class InsufficientStake(TxError):
    code = "insufficient_stake"


class NotATrainer(TxError):
    code = "not_a_trainer"


class DuplicateUpdate(TxError):
    code = "duplicate_update"


class StaleUpdate(TxError):
    """The update is for another round or another base model than the current one."""

    code = "stale_update"


class EvidenceError(TxError):
    code = "bad_evidence"
