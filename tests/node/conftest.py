"""Fixtures of the node tests: ``node``, a running RPC server over a real ledger (see
nodekit), and ``hosts``, real libp2p hosts on 127.0.0.1 for the services and the daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.p2p.host import Host
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import IdentityKey
from tests.node.nodekit import RunningNode, running_node


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[RunningNode]:
    async with running_node(tmp_path) as n:
        yield n


@pytest.fixture
async def hosts() -> AsyncIterator[list[Host]]:
    """Three started hosts, not yet connected; closed (and their tasks awaited) after."""
    made: list[Host] = []
    for _ in range(3):
        h = Host(IdentityKey.generate(), listen=[Multiaddr.parse("/ip4/127.0.0.1/tcp/0")])
        await h.start()
        made.append(h)
    try:
        yield made
    finally:
        for h in made:
            await h.close()
