"""Fixtures for GossipSub service tests: hosts with a GossipSub each on 127.0.0.1, all closed
after the test, which then asserts that none of their tasks outlived them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from node.p2p.gossipsub.params import GossipParams
from node.p2p.gossipsub.service import GossipSub, ServiceConfig
from node.p2p.host import Host, HostConfig
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import IdentityKey
from tests.helpers import dial_addr, wait_for

__all__ = ["MakeNode", "dial_addr", "make_node", "wait_for"]

LOCAL = Multiaddr.parse("/ip4/127.0.0.1/tcp/0")
MakeNode = Callable[..., Awaitable[GossipSub]]


@pytest.fixture
async def make_node() -> AsyncIterator[MakeNode]:
    before = asyncio.all_tasks()
    nodes: list[GossipSub] = []
    hosts: list[Host] = []

    async def factory(
        params: GossipParams | None = None,
        config: ServiceConfig | None = None,
        host_config: HostConfig | None = None,
        **kw: Any,
    ) -> GossipSub:
        host = Host(IdentityKey.generate(), listen=[LOCAL], config=host_config)
        await host.start()
        hosts.append(host)
        gs = GossipSub(
            host, params=params or GossipParams(heartbeat_interval=0.1), config=config, **kw
        )
        await gs.start()
        nodes.append(gs)
        return gs

    yield factory
    for gs in nodes:
        await gs.close()
    for h in hosts:
        await h.close()
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before - {asyncio.current_task()} if not t.done()]
    assert not leaked, f"tasks outlived their owners: {leaked}"
