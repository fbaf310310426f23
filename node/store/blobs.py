"""Content-addressed blob store for model weights and update payloads.

A blob lives at ``<root>/ab/cdef...`` where ``abcdef...`` is the hex SHA-256 of its
bytes, so a name is also its checksum: reads re-hash and raise ``CorruptBlob`` instead of
handing a torn or bit-rotted payload to the aggregation. Writes go to a temp file that is
fsynced, renamed into place and followed by an fsync of the directory, so after a crash a
blob is either complete under its name or absent. Blobs that peers can serve again (update
payloads off the gossip) may skip the fsyncs (``durable=False``): each would hold the
event loop for a disk flush per payload per node; such a blob torn by a power loss fails
its hash check, is deleted, and is fetched again like any missing blob.

Pruning is by FL round: every ``put`` may tag the blob with the round it belongs to (kept in
a small SQLite index beside the files); ``prune`` deletes blobs whose newest round is older
than the retention window, except pinned hashes (e.g. the current global model).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from node.core.atomic_file import write_atomic
from node.store.database import open_database

__all__ = ["BlobError", "BlobNotFound", "BlobStore", "CorruptBlob"]

# What to do about a damaged index.sqlite (node.store.database).
INDEX_ADVICE = (
    "stop the node and delete the file (with its -wal and -shm files): it only records "
    "the round of each blob for pruning, and the node starts a new one"
)


class BlobError(Exception):
    """Base for blob store failures."""


class BlobNotFound(BlobError, KeyError):
    pass


class CorruptBlob(BlobError):
    """The file under a hash does not hash to it (torn write, disk corruption, tampering)."""


class BlobStore:
    def __init__(
        self, root: Path, *, max_blob_bytes: int = 64 << 20, check_seconds: float = 0.0
    ) -> None:
        """``check_seconds`` > 0 runs the start-up integrity check of the index for at
        most that long (``node.store.database``)."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_blob_bytes = max_blob_bytes
        self._index = open_database(
            self.root / "index.sqlite",
            schema="CREATE TABLE IF NOT EXISTS rounds"
            " (hash BLOB PRIMARY KEY, round INTEGER NOT NULL) WITHOUT ROWID;",
            # The index only drives pruning: after a power loss, a lost row leaves a blob
            # unpruned, never a wrong one deleted; NORMAL spares an fsync per put.
            synchronous="NORMAL",
            check_seconds=check_seconds,
            advice=INDEX_ADVICE,
        )

    def close(self) -> None:
        self._index.close()

    def path_of(self, digest: bytes) -> Path:
        if len(digest) != 32:
            raise BlobError(f"a blob hash is 32 bytes, got {len(digest)}")
        h = digest.hex()
        return self.root / h[:2] / h[2:]

    def has(self, digest: bytes) -> bool:
        return self.path_of(digest).exists()

    def put(self, data: bytes, *, round: int | None = None, durable: bool = True) -> bytes:
        """Store ``data`` (idempotent) and return its SHA-256; ``durable=False`` for bytes
        peers can serve again (no fsync, see the module doc)."""
        if len(data) > self.max_blob_bytes:
            raise BlobError(f"blob of {len(data)} bytes exceeds {self.max_blob_bytes}")
        digest = hashlib.sha256(data).digest()
        path = self.path_of(digest)
        if not path.exists():
            write_atomic(path, data, durable=durable)
        if round is not None:
            self._index.execute(
                "INSERT INTO rounds (hash, round) VALUES (?, ?) "
                "ON CONFLICT(hash) DO UPDATE SET round = max(round, excluded.round)",
                (digest, round),
            )
        return digest

    def get(self, digest: bytes) -> bytes:
        path = self.path_of(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError as e:
            raise BlobNotFound(digest.hex()) from e
        except OSError as e:
            raise BlobError(f"cannot read blob {digest.hex()}: {e}") from e
        if hashlib.sha256(data).digest() != digest:
            # Useless under its name: removed, so `has` is false and it is fetched again.
            path.unlink(missing_ok=True)
            raise CorruptBlob(f"blob {digest.hex()} does not match its hash (removed)")
        return data

    def delete(self, digest: bytes) -> None:
        self.path_of(digest).unlink(missing_ok=True)
        self._index.execute("DELETE FROM rounds WHERE hash = ?", (digest,))

    def prune(self, current_round: int, keep_rounds: int, pinned: Iterable[bytes] = ()) -> int:
        """Delete blobs tagged only with rounds < ``current_round - keep_rounds`` that are
        not ``pinned``; untagged blobs are kept. Returns how many were deleted."""
        keep = set(pinned)
        cutoff = current_round - keep_rounds
        rows = self._index.execute("SELECT hash FROM rounds WHERE round < ?", (cutoff,)).fetchall()
        n = 0
        for (h,) in rows:
            digest = bytes(h)
            if digest in keep:
                continue
            self.delete(digest)
            n += 1
        return n
