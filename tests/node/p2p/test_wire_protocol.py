"""The socket protocol under a sender that outruns the reader: one read per loop iteration."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from node.p2p.connection import READ_BUFFER, WireProtocol


async def _full_reads_and_loop_turns() -> list[int]:
    """8 MiB written at once to a WireProtocol; for every read that filled the whole buffer,
    how many loop iterations had run by then."""
    loop = asyncio.get_running_loop()
    total = 8 * 1024 * 1024
    ticks = 0
    seen: list[int] = []
    received = 0
    done = loop.create_future()

    def sink(data: bytes | memoryview) -> None:
        nonlocal received
        if len(data) == READ_BUFFER:
            seen.append(ticks)
        received += len(data)
        if received >= total and not done.done():
            done.set_result(None)

    def made(proto: WireProtocol) -> None:
        proto.switch_to(sink, lambda: None)

    server = await loop.create_server(lambda: WireProtocol(made), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # Fill the socket buffers before the reader gets its first chance to run.
    writer.write(b"\x00" * total)
    t = asyncio.create_task(ticker())
    try:
        await asyncio.wait_for(done, 30)
    finally:
        t.cancel()
        writer.close()
        server.close()
        await server.wait_closed()
    return seen


def _check(seen: list[int]) -> None:
    assert len(seen) >= 4, "the test needs several full reads"
    # Other work (a relay's writer tasks) runs between any two full reads.
    assert all(b > a for a, b in itertools.pairwise(seen)), seen


def _run_on(runner: Callable[[Coroutine[Any, Any, list[int]]], list[int]]) -> None:
    _check(runner(_full_reads_and_loop_turns()))


def test_asyncio_loop_turns_between_full_reads() -> None:
    _run_on(asyncio.run)


def test_uvloop_turns_between_full_reads() -> None:
    """libuv reads a socket up to 32 times in a row while each read fills the buffer; the
    protocol pauses reading after a full read so the loop runs in between."""
    uvloop = pytest.importorskip("uvloop")
    _run_on(uvloop.run)
