"""The persistent ledger: the state machine bound to its store, the API the node uses.

``Ledger.open`` resumes from the store's last committed block (checking that the rebuilt
state hashes to the recorded app hash) or initialises it from genesis. ``commit_block``
applies a block in memory and persists it in one store transaction; if persisting fails the
in-memory state is rolled back too, so memory and disk never disagree.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from consensus.types import Validator, ValidatorSet
from node.core.codec import CodecError
from node.ledger.block import Block
from node.ledger.genesis import Genesis
from node.ledger.state import Account, State
from node.ledger.tx import Tx
from node.store.chain import ChainStore, StoreError
from node.store.database import corrupt, is_damage

__all__ = ["Ledger"]


class Ledger:
    def __init__(self, state: State, store: ChainStore) -> None:
        self.state = state
        self.store = store

    @classmethod
    def open(
        cls, path: Path, genesis: Genesis, *, fsync: bool = True, check_seconds: float = 0.0
    ) -> Ledger:
        """Resume or initialise the ledger at ``path`` (see the module docstring);
        ``check_seconds``: the store's start-up integrity check (``ChainStore``)."""
        store = ChainStore(path, fsync=fsync, check_seconds=check_seconds)
        try:
            return cls._resume(store, genesis)
        except sqlite3.Error as e:
            store.close()
            if is_damage(e):
                raise corrupt(store.path, e, store.ADVICE) from e
            raise StoreError(f"cannot read store {store.path}: {e}") from e
        except BaseException:
            store.close()
            raise

    @classmethod
    def _resume(cls, store: ChainStore, genesis: Genesis) -> Ledger:
        if store.genesis_hash is None:
            state = State.from_genesis(genesis)
            store.init_genesis(
                genesis.hash,
                state.app_hash(),
                {k: v.encode() for k, v in state.items()},
            )
            return cls(state, store)
        if store.genesis_hash != genesis.hash:
            raise StoreError("the store belongs to a chain with another genesis")
        try:
            state = State.from_encoded(genesis, store.state_rows())
        except CodecError as e:
            raise corrupt(store.path, f"stored state: {e}", store.ADVICE) from e
        if state.height != store.height or state.app_hash() != store.app_hash:
            detail = "the stored state does not match the recorded height and app hash"
            raise corrupt(store.path, detail, store.ADVICE)
        return cls(state, store)

    def close(self) -> None:
        self.store.close()

    # ----------------------------------------------------------------- node API

    @property
    def height(self) -> int:
        return self.state.height

    def app_hash(self) -> bytes:
        return self.state.app_hash()

    def check_tx(self, tx: Tx, pending: Sequence[Tx] = ()) -> None:
        self.state.check_tx(tx, pending)

    def account(self, address: bytes) -> Account:
        return self.state.account(address)

    def validator_set(self, height: int | None = None) -> ValidatorSet:
        return self.state.validator_set(height)

    def commit_block(
        self, block: Block, *, verify_commit: bool = True
    ) -> tuple[bytes, list[Validator]]:
        """Apply and persist ``block``; raises BlockError (invalid) or StoreError (disk)."""
        app_hash, updates = self.state.apply_block(block, verify_commit=verify_commit)
        try:
            self.store.commit_block(block, self.state.last_changes(), app_hash)
        except BaseException:
            self.state.revert_last_block()
            raise
        return app_hash, updates
