"""Crash-safe block and state store on SQLite (WAL mode), one SQL transaction per block.

Why SQLite over LMDB: it is in the standard library (no native dependency to build or pin),
its WAL journal gives atomic multi-table commits that survive SIGKILL and power loss with
``synchronous=FULL``, it tolerates the few concurrent readers an RPC server adds, and the
state changes per block are small, so LMDB's faster reads would not pay for a second
storage engine. Everything the node must agree on is written in ONE transaction per block:
the block, the changed state keys and the new (height, app hash). A process killed at any
instant therefore leaves either the old block or the new one, never half of one, and on
restart the node resumes from exactly the last committed height.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path

from node.core.codec import CodecError
from node.ledger.block import Block
from node.store.database import SQLiteStore
from node.store.errors import StoreError

__all__ = ["ChainStore", "StoreError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    hash   BLOB NOT NULL UNIQUE,
    data   BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key   BLOB PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
"""


class ChainStore(SQLiteStore):
    """Blocks by height, the state map, and (genesis hash, height, app hash) metadata."""

    SCHEMA = _SCHEMA
    ADVICE = (
        "stop the node, move the file aside (with its -wal and -shm files) and start again "
        "to sync the chain from peers, or restore it from a backup"
    )
    UNSYNCED = "OFF"

    def __enter__(self) -> ChainStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- metadata

    def _meta(self, name: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    @property
    def genesis_hash(self) -> bytes | None:
        return self._meta("genesis_hash")

    @property
    def height(self) -> int:
        h = self._meta("height")
        return 0 if h is None else int.from_bytes(h, "big")

    @property
    def app_hash(self) -> bytes | None:
        return self._meta("app_hash")

    # ----------------------------------------------------------------- writes

    def init_genesis(
        self, genesis_hash: bytes, app_hash: bytes, state: Mapping[bytes, bytes]
    ) -> None:
        """Write the genesis state (height 0) in one transaction."""
        with self._tx():
            if self._meta("genesis_hash") is not None:
                raise StoreError("store already initialised")
            self._db.executemany("INSERT INTO state (key, value) VALUES (?, ?)", state.items())
            self._put_meta(genesis_hash=genesis_hash, height=0, app_hash=app_hash)

    def commit_block(
        self, block: Block, changes: Mapping[bytes, bytes | None], app_hash: bytes
    ) -> None:
        """Persist ``block`` with its state ``changes`` and the app hash after it, atomically."""
        with self._tx():
            if block.height != self.height + 1:
                raise StoreError(f"commit of height {block.height} after {self.height}")
            self._db.execute(
                "INSERT INTO blocks (height, hash, data) VALUES (?, ?, ?)",
                (block.height, block.hash, block.encode()),
            )
            puts = [(k, v) for k, v in changes.items() if v is not None]
            dels = [(k,) for k, v in changes.items() if v is None]
            self._db.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", puts)
            self._db.executemany("DELETE FROM state WHERE key = ?", dels)
            self._put_meta(height=block.height, app_hash=app_hash)

    def _put_meta(self, **values: bytes | int) -> None:
        for name, v in values.items():
            raw = v.to_bytes(8, "big") if isinstance(v, int) else v
            self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, raw))

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> None:
            self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, et: object, e: object, tb: object) -> None:
            self.db.execute("COMMIT" if et is None else "ROLLBACK")

    def _tx(self) -> ChainStore._Tx:
        return ChainStore._Tx(self._db)

    # ----------------------------------------------------------------- reads

    def state_rows(self) -> Iterator[tuple[bytes, bytes]]:
        for k, v in self._db.execute("SELECT key, value FROM state ORDER BY key"):
            yield bytes(k), bytes(v)

    def block_bytes(self, height: int) -> bytes | None:
        row = self._db.execute("SELECT data FROM blocks WHERE height = ?", (height,)).fetchone()
        return None if row is None else bytes(row[0])

    def block(self, height: int) -> Block | None:
        raw = self.block_bytes(height)
        if raw is None:
            return None
        try:
            return Block.decode(raw)
        except CodecError as e:
            raise StoreError(f"stored block {height} is corrupt: {e}") from e

    def block_height_of(self, block_hash: bytes) -> int | None:
        row = self._db.execute("SELECT height FROM blocks WHERE hash = ?", (block_hash,)).fetchone()
        return None if row is None else int(row[0])

    def checkpoint(self) -> None:
        """Fold the WAL into the database file (SQLite also does this on its own)."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def size_bytes(self) -> int:
        """Bytes on disk (database plus WAL)."""
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total
