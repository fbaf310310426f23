"""Fixtures for transport tests: hosts on 127.0.0.1 that are closed and leak-checked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from node.p2p.connection import Stream
from node.p2p.host import Host, HostConfig
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import IdentityKey
from tests.helpers import dial_addr

__all__ = ["dial_addr", "make_host", "window_used_up"]

LOCAL = Multiaddr.parse("/ip4/127.0.0.1/tcp/0")
HostFactory = Callable[..., "asyncio.Future[Host]"]


@pytest.fixture
async def make_host() -> AsyncIterator[Callable[..., object]]:
    """``await make_host(**config)`` -> a started host; all are closed after the test,
    which then asserts that no task of theirs outlived them."""
    hosts: list[Host] = []
    before = asyncio.all_tasks()

    async def factory(listen: bool = True, **config: object) -> Host:
        h = Host(
            IdentityKey.generate(),
            listen=[LOCAL] if listen else [],
            config=HostConfig(**config),  # type: ignore[arg-type]
        )
        await h.start()
        hosts.append(h)
        return h

    yield factory
    for h in hosts:
        await h.close()
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()]
    assert not leaked, f"tasks outlived their hosts: {leaked}"


def window_used_up(stream: Stream | None) -> bool:
    """Whether the sender on ``stream`` has no window left: it waits for the receiver."""
    return stream is not None and stream.conn.yamux.send_window(stream.sid) == 0
