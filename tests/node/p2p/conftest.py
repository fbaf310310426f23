"""The one host fixture of the p2p tests: hosts on 127.0.0.1 that are closed after the
test, which then asserts that no task of theirs outlived them. The GossipSub fixture
(``gossipsub/conftest.py``) builds its hosts with it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from node.p2p.connection import Stream
from node.p2p.host import Host, HostConfig
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import IdentityKey
from tests.helpers import dial_addr

__all__ = ["MakeHost", "dial_addr", "make_host", "window_used_up"]

LOCAL = Multiaddr.parse("/ip4/127.0.0.1/tcp/0")
MakeHost = Callable[..., Awaitable[Host]]


@pytest.fixture
async def make_host() -> AsyncIterator[MakeHost]:
    """``await make_host(listen=True, config=None, **fields)`` -> a started host whose
    config is ``config`` (default ``HostConfig()``) with ``fields`` replaced."""
    hosts: list[Host] = []
    before = asyncio.all_tasks()

    async def factory(listen: bool = True, config: HostConfig | None = None, **fields: Any) -> Host:
        h = Host(
            IdentityKey.generate(),
            listen=[LOCAL] if listen else [],
            config=dataclasses.replace(config or HostConfig(), **fields),
        )
        await h.start()
        hosts.append(h)
        return h

    yield factory
    for h in hosts:
        await h.close()
    leaked = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()]
    assert not leaked, f"tasks outlived their owners: {leaked}"


def window_used_up(stream: Stream | None) -> bool:
    """Whether the sender on ``stream`` has no window left: it waits for the receiver."""
    return stream is not None and stream.conn.yamux.send_window(stream.sid) == 0
