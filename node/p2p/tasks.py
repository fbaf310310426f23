"""A long-lived task group for objects that outlive one ``async with`` block.

asyncio.TaskGroup fits a scope; the host and each connection instead own children for
their whole life and must stop them from ``close()``. TaskSet is that owner: it keeps
strong references (so tasks are never garbage-collected mid-flight), logs a child's
unexpected exception instead of letting it vanish, and ``aclose()`` cancels every child
and awaits them all, so nothing outlives its owner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskSet:
    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        if self._closed:
            coro.close()
            raise RuntimeError(f"task set {self.name} is closed")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s in %s failed", task.get_name(), self.name, exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Cancel every child and wait until all of them have finished."""
        self._closed = True
        current = asyncio.current_task()
        while True:
            pending = [t for t in self._tasks if t is not current]
            if not pending:
                return
            for t in pending:
                t.cancel()
            await asyncio.wait(pending)
