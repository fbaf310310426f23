"""Commit certificates and consensus checkpoints, beside the chain store.

The chain store keeps block H's certificate only inside block H+1 (as ``last_commit``), so
the newest block's certificate would exist nowhere on disk; block sync needs it to serve
the tip, and a restarted engine needs its own checkpoint to resume. Both live here, in a
separate small SQLite file the daemon owns (the chain store's schema belongs to the
ledger). A certificate is written before the ledger commits its block, so every block the
ledger holds has its certificate on disk; a crash in between leaves only a certificate
one height past the ledger's tip, which nothing reads (block sync serves heights up to the
tip) and the block's own commit overwrites. The checkpoint follows the block: after a
crash in between it is one height old, and the engine is rebuilt without it
(``node.services.engine_factory``).
"""

from __future__ import annotations

from consensus.types import Commit
from node.core.codec import CodecError
from node.store.database import SQLiteStore

__all__ = ["CommitStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS commits (height INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 0), height INTEGER NOT NULL, data BLOB NOT NULL
);
"""


class CommitStore(SQLiteStore):
    SCHEMA = _SCHEMA
    ADVICE = (
        "stop the node, move the file aside (with its -wal and -shm files) and start again: "
        "peers serve certificates and checkpoints (a single-validator chain has no peers: "
        "restore the file from a backup)"
    )

    def put_commit(self, commit: Commit) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO commits (height, data) VALUES (?, ?)",
            (commit.height, commit.encode()),
        )

    def commit(self, height: int) -> Commit | None:
        row = self._db.execute("SELECT data FROM commits WHERE height = ?", (height,)).fetchone()
        if row is None:
            return None
        try:
            return Commit.decode(bytes(row[0]))
        except CodecError:
            return None

    def put_checkpoint(self, height: int, data: bytes) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO checkpoint (id, height, data) VALUES (0, ?, ?)",
            (height, data),
        )

    def checkpoint(self) -> tuple[int, bytes] | None:
        row = self._db.execute("SELECT height, data FROM checkpoint WHERE id = 0").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))
