"""Crash-safe file replacement, the one way the project writes files that must not tear.

Keys, the vote-signing state, content-addressed blobs, downloaded MNIST files and exported
models are all written the same way: a uniquely named temporary file in the target's
directory, written in full and fsynced, renamed over the target, then the directory fsynced.
After a crash (even a power loss) the path holds the old bytes or the new ones, never part
of either, and a concurrent writer never shares our temporary file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and durably; the file gets ``mode``
    exactly (not filtered by the umask). Raises OSError, leaving no temporary file.

    ``durable=False`` skips both fsyncs, for files that can be fetched again and are
    checked when read (gossiped update payloads): the rename still makes a killed
    process leave the old bytes or the new ones, but after a power loss the file may be
    empty, which the reader's checksum detects."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not durable:
        return
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
