"""Damaging a node's SQLite files the way a torn write or a bad sector does, for tests of
how the node reports it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["damage_table"]


def damage_table(path: Path, table: str) -> None:
    """Overwrite the root page of ``table`` in the database at ``path`` with garbage (the
    database must be closed, its WAL folded into the file)."""
    db = sqlite3.connect(path)
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    db.close()
    with path.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xaa" * page_size)
