"""Fixtures shared by the daemon tests that need real libp2p hosts on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from node.p2p.host import Host
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import IdentityKey


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
