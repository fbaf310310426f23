"""How the host and the protocols on it talk: events in, a narrow public API out.

The shape is rust-libp2p's NetworkBehaviour (the swarm hands each behaviour connection
events and the behaviour acts through the swarm), kept small:

- the host tells each ``Behaviour`` that a connection was established (``first`` when it
  is the peer's only one) or closed (``last`` when none is left), and that its own set of
  protocols changed; inbound streams go to the handler set for their protocol with
  ``set_stream_handler``;
- a protocol acts through ``HostAPI`` only: open streams, dial, look up connections,
  record what it learnt about peers in the host's ``PeerStore``, count drops, report a
  misbehaving peer, and run tasks as children of the host so that closing the host stops
  them.

The host implements ``HostAPI`` (structurally); protocols import this module and never
``host``, so the host imports them without a cycle, and a protocol can be read and
tested against this interface alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from node.p2p.connection import Connection, Stream
from node.p2p.hostconfig import HostConfig
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import IdentityKey, PeerID
from node.p2p.peerstore import PeerStore


class DialError(ConnectionError):
    """A dial failed: unreachable, refused, timed out, or the peer failed authentication."""


class PeerNotConnected(ConnectionError):
    """A stream was requested to a peer with no open connection."""


class HostAPI(Protocol):
    """What a protocol may use of the host it runs on."""

    @property
    def peer_id(self) -> PeerID: ...
    @property
    def identity(self) -> IdentityKey: ...
    @property
    def config(self) -> HostConfig: ...
    @property
    def peerstore(self) -> PeerStore: ...

    def count(self, reason: str, peer: PeerID | None = None, detail: str = "") -> None:
        """Count (and log once per reason) something dropped or refused."""
        ...

    def report_misbehaviour(self, peer: PeerID, reason: str) -> None:
        """Tell the misbehaviour hooks (peer scoring) that ``peer`` broke a protocol."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a child of the host (RuntimeError once the host is closing)."""
        ...

    def supported_protocols(self) -> list[str]: ...
    def advertised_addrs(self) -> list[Multiaddr]: ...
    def signed_peer_record(self) -> bytes: ...
    def connected_peers(self) -> list[PeerID]: ...
    def is_connected(self, peer: PeerID) -> bool: ...
    def connections(self, peer: PeerID) -> list[Connection]: ...
    async def connect(self, addr: Multiaddr) -> PeerID: ...
    async def new_stream(
        self, peer: PeerID, protocols: list[str], *, dial: bool = False
    ) -> Stream: ...
    async def new_stream_on(self, conn: Connection, protocols: list[str]) -> Stream: ...


class Behaviour:
    """A protocol that hears of the host's connection events; every hook defaults to
    doing nothing. Hooks run synchronously inside the host's bookkeeping, so one that has
    I/O to do spawns it (under the connection's ``tasks`` or ``HostAPI.spawn``)."""

    def on_connection_established(self, conn: Connection, *, first: bool) -> None:
        """``conn`` is upgraded and registered; ``first``: the peer had no other one."""

    def on_connection_closed(self, conn: Connection, *, last: bool) -> None:
        """``conn`` is gone; ``last``: the peer has no connection left."""

    def on_local_protocols_changed(self) -> None:
        """A stream handler was added or removed on this host."""


class PeerNotifee(Behaviour):
    """Peer-level events for code that only cares whether a peer is reachable:
    ``on_connected(peer)`` with its first connection, ``on_disconnected(peer)`` when its
    last one closed."""

    def __init__(
        self, on_connected: Callable[[PeerID], None], on_disconnected: Callable[[PeerID], None]
    ) -> None:
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected

    def on_connection_established(self, conn: Connection, *, first: bool) -> None:
        if first:
            self._on_connected(conn.peer)

    def on_connection_closed(self, conn: Connection, *, last: bool) -> None:
        if last:
            self._on_disconnected(conn.peer)
