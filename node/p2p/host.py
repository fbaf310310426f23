"""The libp2p host: listens and dials over TCP, upgrades connections, dispatches streams.

Every connection is secured with Noise and muxed with yamux (plaintext is never offered
nor accepted). Inbound streams are routed by multistream-select to the handler registered
for their protocol. The host owns one TaskSet for its own children (upgrades, connection
manager loops, cleanups) and each connection owns one for its streams; ``close()`` cancels
and awaits all of them and waits until every socket is gone.

The host owns its connections, its ``PeerStore`` and its counters. Protocols see it
through ``behaviour.HostAPI`` and hear of connections as ``Behaviour`` events (identify
and the connection manager are the host's own behaviours; ``add_notifee`` and
``add_behaviour`` add more); connections report to it as their ``ConnectionOwner``.

Every dropped connection, refused stream or rejected frame increments ``counters[reason]``
and is logged once per reason (at warning level the first time, debug afterwards), so a
flood of bad input cannot flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from node.p2p import identify, ping
from node.p2p.behaviour import Behaviour, DialError, PeerNotConnected, PeerNotifee
from node.p2p.connection import (
    Connection,
    Stream,
    StreamReset,
    UpgradeError,
    WireProtocol,
    upgrade,
)
from node.p2p.connmgr import ConnectionManager
from node.p2p.hostconfig import HostConfig
from node.p2p.multiaddr import Multiaddr, MultiaddrError
from node.p2p.multistream import Dialer, Listener, MultistreamError
from node.p2p.noise import NoiseError, NoiseSession, PeerMismatch
from node.p2p.peer_id import IdentityKey, PeerID
from node.p2p.peer_record import seal
from node.p2p.peerstore import PeerStore, is_dialable
from node.p2p.tasks import TaskSet

__all__ = ["DialError", "Host", "HostConfig", "PeerNotConnected", "install_uvloop"]

log = logging.getLogger(__name__)

StreamHandler = Callable[[Stream], Awaitable[None]]

MAX_BANS = 8192
"""Peers banned at once (``disconnect(..., ban=)``). A full map gives up an expired ban,
else the oldest, one per new ban: a ban flood costs one old ban each, never all of them."""


def _local_ips(*, v6: bool) -> list[str]:
    """Non-loopback addresses of this host name (loopback only when there are none)."""
    family = socket.AF_INET6 if v6 else socket.AF_INET
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, family, socket.SOCK_STREAM)
    except OSError:
        infos = []
    ips = sorted({str(info[4][0]) for info in infos})
    public = [ip for ip in ips if not ipaddress.ip_address(ip).is_loopback]
    return public or (["::1"] if v6 else ["127.0.0.1"])


def install_uvloop() -> bool:
    """Use uvloop for new event loops when it is installed; returns whether it is."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


@dataclass
class _PendingUpgrade:
    """An inbound connection in its upgrade: where from, and the task running it."""

    ip: str
    task: asyncio.Task[None] | None = None


class Host:
    def __init__(
        self,
        identity: IdentityKey,
        *,
        listen: list[Multiaddr] | None = None,
        config: HostConfig | None = None,
    ) -> None:
        self.identity = identity
        self.peer_id = identity.peer_id
        self.config = config or HostConfig()
        self._listen = list(listen or [])
        self._servers: list[asyncio.Server] = []
        self._listen_addrs: list[Multiaddr] = []
        self._tasks = TaskSet("host")
        self._conns: dict[PeerID, list[Connection]] = {}
        self._handlers: dict[str, StreamHandler] = {}
        self._misbehaviour_hooks: list[Callable[[PeerID, str], None]] = []
        self.counters: Counter[str] = Counter()
        self._logged_reasons: set[str] = set()
        self.peerstore = PeerStore(self.peer_id, self.count)
        self._bans: dict[PeerID, float] = {}
        self._own_record: bytes | None = None
        self._record_seq = time.time_ns() // 1000
        self._pending: dict[WireProtocol, _PendingUpgrade] = {}
        self._started = False
        self._closing = False
        # Events go first to the behaviours added with add_behaviour / add_notifee, then to
        # the host's own: a notifee hears of a connection before the manager may prune it.
        self._behaviours: list[Behaviour] = []
        self.identify = identify.Identify(self)
        self.connmgr = ConnectionManager(self)
        self._own_behaviours: tuple[Behaviour, ...] = (self.identify, self.connmgr)
        self.set_stream_handler(identify.PROTOCOL_ID, self.identify.handle_request)
        self.set_stream_handler(identify.PUSH_PROTOCOL_ID, self.identify.handle_push)
        self.set_stream_handler(ping.PROTOCOL_ID, ping.handle_ping)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        for addr in self._listen:
            host, port = addr.tcp_endpoint()
            server = await loop.create_server(
                lambda: WireProtocol(on_made=self._on_inbound), host, port
            )
            self._servers.append(server)
            for sock in server.sockets:
                name = sock.getsockname()
                self._listen_addrs.append(Multiaddr.from_tcp(name[0], name[1]))
        self.connmgr.start()

    async def close(self) -> None:
        """Stop listening, close every connection and await every task the host started."""
        if self._closing:
            return
        self._closing = True
        for server in self._servers:
            server.close()
        conns = [c for lst in self._conns.values() for c in lst]
        await asyncio.gather(*(c.aclose() for c in conns), return_exceptions=True)
        await self._tasks.aclose()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    async def __aenter__(self) -> Host:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def listen_addrs(self) -> list[Multiaddr]:
        return list(self._listen_addrs)

    def advertised_addrs(self) -> list[Multiaddr]:
        """What identify and our signed record tell peers: ``announce`` if configured,
        else the bound addresses that others can dial (not 0.0.0.0 / ::)."""
        if self.config.announce:
            return list(self.config.announce)
        out: list[Multiaddr] = []
        for addr in self._listen_addrs:
            if is_dialable(addr):
                out.append(addr)
                continue
            # Bound to 0.0.0.0 / ::: advertise this machine's own addresses instead
            # (in a container, the address other containers reach it at).
            host, port = addr.tcp_endpoint()
            out += [Multiaddr.from_tcp(ip, port) for ip in _local_ips(v6=host == "::")]
        return out

    # -- registration -------------------------------------------------------------------------

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        new = protocol not in self._handlers
        self._handlers[protocol] = handler
        if new:
            self._emit(lambda b: b.on_local_protocols_changed())

    def remove_stream_handler(self, protocol: str) -> None:
        if self._handlers.pop(protocol, None) is not None:
            self._emit(lambda b: b.on_local_protocols_changed())

    def supported_protocols(self) -> list[str]:
        return sorted(self._handlers)

    def add_behaviour(self, behaviour: Behaviour) -> None:
        """Let ``behaviour`` hear of this host's connection and protocol events."""
        self._behaviours.append(behaviour)

    def add_notifee(
        self, on_connected: Callable[[PeerID], None], on_disconnected: Callable[[PeerID], None]
    ) -> None:
        """``on_connected(peer)`` with a peer's first connection, ``on_disconnected(peer)``
        once its last one closed."""
        self.add_behaviour(PeerNotifee(on_connected, on_disconnected))

    def _emit(self, hook: Callable[[Behaviour], None]) -> None:
        """Hand an event to every behaviour; one that raises is logged and skipped, so a
        broken protocol cannot keep the others from hearing it."""
        for behaviour in (*self._behaviours, *self._own_behaviours):
            try:
                hook(behaviour)
            except Exception:
                log.exception("behaviour %r failed on a host event", behaviour)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a child of the host, so that ``close()`` cancels and awaits it.
        Raises RuntimeError (and closes ``coro``) once the host is closing."""
        if self._closing:
            coro.close()
            raise RuntimeError("host is closing")
        return self._tasks.spawn(coro, name=name)

    def add_misbehaviour_hook(self, hook: Callable[[PeerID, str], None]) -> None:
        """``hook(peer, reason)`` runs whenever a peer is cut off for breaking a protocol."""
        self._misbehaviour_hooks.append(hook)

    # -- counters -----------------------------------------------------------------------------

    def count(self, reason: str, peer: PeerID | None = None, detail: str = "") -> None:
        self.counters[reason] += 1
        if reason not in self._logged_reasons:
            self._logged_reasons.add(reason)
            log.warning("p2p drop [%s] peer=%s %s (logged once per reason)", reason, peer, detail)
        else:
            log.debug("p2p drop [%s] peer=%s %s", reason, peer, detail)

    def report_misbehaviour(self, peer: PeerID, reason: str) -> None:
        """Tell the misbehaviour hooks that ``peer`` broke a protocol (it is being cut off)."""
        for hook in self._misbehaviour_hooks:
            try:
                hook(peer, reason)
            except Exception:
                log.exception("misbehaviour hook failed")

    # -- peers --------------------------------------------------------------------------------

    def is_banned(self, peer: PeerID) -> bool:
        until = self._bans.get(peer)
        if until is None:
            return False
        if until <= time.monotonic():
            del self._bans[peer]
            return False
        return True

    def connected_peers(self) -> list[PeerID]:
        return list(self._conns)

    def is_connected(self, peer: PeerID) -> bool:
        return peer in self._conns

    def connections(self, peer: PeerID) -> list[Connection]:
        return list(self._conns.get(peer, ()))

    def add_discovered_peers(self, peers: Iterable[tuple[PeerID, list[Multiaddr]]]) -> None:
        """Feed peers learned elsewhere (e.g. GossipSub PRUNE peer exchange) to the manager."""
        for peer, addrs in peers:
            self.peerstore.add_addrs(peer, addrs)
            self.connmgr.discovered(peer)

    # -- signed peer records (identify, GossipSub peer exchange) -------------------------------

    def signed_peer_record(self) -> bytes:
        """Our listen addresses as a signed envelope (for identify and PRUNE PX)."""
        if self._own_record is None:
            self._own_record = seal(self.identity, self.advertised_addrs(), self._record_seq)
        return self._own_record

    def add_px_peers(self, peers: Iterable[tuple[PeerID, bytes | None]]) -> None:
        """GossipSub PRUNE peer exchange: (peer, signedPeerRecord or None) pairs.

        Valid records add the peer's own signed addresses; the peers are then offered to
        the connection manager, which dials them while below ``target_peers``.
        """
        for peer, record in peers:
            if peer == self.peer_id:
                continue
            if record and not self.peerstore.consume_record(peer, record):
                continue
            self.connmgr.discovered(peer)

    def disconnect(self, peer: PeerID, reason: str, *, ban: float = 0.0) -> None:
        """Close every connection to ``peer``; ``reason`` should be a short fixed token.

        With ``ban`` > 0 the peer is also refused (inbound and outbound) for that many
        seconds, so a graylisted peer cannot simply reconnect.
        """
        if ban > 0:
            now = time.monotonic()
            self._bans.pop(peer, None)  # re-banned: moves to the newest end
            if len(self._bans) >= MAX_BANS:
                expired = next((p for p, until in self._bans.items() if until <= now), None)
                del self._bans[expired if expired is not None else next(iter(self._bans))]
            self._bans[peer] = now + ban
        conns = self._conns.get(peer)
        if not conns:
            return
        self.count(f"disconnect:{reason}", peer)
        for conn in list(conns):
            conn.close(reason)

    # -- dialing ------------------------------------------------------------------------------

    async def connect(self, addr: Multiaddr) -> PeerID:
        """Dial ``addr`` (verifying its /p2p/ peer ID if present); returns the remote peer."""
        if self._closing:
            raise DialError("host is closing")
        expected = addr.peer_id
        if expected == self.peer_id:
            raise DialError("refusing to dial ourselves")
        if expected is not None and expected in self._conns:
            return expected
        if expected is not None and self.is_banned(expected):
            raise DialError(f"{expected} is banned")
        try:
            host, port = addr.tcp_endpoint()
        except MultiaddrError as e:
            raise DialError(str(e)) from e
        loop = asyncio.get_running_loop()
        proto: WireProtocol | None = None
        try:
            async with asyncio.timeout(self.config.dial_timeout):
                _, proto = await loop.create_connection(WireProtocol, host, port)
            async with asyncio.timeout(self.config.handshake_timeout):
                noise, leftover = await upgrade(
                    proto, self.identity, initiator=True, expected_peer=expected
                )
        except BaseException as e:
            if proto is not None and proto.transport is not None:
                proto.transport.abort()
            if isinstance(e, Exception):
                reason = self._upgrade_failure_reason(e)
                if reason != "dial_failed":
                    self.count(reason, expected, f"dialing {addr}: {e}")
                raise DialError(f"dial {addr} failed: {reason}: {e}") from e
            raise
        assert noise.remote_peer is not None
        peer = noise.remote_peer
        conn = self._make_connection(proto, noise, peer, initiator=True, remote=addr)
        if not self._add_connection(conn, leftover):
            raise DialError(f"connection to {peer} refused (banned or host closing)")
        self.peerstore.add_addrs(peer, [addr])
        return peer

    @staticmethod
    def _upgrade_failure_reason(e: Exception) -> str:
        if isinstance(e, PeerMismatch):
            return "peer_id_mismatch"
        if isinstance(e, NoiseError):
            return "noise_error"
        if isinstance(e, MultistreamError):
            return "multistream_error"
        if isinstance(e, TimeoutError):
            return "handshake_timeout"
        if isinstance(e, UpgradeError | EOFError):
            return "upgrade_eof"
        return "dial_failed"

    def _make_connection(
        self,
        proto: WireProtocol,
        noise: NoiseSession,
        peer: PeerID,
        *,
        initiator: bool,
        remote: Multiaddr,
    ) -> Connection:
        return Connection(
            self,
            proto,
            noise,
            peer,
            initiator=initiator,
            remote_addr=remote.without_peer_id(),
            yamux_config=self.config.yamux,
            max_write_buffer=self.config.max_write_buffer,
        )

    # -- inbound ------------------------------------------------------------------------------

    @property
    def pending_upgrades(self) -> int:
        """Inbound connections still in their upgrade."""
        return len(self._pending)

    def _on_inbound(self, proto: WireProtocol) -> None:
        assert proto.transport is not None
        if self._closing:
            proto.transport.abort()
            return
        peername = proto.transport.get_extra_info("peername")
        ip = str(peername[0]) if isinstance(peername, tuple) and peername else ""
        self._make_room_for_upgrade(ip)
        entry = _PendingUpgrade(ip)
        self._pending[proto] = entry
        try:
            entry.task = self._tasks.spawn(self._upgrade_inbound(proto), name="inbound upgrade")
        except RuntimeError:
            del self._pending[proto]
            proto.transport.abort()

    def _make_room_for_upgrade(self, ip: str) -> None:
        """Shed one pending upgrade if ``ip``'s share or the whole pool is taken: the
        one that made the least progress (no byte yet first, then the longest silent)."""
        cfg = self.config
        same_ip = [p for p, e in self._pending.items() if e.ip == ip]
        if len(same_ip) >= cfg.max_pending_upgrades_per_ip:
            pool = same_ip
        elif len(self._pending) >= cfg.max_pending_upgrades:
            pool = list(self._pending)
        else:
            return
        victim = min(pool, key=lambda p: (p.upgrade_bytes > 0, p.last_received))
        entry = self._pending.pop(victim)
        self.count("upgrade_shed", None, f"pending upgrade from {entry.ip} shed for a newcomer")
        if victim.transport is not None:
            victim.transport.abort()
        if entry.task is not None:
            entry.task.cancel()

    async def _upgrade_inbound(self, proto: WireProtocol) -> None:
        assert proto.transport is not None
        peername = proto.transport.get_extra_info("peername")
        try:
            try:
                async with asyncio.timeout(self.config.handshake_timeout):
                    async with asyncio.timeout(self.config.first_byte_timeout):
                        await proto.wait_readable()
                    noise, leftover = await upgrade(
                        proto, self.identity, initiator=False, expected_peer=None
                    )
            except Exception as e:
                proto.transport.abort()
                self.count(self._upgrade_failure_reason(e), None, f"inbound from {peername}: {e}")
                return
            except BaseException:
                proto.transport.abort()
                raise
        finally:
            self._pending.pop(proto, None)
        assert noise.remote_peer is not None
        try:
            remote = Multiaddr.from_tcp(peername[0], peername[1])
        except (MultiaddrError, TypeError, IndexError):
            remote = Multiaddr.parse("/ip4/0.0.0.0/tcp/0")
        conn = self._make_connection(
            proto, noise, noise.remote_peer, initiator=False, remote=remote
        )
        self._add_connection(conn, leftover)

    def _add_connection(self, conn: Connection, leftover: bytes) -> bool:
        banned = self.is_banned(conn.peer)
        if self._closing or banned:
            if banned:
                self.count("banned_peer", conn.peer, "connection refused")
            if conn.proto.transport is not None:
                conn.proto.transport.abort()
            return False
        lst = self._conns.setdefault(conn.peer, [])
        first = not lst
        lst.append(conn)
        if first:
            self.peerstore.connected(conn.peer)
        conn.start(leftover)
        if conn.closed:
            return True
        conn.tasks.spawn(self._keepalive(conn), name="keepalive")
        self._emit(lambda b: b.on_connection_established(conn, first=first))
        self._cap_connections(conn.peer, conn)
        return True

    def _cap_connections(self, peer: PeerID, newest: Connection) -> None:
        """Keep at most ``max_connections_per_peer`` open connections to ``peer``: the
        newest, then the ones we dialled; the oldest inbound ones go first."""
        live = [c for c in self._conns.get(peer, ()) if not c.closed and c is not newest]
        excess = len(live) + 1 - self.config.max_connections_per_peer
        if excess <= 0:
            return
        # Oldest first in the list; inbound (initiator False) sorts before outbound.
        for conn in sorted(live, key=lambda c: c.initiator)[:excess]:
            self.count("peer_connection_limit", peer, "over max_connections_per_peer")
            conn.close("over max_connections_per_peer")

    def connection_lost(self, conn: Connection) -> None:
        """``ConnectionOwner``: the socket of ``conn`` is gone (called by ``conn``)."""
        lst = self._conns.get(conn.peer)
        if lst is not None and conn in lst:
            lst.remove(conn)
            last = not lst
            if last:
                del self._conns[conn.peer]
                self.peerstore.disconnected(conn.peer)
            self._emit(lambda b: b.on_connection_closed(conn, last=last))
        if not self._tasks.closed:
            self._tasks.spawn(conn.tasks.aclose(), name="connection cleanup")

    async def _keepalive(self, conn: Connection) -> None:
        while not conn.closed:
            await asyncio.sleep(self.config.keepalive_interval)
            try:
                await conn.ping(self.config.keepalive_timeout)
            except TimeoutError:
                self.count("keepalive_timeout", conn.peer)
                conn.close("keepalive timeout")
                return
            except StreamReset:
                return

    # -- streams ------------------------------------------------------------------------------

    def _pick_connection(self, peer: PeerID) -> Connection:
        for conn in self._conns.get(peer, ()):
            if not conn.closed:
                return conn
        raise PeerNotConnected(f"not connected to {peer}")

    async def new_stream(self, peer: PeerID, protocols: list[str], *, dial: bool = False) -> Stream:
        """Open a stream to ``peer`` speaking the first of ``protocols`` it supports.

        With ``dial=True`` an unconnected peer is dialed at its known addresses first.
        Raises PeerNotConnected (or DialError when dialing), NegotiationFailed (none
        supported), StreamReset or TimeoutError.
        """
        if dial and not self.is_connected(peer):
            await self._dial_known(peer)
        return await self.new_stream_on(self._pick_connection(peer), protocols)

    async def _dial_known(self, peer: PeerID) -> None:
        addrs = self.peerstore.addrs(peer)
        if not addrs:
            raise PeerNotConnected(f"not connected to {peer} and no known address")
        errors = []
        for addr in addrs:
            try:
                await self.connect(addr.with_peer_id(peer))
                return
            except DialError as e:
                errors.append(str(e))
        raise DialError(f"could not reach {peer}: {'; '.join(errors)}")

    async def new_stream_on(self, conn: Connection, protocols: list[str]) -> Stream:
        st = conn.open_stream()
        try:
            async with asyncio.timeout(self.config.negotiate_timeout):
                await st.select_protocol(Dialer(protocols))
        except BaseException:
            st.reset()
            raise
        return st

    async def serve_stream(self, st: Stream) -> None:
        """``ConnectionOwner``: negotiate an inbound stream's protocol and run its handler
        (a task of the stream's connection)."""
        try:
            async with asyncio.timeout(self.config.negotiate_timeout):
                selected = await st.select_protocol(Listener(self._handlers.__contains__))
        except (EOFError, StreamReset) as e:
            # The remote gave up (typically after our "na" to a protocol we lack).
            log.debug("inbound stream from %s closed during negotiation: %r", st.peer, e)
            st.reset()
            return
        except (MultistreamError, TimeoutError) as e:
            self.count("stream_negotiation_failed", st.peer, str(e))
            st.reset()
            return
        handler = self._handlers.get(selected)
        if handler is None:
            st.reset()
            return
        try:
            await handler(st)
        except (StreamReset, EOFError, ConnectionError) as e:
            log.debug("handler for %s on %s ended: %r", selected, st.peer, e)
            st.reset()
        except Exception:
            self.count("handler_error", st.peer, selected)
            log.exception("stream handler for %s failed", selected)
            st.reset()
        else:
            await st.close()
