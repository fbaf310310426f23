"""Machine-wide training slots: at most N nodes of one machine train at the same time.

A local testnet runs every node on one machine. If all of them train at once, more
single-threaded trainers than cores share the cores through the scheduler: each runs a few
milliseconds, is switched out and comes back to cold caches, and a round takes longer than
the same work done one trainer per core (``scripts/bench_testnet.py`` measures it). With
slots, nodes queue for a core instead, which is what an in-process FedAvg loop with a
worker pool does.

A slot is an exclusive ``flock`` on one of N files in a directory that the nodes share.
The kernel drops the lock when its holder exits, however it exits, so a SIGKILLed node
never leaves a slot taken. Where ``fcntl`` is missing (Windows) there is no limit.

A slot is also a core: while a thread holds slot i it runs only on the i-th CPU this
process may use (``pin_to_slot``), so two trainers never share a core while the other
idles, and the scheduler does not move a trainer between cores mid-epoch when the nodes'
event loops wake up: a migrated trainer starts on cold caches, which costs training CPU and
lengthens the round.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

POLL_SECONDS = 0.02


@contextlib.contextmanager
def pin_to_slot(slot: int) -> Iterator[None]:
    """Run the calling thread on one CPU, chosen by ``slot``, of the CPUs it may use;
    restore its affinity afterwards. Does nothing without ``sched_setaffinity``."""
    get = getattr(os, "sched_getaffinity", None)
    set_ = getattr(os, "sched_setaffinity", None)
    if get is None or set_ is None or slot < 0:
        yield
        return
    allowed = get(0)  # pid 0: the calling thread
    cpus = sorted(allowed)
    try:
        set_(0, {cpus[slot % len(cpus)]})
        pinned = True
    except OSError:
        pinned = False
    try:
        yield
    finally:
        if pinned:
            set_(0, allowed)


class SlotWaitAborted(Exception):
    """The stop event was set while waiting for a slot."""


class TrainSlots:
    """``slots`` exclusive slots under ``directory`` (created if missing)."""

    def __init__(self, directory: Path, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.directory = Path(directory)
        self.slots = slots

    @contextlib.contextmanager
    def hold(self, stop: threading.Event) -> Iterator[int]:
        """Block (polling, so ``stop`` can end the wait) until a slot is free; yield its
        index while it is held. Raises SlotWaitAborted if ``stop`` is set first."""
        if fcntl is None:
            yield -1
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            for i in range(self.slots):
                fd = os.open(self.directory / f"slot{i}", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                try:
                    yield i
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                return
            if stop.wait(POLL_SECONDS):
                raise SlotWaitAborted
