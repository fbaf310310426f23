"""Double-sign protection: a signer that refuses to sign anything conflicting, ever.

A validator that signs two different votes for one (height, round, step) gets slashed, and
the classic way to do that by accident is to crash after a vote left the process and then,
on restart, vote differently. So the guard persists the new (height, round, step), the
signed bytes and the signature *before* it returns the signature (temp file, fsync, rename,
fsync of the directory). After a crash it reloads that record and:

- refuses anything at a lower (height, round, step);
- at the same (height, round, step) returns the stored signature for the identical bytes
  (re-sending the same vote is harmless) and refuses different bytes;
- signs anything higher.

It also records the last non-nil precommit of the height (the Tendermint *lock*), so an
engine restarted mid-height resumes locked instead of suffering amnesia.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import IntEnum
from pathlib import Path
from typing import Protocol

from consensus.types import (
    Proposal,
    ProposalSignBytes,
    Vote,
    VoteSignBytes,
    VoteType,
)
from node.core.atomic_file import write_atomic
from node.core.codec import CodecError
from node.core.crypto import PrivateKey

__all__ = [
    "FileStateStore",
    "GuardedSigner",
    "MemoryStateStore",
    "SignState",
    "SignStateError",
    "Signer",
    "Step",
]


HISTORY = 4


class Step(IntEnum):
    PROPOSAL = 1
    PREVOTE = 2
    PRECOMMIT = 3


class SignStateError(Exception):
    """The persisted signing state is unreadable; signing must not proceed."""


@dataclass(frozen=True)
class SignState:
    height: int
    round: int
    step: int
    sign_bytes: bytes
    signature: bytes
    lock_height: int = 0
    lock_round: int = 0
    lock_hash: bytes = b""
    # Opaque engine data persisted with the lock (Tendermint: the locked block and the
    # prevotes that justify it), so a restarted validator can still re-propose it.
    lock_payload: bytes = b""
    # The last few (sign_bytes, signature) pairs, newest last, so a restarted engine can
    # re-send votes that may have been lost with the crash.
    history: tuple[tuple[bytes, bytes], ...] = ()

    def to_json(self) -> str:
        doc = asdict(self)
        for k in ("sign_bytes", "signature", "lock_hash", "lock_payload"):
            doc[k] = doc[k].hex()
        doc["history"] = [[a.hex(), b.hex()] for a, b in self.history]
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SignState:
        try:
            doc = json.loads(text)
            for k in ("sign_bytes", "signature", "lock_hash", "lock_payload"):
                doc[k] = bytes.fromhex(doc.get(k, ""))
            doc["history"] = tuple(
                (bytes.fromhex(a), bytes.fromhex(b)) for a, b in doc.get("history", [])
            )
            state = cls(**doc)
        except (ValueError, TypeError, KeyError) as e:
            raise SignStateError(f"malformed signing state: {e}") from e
        for k in ("height", "round", "step", "lock_height", "lock_round"):
            if type(getattr(state, k)) is not int:
                raise SignStateError(f"malformed signing state: {k} is not an integer")
        return state


class StateStore(Protocol):
    def load(self) -> SignState | None: ...

    def save(self, state: SignState) -> None: ...


class MemoryStateStore:
    """Keeps the state in an object that outlives the engine (the simulator's 'disk')."""

    def __init__(self) -> None:
        self.state: SignState | None = None

    def load(self) -> SignState | None:
        return self.state

    def save(self, state: SignState) -> None:
        self.state = state


class FileStateStore:
    """JSON file replaced atomically; the rename is only trusted after both fsyncs."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> SignState | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise SignStateError(f"cannot read {self.path}: {e}") from e
        return SignState.from_json(text)

    def save(self, state: SignState) -> None:
        write_atomic(self.path, state.to_json().encode(), mode=0o600)


class Signer(Protocol):
    """What engines sign with; ``None`` from a sign call means 'refused, do not send'."""

    @property
    def public_key(self) -> bytes: ...

    @property
    def address(self) -> bytes: ...

    def sign_vote(
        self,
        chain_id: str,
        height: int,
        round: int,
        type: VoteType,
        block_hash: bytes,
        lock_payload: bytes = b"",
    ) -> Vote | None: ...

    def sign_proposal(
        self, chain_id: str, height: int, round: int, pol_round: int, block_hash: bytes
    ) -> Proposal | None: ...

    def lock(self, height: int) -> tuple[int, bytes, bytes] | None: ...

    def last_round(self, height: int) -> int | None: ...

    def recent_votes(self, chain_id: str, height: int) -> list[Vote]: ...


class GuardedSigner:
    """A validator key behind the double-sign guard described in the module docstring."""

    def __init__(self, key: PrivateKey, store: StateStore) -> None:
        self.key = key
        self.store = store
        self._public_key = key.public_key
        self._address = key.address
        self._state = store.load()

    @property
    def public_key(self) -> bytes:
        return self._public_key

    @property
    def address(self) -> bytes:
        return self._address

    def _sign(
        self,
        height: int,
        round: int,
        step: Step,
        sign_bytes: bytes,
        lock: bytes | None,
        payload: bytes = b"",
    ) -> bytes | None:
        last = self._state
        hrs = (height, round, int(step))
        if last is not None:
            last_hrs = (last.height, last.round, last.step)
            if hrs < last_hrs:
                return None
            if hrs == last_hrs:
                return last.signature if sign_bytes == last.sign_bytes else None
        signature = self.key.sign(sign_bytes)
        if lock is not None:
            lock_height, lock_round, lock_hash, lock_payload = height, round, lock, payload
        elif last is not None:
            lock_height, lock_round = last.lock_height, last.lock_round
            lock_hash, lock_payload = last.lock_hash, last.lock_payload
        else:
            lock_height, lock_round, lock_hash, lock_payload = 0, 0, b"", b""
        history = (*(last.history[-(HISTORY - 1) :] if last else ()), (sign_bytes, signature))
        state = SignState(
            height,
            round,
            int(step),
            sign_bytes,
            signature,
            lock_height,
            lock_round,
            lock_hash,
            lock_payload,
            history,
        )
        self.store.save(state)  # durable before the signature can leave the process
        self._state = state
        return signature

    def sign_vote(
        self,
        chain_id: str,
        height: int,
        round: int,
        type: VoteType,
        block_hash: bytes,
        lock_payload: bytes = b"",
    ) -> Vote | None:
        """Sign a vote; a non-nil precommit records the lock, with ``lock_payload``."""
        sb = VoteSignBytes(chain_id, height, round, int(type), block_hash).encode()
        step = Step.PREVOTE if type == VoteType.PREVOTE else Step.PRECOMMIT
        lock = block_hash if type == VoteType.PRECOMMIT and block_hash else None
        sig = self._sign(height, round, step, sb, lock, lock_payload)
        if sig is None:
            return None
        return Vote(chain_id, height, round, int(type), block_hash, self._address, sig)

    def sign_proposal(
        self, chain_id: str, height: int, round: int, pol_round: int, block_hash: bytes
    ) -> Proposal | None:
        sb = ProposalSignBytes(chain_id, height, round, pol_round, block_hash).encode()
        sig = self._sign(height, round, Step.PROPOSAL, sb, None)
        if sig is None:
            return None
        return Proposal(chain_id, height, round, pol_round, block_hash, self._address, sig)

    def lock(self, height: int) -> tuple[int, bytes, bytes] | None:
        """(round, block hash, payload) of the last non-nil precommit signed at ``height``."""
        s = self._state
        if s is None or s.lock_height != height or not s.lock_hash:
            return None
        return s.lock_round, s.lock_hash, s.lock_payload

    def last_round(self, height: int) -> int | None:
        """The highest round signed at ``height``; a restarted engine resumes there."""
        s = self._state
        return s.round if s is not None and s.height == height else None

    def recent_votes(self, chain_id: str, height: int) -> list[Vote]:
        """The votes among the last few signatures that belong to ``height``."""
        s = self._state
        if s is None or s.height != height:
            return []
        votes = []
        for sb, sig in s.history:
            try:
                v = VoteSignBytes.decode(sb)
            except CodecError:
                continue  # a proposal
            if v.chain_id == chain_id and v.height == height:
                votes.append(
                    Vote(v.chain_id, v.height, v.round, v.type, v.block_hash, self._address, sig)
                )
        return votes
