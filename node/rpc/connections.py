"""The RPC's connection budget: how many TCP connections, and for how long each may wait.

aiohttp accepts every connection and lets one that never completes a request sit for an
hour, so a client that opens a few hundred sockets and trickles header bytes (slowloris)
holds them all while the file descriptors and memory they cost are the node's. The guard
here sits between the listening socket and aiohttp's protocol and owns the table of live
connections:

- a connection is *waiting* until its request head has reached a handler, and again
  after the handler answered; a waiting connection must make progress in time: the head
  of a request must be complete within ``header_timeout`` of the connection opening or of
  the first byte after a response, and a keep-alive connection may sit with nothing sent
  for ``idle_timeout``; past either it is closed;
- at most ``max_per_ip`` connections per client address and ``max_connections`` in all.
  A new connection over a cap takes the place of the connection that has been waiting
  longest under that cap (an honest client's connection sends its head at once, so it is
  never the one waiting longest for long); when every connection under the cap is busy
  with a request, the newcomer gets a 503 and is closed.

Handlers report requests through ``request_started`` / ``request_finished`` (the server's
middleware), since only aiohttp's parser knows where a request head ends. A request's
body is bounded by the handler that reads it (``POST /txs``), not here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

__all__ = ["ConnectionGuard", "ConnectionLimits"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    """The budget (``[rpc]`` in config.toml); seconds are floats so tests can be quick."""

    max_connections: int = 256
    max_per_ip: int = 64
    header_timeout: float = 10.0
    idle_timeout: float = 60.0


def _refusal(message: str) -> bytes:
    body = json.dumps({"error": {"code": "too_many_connections", "message": message}}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class _Conn:
    """One admitted connection's place in the table."""

    __slots__ = ("busy", "receiving", "since", "timer", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.busy = False  # a handler is answering one of its requests
        self.receiving = True  # bytes of a request head are (or may be) arriving
        self.since = time.monotonic()  # waiting since
        self.timer: asyncio.TimerHandle | None = None


class ConnectionGuard:
    """The live RPC connections (see the module docstring); one per server."""

    def __init__(self, limits: ConnectionLimits | None = None) -> None:
        self.limits = limits or ConnectionLimits()
        self._conns: dict[asyncio.BaseTransport, _Conn] = {}
        self._by_ip: dict[str, set[_Conn]] = {}
        self.counters: dict[str, int] = {}

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1

    def __len__(self) -> int:
        return len(self._conns)

    @property
    def busy(self) -> int:
        """Connections a handler is answering a request of."""
        return sum(1 for c in self._conns.values() if c.busy)

    def wrap(self, inner: Callable[[], asyncio.BaseProtocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` that admits connections through
        this guard before ``inner``'s protocol (aiohttp's request handler) sees them."""
        return lambda: _GuardedProtocol(self, inner)

    # ----------------------------------------------------------------- admission

    def admit(self, transport: asyncio.Transport) -> bool:
        """Take ``transport`` into the table, making room under the caps by closing the
        connection waiting longest; False (503 sent, closed) when there is no room."""
        ip = _client_ip(transport)
        same_ip = self._by_ip.get(ip, set())
        lim = self.limits
        if len(same_ip) >= lim.max_per_ip and not self._evict(same_ip, "evicted_per_ip"):
            self._refuse(transport, "refused_per_ip", f"more than {lim.max_per_ip} from {ip}")
            return False
        if len(self._conns) >= lim.max_connections and not self._evict(
            self._conns.values(), "evicted_global"
        ):
            self._refuse(transport, "refused_global", f"more than {lim.max_connections}")
            return False
        conn = _Conn(transport)
        self._conns[transport] = conn
        self._by_ip.setdefault(ip, set()).add(conn)
        self._arm(conn, lim.header_timeout, "header_timeout")
        return True

    def _evict(self, conns: Iterable[_Conn], reason: str) -> bool:
        waiting = [c for c in conns if not c.busy]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.since)
        self._count(reason)
        self._drop(oldest)
        return True

    def _refuse(self, transport: asyncio.Transport, reason: str, detail: str) -> None:
        self._count(reason)
        log.debug("RPC connection refused: %s", detail)
        transport.write(_refusal(f"the node serves no more connections now ({detail})"))
        transport.close()

    def forget(self, transport: asyncio.BaseTransport) -> None:
        """The connection is gone (``connection_lost``)."""
        conn = self._conns.pop(transport, None)
        if conn is None:
            return
        if conn.timer is not None:
            conn.timer.cancel()
        ip = _client_ip(conn.transport)
        peers = self._by_ip.get(ip)
        if peers is not None:
            peers.discard(conn)
            if not peers:
                del self._by_ip[ip]

    # ----------------------------------------------------------------- progress

    def data_received(self, transport: asyncio.BaseTransport) -> None:
        """Bytes arrived: a waiting, idle connection is now receiving a request head."""
        conn = self._conns.get(transport)
        if conn is not None and not conn.busy and not conn.receiving:
            conn.receiving = True
            self._arm(conn, self.limits.header_timeout, "header_timeout")

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        """A request's head reached a handler: the connection is busy, not waiting."""
        conn = self._conns.get(transport) if transport is not None else None
        if conn is not None:
            conn.busy = True
            if conn.timer is not None:
                conn.timer.cancel()
                conn.timer = None

    def request_finished(self, transport: asyncio.BaseTransport | None) -> None:
        """The handler answered: the connection waits for its next request."""
        conn = self._conns.get(transport) if transport is not None else None
        if conn is not None:
            conn.busy = False
            conn.receiving = False
            conn.since = time.monotonic()
            self._arm(conn, self.limits.idle_timeout, "idle_timeout")

    def _arm(self, conn: _Conn, seconds: float, reason: str) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
        loop = asyncio.get_running_loop()
        conn.timer = loop.call_later(seconds, self._expire, conn, reason)

    def _expire(self, conn: _Conn, reason: str) -> None:
        conn.timer = None
        if not conn.busy and self._conns.get(conn.transport) is conn:
            self._count(reason)
            self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        t = conn.transport
        self.forget(t)
        # A response the client does not read would keep a graceful close pending.
        if t.get_write_buffer_size():
            t.abort()
        else:
            t.close()


def _client_ip(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return ""


class _GuardedProtocol(asyncio.Protocol):
    """Hands a connection to the inner protocol once the guard admitted it."""

    def __init__(self, guard: ConnectionGuard, inner: Callable[[], asyncio.BaseProtocol]) -> None:
        self.guard = guard
        self.make_inner = inner
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's are not asyncio.Transport subclasses.
        tr = cast(asyncio.Transport, transport)
        if not self.guard.admit(tr):
            return
        self.transport = tr
        self.inner = cast(asyncio.Protocol, self.make_inner())
        self.inner.connection_made(tr)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.guard.forget(self.transport)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.inner is None or self.transport is None:
            return
        self.guard.data_received(self.transport)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()
