"""Give back the shared-library code pages that only a node's start-up executed.

Loading libtorch runs its static initialisers (operator registration for every backend and
dtype), which touch much of its machine code once and never again. Those pages stay
mapped, so they count in the node's RSS for the rest of its life, although no round of
training or evaluation uses them. ``MADV_DONTNEED`` on a read-only, executable file mapping
only drops this process's page-table entries: the pages stay in the page cache (shared with
every other process running the same libraries), and whatever code the node still runs is
mapped again on its first use, from memory, without disk I/O. Peak RSS then counts only
the code that training and evaluation actually run.

Only mappings without anonymous pages are released: a library with text relocations has
patched copies of its code pages, and dropping those would bring back the unpatched file
contents. Writable mappings (data, relocation tables) are never touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CodeMapping", "code_mappings", "release_startup_code_pages"]

log = logging.getLogger(__name__)

MADV_DONTNEED = 4


@dataclass(frozen=True)
class CodeMapping:
    start: int
    end: int
    path: str
    rss_kb: int
    anonymous_kb: int


def code_mappings(smaps: str) -> list[CodeMapping]:
    """The executable, read-only, file-backed mappings listed in ``smaps`` text."""
    out: list[CodeMapping] = []
    current: dict[str, str] | None = None
    fields: dict[str, int] = {}

    def flush() -> None:
        if current is not None:
            out.append(
                CodeMapping(
                    int(current["start"], 16),
                    int(current["end"], 16),
                    current["path"],
                    fields.get("Rss", 0),
                    fields.get("Anonymous", 0),
                )
            )

    for line in smaps.splitlines():
        parts = line.split()
        if not parts:
            continue
        if "-" in parts[0] and ":" not in parts[0]:  # a mapping's header line
            flush()
            current, fields = None, {}
            if len(parts) >= 6 and parts[1] == "r-xp" and parts[5].startswith("/"):
                start, _, end = parts[0].partition("-")
                current = {"start": start, "end": end, "path": parts[5]}
        elif current is not None and parts[0].endswith(":") and len(parts) >= 2:
            with contextlib.suppress(ValueError):
                fields[parts[0][:-1]] = int(parts[1])
    flush()
    return out


def release_startup_code_pages(smaps_path: Path = Path("/proc/self/smaps")) -> int:
    """Drop this process's mappings of file-backed code pages; return the kB released.

    Does nothing (returns 0) where there is no ``/proc`` or no ``madvise`` (not Linux).
    """
    if not sys.platform.startswith("linux"):
        return 0
    try:
        smaps = smaps_path.read_text()
    except OSError:
        return 0
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    released = 0
    for m in code_mappings(smaps):
        if m.anonymous_kb or not m.rss_kb:
            continue
        if madvise(m.start, m.end - m.start, MADV_DONTNEED) == 0:
            released += m.rss_kb
        else:
            log.debug("madvise(%s) failed: errno %d", m.path, ctypes.get_errno())
    return released
