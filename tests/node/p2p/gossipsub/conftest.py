"""Fixtures for GossipSub service tests: a GossipSub on each host from ``make_host``
(``tests/node/p2p/conftest.py``), closed before the hosts, whose leak check then covers
the GossipSub tasks too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from node.p2p.gossipsub.params import GossipParams
from node.p2p.gossipsub.service import GossipSub, ServiceConfig
from node.p2p.host import HostConfig
from tests.helpers import dial_addr, wait_for

from ..conftest import MakeHost

__all__ = ["MakeNode", "dial_addr", "make_node", "wait_for"]

MakeNode = Callable[..., Awaitable[GossipSub]]


@pytest.fixture
async def make_node(make_host: MakeHost) -> AsyncIterator[MakeNode]:
    nodes: list[GossipSub] = []

    async def factory(
        params: GossipParams | None = None,
        config: ServiceConfig | None = None,
        host_config: HostConfig | None = None,
        **kw: Any,
    ) -> GossipSub:
        host = await make_host(config=host_config)
        gs = GossipSub(
            host, params=params or GossipParams(heartbeat_interval=0.1), config=config, **kw
        )
        await gs.start()
        nodes.append(gs)
        return gs

    yield factory
    for gs in nodes:
        await gs.close()
