"""How the node opens its SQLite files, and one clear error when one is damaged.

Every store opens its file through ``open_database``: WAL journal, the store's
``synchronous`` level, its schema, and failures as ``StoreError`` naming the file.

A damaged page (a bad disk, a copy made while the node was writing) is noticed by SQLite
only when something reads it; in the block store that may be hours after the start, as
a traceback in the middle of consensus. So each store runs ``PRAGMA quick_check`` when
the node starts: it walks every b-tree page (structure, cell bounds, free list; not the
cross-checks of indexes against tables that ``integrity_check`` adds), which is cheap on
the databases of a small chain. Its cost grows with the file, so it is bounded in time
(``db_check_seconds`` in config.toml): a progress handler interrupts it at the deadline,
the node logs how far it got, and the rest is still checked by SQLite as it is read.

Damage is a ``CorruptStore`` naming the file and saying what to do about it (each store
knows what its file holds and where it can be had again), so ``fedchain start`` prints
one line instead of a traceback.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import ClassVar

from node.store.errors import CorruptStore, StoreError

__all__ = ["SQLiteStore", "corrupt", "is_damage", "open_database", "quick_check"]

log = logging.getLogger(__name__)

# SQLite virtual-machine instructions between two looks at the clock.
_PROGRESS_STEPS = 10_000


def corrupt(path: Path, detail: object, advice: str) -> CorruptStore:
    return CorruptStore(f"database {path} is damaged ({detail}); {advice}")


def is_damage(error: sqlite3.Error) -> bool:
    """SQLite reports a damaged or foreign file (SQLITE_CORRUPT, SQLITE_NOTADB) as a plain
    DatabaseError; its subclasses are other failures (locked, I/O, constraint)."""
    return type(error) is sqlite3.DatabaseError


def quick_check(db: sqlite3.Connection, path: Path, *, seconds: float, advice: str) -> bool:
    """Run ``PRAGMA quick_check`` on ``db`` for at most ``seconds`` (0: skip); raise
    CorruptStore when it finds damage. True when the whole file was checked."""
    if seconds <= 0:
        return False
    deadline = time.monotonic() + seconds
    db.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEPS)
    try:
        rows = db.execute("PRAGMA quick_check(8)").fetchall()
    except sqlite3.OperationalError as e:
        if time.monotonic() <= deadline or "interrupt" not in str(e):
            raise corrupt(path, e, advice) from e
        log.warning(
            "the integrity check of %s (%.0f MiB) stopped after %g s (db_check_seconds); "
            "the rest is checked as it is read",
            path,
            _size(path) / (1 << 20),
            seconds,
        )
        return False
    except sqlite3.DatabaseError as e:  # "database disk image is malformed" and kin
        raise corrupt(path, e, advice) from e
    finally:
        db.set_progress_handler(None, 0)
    problems = [str(r[0]) for r in rows if r and r[0] != "ok"]
    if problems:
        raise corrupt(path, "; ".join(problems[:3]), advice)
    return True


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def open_database(
    path: Path, *, schema: str, synchronous: str, check_seconds: float, advice: str
) -> sqlite3.Connection:
    """Connect to ``path`` (created if missing) for one store, check it for at most
    ``check_seconds`` and create ``schema``; raises StoreError, CorruptStore when damaged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open store {path}: {e}") from e
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        quick_check(db, path, seconds=check_seconds, advice=advice)
        db.executescript(schema)
    except sqlite3.Error as e:
        db.close()
        if is_damage(e):
            raise corrupt(path, e, advice) from e
        raise StoreError(f"cannot open store {path}: {e}") from e
    except StoreError:
        db.close()
        raise
    return db


class SQLiteStore:
    """A store that is one SQLite file: its schema, what to do when the file is damaged,
    and the ``synchronous`` level it runs at without fsync."""

    SCHEMA: ClassVar[str]
    ADVICE: ClassVar[str]
    UNSYNCED: ClassVar[str] = "NORMAL"

    def __init__(self, path: Path, *, fsync: bool = True, check_seconds: float = 0.0) -> None:
        """Open (or create) the store; ``check_seconds`` > 0 runs the start-up integrity
        check for at most that long."""
        self.path = Path(path)
        self._db = open_database(
            self.path,
            schema=self.SCHEMA,
            synchronous="FULL" if fsync else self.UNSYNCED,
            check_seconds=check_seconds,
            advice=self.ADVICE,
        )

    def close(self) -> None:
        self._db.close()
