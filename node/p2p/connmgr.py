"""Connection manager: bootstrap, persistent peers, discovery dials and pruning.

- Bootstrap peers are dialed once at start (with a few backed-off retries).
- Persistent peers are kept connected for the host's whole life: after a failed dial or a
  disconnect the manager retries with exponential backoff (with jitter, capped).
- Discovered peers (GossipSub PRUNE peer exchange via ``Host.add_px_peers``, or
  ``Host.add_discovered_peers``) are dialed while the host has fewer than
  ``target_peers`` connections; the queue is bounded and overflow is counted.
- Above ``max_peers`` connections, the newest unprotected peers are pruned (inbound
  first). Persistent and bootstrap peers, and peers another layer protects (e.g. GossipSub
  mesh members via ``protect``), are never pruned.

It is a ``Behaviour`` of the host: it learns of connections from the host's events and
dials, prunes and runs its loops through ``HostAPI``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from node.p2p.behaviour import Behaviour, DialError, HostAPI
from node.p2p.connection import Connection
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import PeerID

log = logging.getLogger(__name__)

DISCOVERY_QUEUE = 256
BOOTSTRAP_ATTEMPTS = 3


class ConnectionManager(Behaviour):
    def __init__(self, host: HostAPI) -> None:
        self.host = host
        self._protected: dict[PeerID, set[str]] = {}
        self._connected_order: list[PeerID] = []  # oldest first
        self._inbound: set[PeerID] = set()
        self._queue: asyncio.Queue[PeerID] | None = None
        self._queued: set[PeerID] = set()
        self._changed: asyncio.Event | None = None
        self._dial_failures: dict[PeerID, float] = {}
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def start(self) -> None:
        cfg = self.host.config
        self._queue = asyncio.Queue(DISCOVERY_QUEUE)
        self._changed = asyncio.Event()
        for addr in (*cfg.persistent, *cfg.bootstrap):
            if addr.peer_id is not None:
                self.protect(addr.peer_id, "configured")
        for addr in cfg.persistent:
            self.host.spawn(self._keep_connected(addr), name=f"persistent {addr}")
        for addr in cfg.bootstrap:
            self.host.spawn(self._bootstrap(addr), name=f"bootstrap {addr}")
        self.host.spawn(self._discovery_worker(), name="discovery")

    # -- protection ---------------------------------------------------------------------------

    def protect(self, peer: PeerID, tag: str) -> None:
        self._protected.setdefault(peer, set()).add(tag)

    def unprotect(self, peer: PeerID, tag: str) -> None:
        tags = self._protected.get(peer)
        if tags is not None:
            tags.discard(tag)
            if not tags:
                del self._protected[peer]

    def is_protected(self, peer: PeerID) -> bool:
        return peer in self._protected

    # -- events from the host -----------------------------------------------------------------

    def on_connection_established(self, conn: Connection, *, first: bool) -> None:
        peer = conn.peer
        if peer not in self._connected_order:
            self._connected_order.append(peer)
        if not conn.initiator:
            self._inbound.add(peer)
        self._dial_failures.pop(peer, None)
        self._prune()
        self._notify()

    def on_connection_closed(self, conn: Connection, *, last: bool) -> None:
        if not last:
            return
        peer = conn.peer
        if peer in self._connected_order:
            self._connected_order.remove(peer)
        self._inbound.discard(peer)
        self._notify()

    def discovered(self, peer: PeerID) -> None:
        """Queue a dial to ``peer`` if we want more peers; its addresses must be in the
        host's peer store."""
        if (
            self._queue is None
            or peer == self.host.peer_id
            or self.host.is_connected(peer)
            or peer in self._queued
        ):
            return
        try:
            self._queue.put_nowait(peer)
        except asyncio.QueueFull:
            self.host.count("discovery_queue_full", peer)
            return
        self._queued.add(peer)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    # -- pruning ------------------------------------------------------------------------------

    def _prune(self) -> None:
        excess = len(self.host.connected_peers()) - self.host.config.max_peers
        if excess <= 0:
            return
        newest_first = list(reversed(self._connected_order))
        candidates = [p for p in newest_first if p in self._inbound and not self.is_protected(p)]
        candidates += [
            p for p in newest_first if p not in self._inbound and not self.is_protected(p)
        ]
        for peer in candidates[:excess]:
            self.host.count("pruned", peer, "over max_peers")
            for conn in self.host.connections(peer):
                conn.close("pruned")

    # -- loops --------------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        cfg = self.host.config
        delay = min(cfg.reconnect_max, cfg.reconnect_base * (2**attempt))
        return delay * random.uniform(0.5, 1.0)

    async def _dial(self, addr: Multiaddr) -> PeerID | None:
        try:
            return await self.host.connect(addr)
        except DialError as e:
            log.debug("dial %s failed: %s", addr, e)
            return None

    async def _bootstrap(self, addr: Multiaddr) -> None:
        for attempt in range(BOOTSTRAP_ATTEMPTS):
            if await self._dial(addr) is not None:
                return
            self.host.count("bootstrap_dial_failed", addr.peer_id, str(addr))
            await self.sleep(self._backoff(attempt))

    async def _keep_connected(self, addr: Multiaddr) -> None:
        attempt = 0
        peer = addr.peer_id
        assert self._changed is not None
        while True:
            if peer is not None and self.host.is_connected(peer):
                attempt = 0
                await self._wait_change()
                continue
            got = await self._dial(addr)
            if got is not None:
                peer = got
                self.protect(peer, "configured")
                attempt = 0
                continue
            self.host.count("reconnect_failed", peer, str(addr))
            await self.sleep(self._backoff(attempt))
            attempt += 1

    async def _wait_change(self) -> None:
        assert self._changed is not None
        self._changed.clear()
        await self._changed.wait()

    async def _discovery_worker(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            peer = await self._queue.get()
            self._queued.discard(peer)
            if self.host.is_connected(peer):
                continue
            if len(self.host.connected_peers()) >= self.host.config.target_peers:
                continue
            retry_at = self._dial_failures.get(peer)
            if retry_at is not None and retry_at > loop.time():
                continue
            for addr in self.host.peerstore.addrs(peer):
                if await self._dial(addr.with_peer_id(peer)) is not None:
                    break
            else:
                self._dial_failures[peer] = loop.time() + self.host.config.reconnect_max
                if len(self._dial_failures) > 4096:
                    self._dial_failures.clear()
