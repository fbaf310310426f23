"""Helpers every test directory shares: waiting on a condition, free ports, dial addresses.

Tests wait on a condition or an event with a deadline, never sleep and then assert: a
sleep is either too short on a loaded machine (a flaky test) or longer than needed.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from node.p2p.host import Host
    from node.p2p.multiaddr import Multiaddr

T = TypeVar("T")

__all__ = ["dial_addr", "free_base_port", "wait_for", "wait_until"]


async def wait_for(
    cond: Callable[[], T], timeout: float = 10.0, what: str = "condition", interval: float = 0.01
) -> T:
    """Poll ``cond`` on the event loop until it returns something truthy, and return that.

    Raises ``AssertionError`` naming ``what`` after ``timeout`` seconds, so a test that
    waits for something that never happens fails instead of passing on an empty result.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(interval)


def wait_until(
    cond: Callable[[], T], timeout: float = 10.0, what: str = "condition", interval: float = 0.1
) -> T:
    """The blocking form of ``wait_for``, for tests that drive other processes."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


def free_base_port(count: int = 2) -> int:
    """A base port whose ``count`` following ports are free on 127.0.0.1 right now.

    Chosen below the ephemeral range (32768+) so that no outbound connection of another
    test can take one of them between this check and the bind that follows.
    """
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 32_000 - count)
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError(f"no {count} free consecutive ports below 32000")


def dial_addr(host: Host) -> Multiaddr:
    """The address another host dials to reach ``host``: its first listen address + peer ID."""
    return host.listen_addrs[0].with_peer_id(host.peer_id)
