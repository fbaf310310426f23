"""The asyncio driver around the sans-I/O cores: one TCP connection, upgraded and muxed.

``WireProtocol`` is the asyncio Protocol for the socket. While the connection is being
upgraded (multistream -> Noise -> multistream -> yamux) it buffers bytes for the upgrade
coroutine; afterwards every received chunk goes straight through Noise and yamux inside
``data_received`` and lands in the receiving stream's buffer, with no reader task in
between. Memory stays bounded without pausing the socket because a stream's unread data
can never exceed the yamux window we granted (256 KiB until the application reads, and
all of a connection's windows within its ``YamuxConfig.max_buffered``); a peer that
overruns a window or breaks a protocol is cut off. Writes wait for the yamux send window
and for the socket to drain, which is how a slow reader slows its writer instead of
growing a queue.

A connection reports to its owner (the host) through ``ConnectionOwner`` only: inbound
streams to serve, counted drops, a misbehaving peer, and its own loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

from node.p2p import multistream, yamux
from node.p2p.multiaddr import Multiaddr
from node.p2p.noise import NoiseError, NoiseSession
from node.p2p.peer_id import IdentityKey, PeerID
from node.p2p.tasks import TaskSet

log = logging.getLogger(__name__)

MAX_UPGRADE_BUFFER = 256 * 1024
READ_BUFFER = 256 * 1024  # the socket is read into this per-connection buffer
PROTOCOL_NOISE = "/noise"


class StreamReset(ConnectionError):
    """The stream was reset by either side or its connection closed."""


class UpgradeError(ConnectionError):
    """The connection could not be secured and muxed."""


class ConnectionOwner(Protocol):
    """All a ``Connection`` needs of whoever owns it (the host): it reports here and
    never reaches into its owner, so it depends on no host type."""

    def count(self, reason: str, peer: PeerID | None = None, detail: str = "") -> None:
        """Something was dropped or refused (``reason`` is a short fixed token)."""
        ...

    def report_misbehaviour(self, peer: PeerID, reason: str) -> None:
        """The authenticated ``peer`` broke a protocol and is being cut off."""
        ...

    async def serve_stream(self, stream: Stream) -> None:
        """Serve a stream the remote opened; runs as a task of the connection."""
        ...

    def connection_lost(self, conn: Connection) -> None:
        """The socket of ``conn`` is gone; its streams are already reset."""
        ...


class WireProtocol(asyncio.BufferedProtocol):
    """Socket callbacks: buffered during the upgrade, then fed synchronously to a sink.

    The socket is read straight into one reused buffer (``get_buffer``), not into a new
    bytes object per read that the event loop fills by copying from its own buffer: the
    sink consumes each read before returning (Noise decrypts the complete frames into new
    buffers and copies only an unfinished frame's bytes aside).
    """

    def __init__(self, on_made: Callable[[WireProtocol], None] | None = None) -> None:
        self._on_made = on_made
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._wakeup = asyncio.Event()
        self._sink: Callable[[bytes | memoryview], None] | None = None
        self._rview: memoryview | None = None
        self._on_lost: Callable[[], None] | None = None
        self.eof = False
        self.lost = False
        # Upgrade progress, for the host's choice of which pending upgrade to shed.
        self.upgrade_bytes = 0
        self.last_received = time.monotonic()
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the Transport interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        if self._on_made is not None:
            self._on_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._rview is None:
            self._rview = memoryview(bytearray(READ_BUFFER))
        return self._rview

    def buffer_updated(self, nbytes: int) -> None:
        assert self._rview is not None
        with self._rview[:nbytes] as data:
            self.data_received(data)
        if nbytes == len(self._rview) and not self.lost and self.transport is not None:
            # A full buffer means the socket holds more, and libuv (uvloop) would read it
            # at once, up to 32 times, before the loop runs anything else: a relay busy
            # verifying a large message would not run the writer tasks that forward it, and
            # the next hop would sit idle meanwhile. One read per loop iteration, like
            # asyncio's own transports, keeps the pipeline moving.
            self.transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._resume_reading)

    def _resume_reading(self) -> None:
        if not self.lost and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes | memoryview) -> None:
        """Received bytes; ``data`` is only valid during the call (see ``get_buffer``)."""
        if self._sink is not None:
            self._sink(data)
            return
        self._buf += data
        self.upgrade_bytes += len(data)
        self.last_received = time.monotonic()
        if len(self._buf) > MAX_UPGRADE_BUFFER and self.transport is not None:
            self.transport.abort()
        self._wakeup.set()

    def eof_received(self) -> bool:
        self.eof = True
        self._wakeup.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wakeup.set()
        self._release_drain()
        if self._on_lost is not None:
            self._on_lost()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._release_drain()

    def _release_drain(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def drain(self) -> None:
        if self._paused and not self.lost:
            fut = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(fut)
            await fut

    async def wait_readable(self) -> None:
        """Upgrade phase only: wait until bytes arrived, or the socket ended."""
        while not self._buf and not (self.eof or self.lost):
            self._wakeup.clear()
            await self._wakeup.wait()

    async def read_some(self) -> bytes:
        """Upgrade phase only: the next received bytes; ConnectionError at EOF."""
        while not self._buf:
            if self.eof or self.lost:
                raise UpgradeError("connection closed during the upgrade")
            self._wakeup.clear()
            await self._wakeup.wait()
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        if self.transport is not None and not self.lost:
            self.transport.writelines(parts)

    def switch_to(
        self, sink: Callable[[bytes | memoryview], None], on_lost: Callable[[], None]
    ) -> None:
        self._sink = sink
        self._on_lost = on_lost
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            sink(data)
        if self.lost:
            on_lost()


async def negotiate(
    neg: multistream.Dialer | multistream.Listener,
    read: Callable[[], Awaitable[bytes]],
    write: Callable[[bytes], Awaitable[None]],
) -> tuple[str, bytes]:
    """Drive a multistream negotiator over any byte channel; returns (protocol, leftover)."""
    out = neg.data_to_send()
    if out:
        await write(out)
    while True:
        data = await read()
        if not data:
            raise EOFError("channel closed during protocol negotiation")
        selected = neg.receive_data(data)
        out = neg.data_to_send()
        if out:
            await write(out)
        if selected is not None:
            return selected, neg.leftover


async def upgrade(
    proto: WireProtocol,
    identity: IdentityKey,
    *,
    initiator: bool,
    expected_peer: PeerID | None,
) -> tuple[NoiseSession, bytes]:
    """Negotiate /noise and run the handshake; then negotiate /yamux/1.0.0 inside it.

    Returns the finished Noise session and any plaintext that already followed the muxer
    negotiation (it belongs to yamux).
    """

    async def raw_write(data: bytes) -> None:
        proto.write(data)

    neg: multistream.Dialer | multistream.Listener
    if initiator:
        neg = multistream.Dialer([PROTOCOL_NOISE])
    else:
        neg = multistream.Listener(lambda p: p == PROTOCOL_NOISE)
    _, leftover = await negotiate(neg, proto.read_some, raw_write)

    noise = NoiseSession(identity, initiator=initiator, expected_peer=expected_peer)
    proto.write(noise.data_to_send())
    plain = bytearray()
    if leftover:
        plain += noise.receive_data(leftover)
        proto.write(noise.data_to_send())
    while not noise.handshake_complete:
        plain += noise.receive_data(await proto.read_some())
        proto.write(noise.data_to_send())

    pending = bytes(plain)

    async def secure_read() -> bytes:
        nonlocal pending
        if pending:
            data, pending = pending, b""
            return data
        while True:
            data = noise.receive_data(await proto.read_some())
            if data:
                return bytes(data)

    async def secure_write(data: bytes) -> None:
        proto.write(noise.encrypt(data))

    if initiator:
        neg = multistream.Dialer([yamux.PROTOCOL_ID])
    else:
        neg = multistream.Listener(lambda p: p == yamux.PROTOCOL_ID)
    _, leftover = await negotiate(neg, secure_read, secure_write)
    return noise, leftover + pending


class Stream:
    """One yamux stream with a bounded receive buffer (bounded by the granted window)."""

    def __init__(self, conn: Connection, sid: int) -> None:
        self.conn = conn
        self.sid = sid
        self.peer: PeerID = conn.peer
        self.protocol = ""
        self._chunks: deque[bytes] = deque()
        self._head = 0  # bytes of _chunks[0] already read: small reads never copy the rest
        self._buffered = 0
        self._precredited = 0  # leading bytes whose window was already granted back
        self._eof = False
        self._reset = False
        self._local_closed = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._receiver: Callable[[bytes | memoryview], None] | None = None
        self._credit_held = False
        self._held_bytes = 0  # received and processed, but not yet granted back

    def __repr__(self) -> str:
        return f"Stream({self.peer}, {self.sid}, {self.protocol!r})"

    # -- fed by the connection ----------------------------------------------------------------

    def _feed(self, data: bytes | memoryview) -> None:
        receiver = self._receiver
        if receiver is not None:
            # The receiver has processed the bytes when it returns, so their window goes
            # straight back (the connection flushes once after the whole received chunk).
            self._deliver(receiver, data)
            if self._credit_held:
                self._held_bytes += len(data)
            else:
                self.conn.yamux.consumed(self.sid, len(data))
            return
        if isinstance(data, memoryview):  # buffered for read(): own it, as bytes
            data = bytes(data)
        self._chunks.append(data)
        self._buffered += len(data)
        self._readable.set()

    def _deliver(
        self, receiver: Callable[[bytes | memoryview], None], data: bytes | memoryview
    ) -> None:
        try:
            receiver(data)
        except Exception:
            # A failing receiver loses this stream, never the connection it shares.
            self.conn.owner.count("handler_error", self.peer, self.protocol)
            log.exception("stream receiver for %s failed", self.protocol)
            self.reset()

    def hold_credit(self) -> None:
        """Receiver mode: stop granting window back for processed bytes, so the remote can
        send at most what is left of its window until ``release_credit``. This is how a
        receiver that feeds other, slower consumers pushes back on its source."""
        self._credit_held = True

    def release_credit(self) -> None:
        self._credit_held = False
        n, self._held_bytes = self._held_bytes, 0
        if n and not self._reset:
            self.conn.consumed(self.sid, n)

    def set_receiver(self, receiver: Callable[[bytes | memoryview], None]) -> None:
        """Hand every received chunk to ``receiver`` synchronously, from the connection's
        ``data_received``, instead of buffering it for ``read``.

        For protocols whose processing is synchronous (GossipSub RPCs) this removes a task
        wake-up and a buffer copy per chunk. Flow control is unchanged in effect: the window
        is granted back once the receiver returns, so a receiver that keeps data must bound
        it itself. ``read`` then only reports the end of the stream: it waits until the
        remote half-closes (returns b"") or the stream is reset (raises StreamReset).
        Bytes buffered before the call are delivered first. A chunk may be a memoryview of
        the received plaintext (saving a copy per chunk): a receiver that keeps bytes past
        the call copies them, which also avoids pinning the whole received buffer.
        """
        self._receiver = receiver
        while self._chunks and not self._reset:
            chunk = self._chunks.popleft()
            if self._head:
                chunk = chunk[self._head :]
                self._head = 0
            n = len(chunk)
            self._buffered -= n
            skip = min(self._precredited, n)
            self._precredited -= skip
            self._deliver(receiver, chunk)
            if n - skip:
                if self._credit_held:
                    self._held_bytes += n - skip
                else:
                    self.conn.consumed(self.sid, n - skip)

    def _feed_eof(self) -> None:
        self._eof = True
        self._readable.set()

    def _on_reset(self) -> None:
        self._reset = True
        self._readable.set()
        self._writable.set()

    def _unread(self, data: bytes) -> None:
        """Push back bytes read past a negotiation; their window was already granted."""
        if data:
            if self._head:
                self._chunks[0] = self._chunks[0][self._head :]
                self._head = 0
            self._chunks.appendleft(data)
            self._buffered += len(data)
            self._precredited += len(data)
            self._readable.set()

    # -- public API ---------------------------------------------------------------------------

    async def select_protocol(self, negotiator: multistream.Dialer | multistream.Listener) -> str:
        """Run multistream-select on this stream and adopt the protocol it selects. Bytes
        the remote sent right behind the negotiation stay readable."""
        selected, leftover = await negotiate(negotiator, self.read, self.write)
        self._unread(leftover)
        self.protocol = selected
        return selected

    @property
    def is_reset(self) -> bool:
        return self._reset

    async def read(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes`` bytes; b"" once the remote half-closed and all was read."""
        while not self._chunks:
            if self._reset:
                raise StreamReset(f"stream {self.sid} with {self.peer} was reset")
            if self._eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._chunks[0]
        head = self._head
        if len(chunk) - head <= max_bytes:
            self._chunks.popleft()
            self._head = 0
            if head:
                chunk = chunk[head:]
        else:
            self._head = head + max_bytes
            chunk = chunk[head : head + max_bytes]
        n = len(chunk)
        self._buffered -= n
        if self._precredited:
            skip = min(self._precredited, n)
            self._precredited -= skip
            n -= skip
        if n:
            self.conn.consumed(self.sid, n)
        return chunk

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; EOFError if the stream ends first, StreamReset if reset."""
        parts: list[bytes] = []
        got = 0
        while got < n:
            chunk = await self.read(n - got)
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            parts.append(chunk)
            got += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``, waiting for the peer's window and for the socket to drain."""
        view = memoryview(data).cast("B")
        off = 0
        total = len(view)
        conn = self.conn
        await conn.proto.drain()  # add nothing to a socket buffer that already pushes back
        while off < total:
            if self._reset:
                raise StreamReset(f"stream {self.sid} with {self.peer} was reset")
            if self._local_closed:
                raise yamux.StreamClosedError(f"stream {self.sid} is closed for writing")
            if conn.yamux.send_window(self.sid) == 0:
                self._writable.clear()
                await self._writable.wait()
                continue
            off += conn.yamux.send_data(self.sid, view[off:])
            conn.flush()
            await conn.proto.drain()

    def _writable_now(self) -> bool:
        """Open for writing, and the socket is neither applying backpressure nor lost."""
        if self._reset or self._local_closed:
            return False
        proto = self.conn.proto
        return not (proto._paused or proto.lost)

    def try_write(self, data: bytes) -> bool:
        """Send all of ``data`` now if nothing has to wait: the peer's window has room for
        all of it and the socket is not applying backpressure. Returns False, having sent
        nothing, otherwise (then use ``write``). Lets a writer that is already caught up skip
        the task switch ``write`` would cost; ``write``'s backpressure still applies the
        moment the window or the socket buffer fills.
        """
        if not self._writable_now():
            return False
        conn = self.conn
        try:
            if conn.yamux.send_window(self.sid) < len(data):
                return False
        except yamux.StreamClosedError:
            return False
        conn.yamux.send_data(self.sid, data)
        conn.flush()
        return True

    async def close(self) -> None:
        """Half-close: we send no more data; reading continues until the remote's FIN."""
        if self._local_closed or self._reset:
            return
        self._local_closed = True
        self.conn.close_stream(self.sid)

    def reset(self) -> None:
        if self._reset:
            return
        self._reset = True
        self._chunks.clear()  # nobody reads them now: free the buffer with the stream
        self._head = self._buffered = self._precredited = 0
        self._readable.set()
        self._writable.set()
        self.conn.reset_stream(self.sid)


class Connection:
    """A secured, muxed connection to one peer. Owns its streams and their tasks."""

    def __init__(
        self,
        owner: ConnectionOwner,
        proto: WireProtocol,
        noise: NoiseSession,
        peer: PeerID,
        *,
        initiator: bool,
        remote_addr: Multiaddr,
        yamux_config: yamux.YamuxConfig,
        max_write_buffer: int,
    ) -> None:
        self.owner = owner
        self.proto = proto
        self.noise = noise
        self.peer = peer
        self.initiator = initiator
        self.remote_addr = remote_addr
        self.yamux = yamux.YamuxSession(is_client=initiator, config=yamux_config)
        self.streams: dict[int, Stream] = {}
        self.tasks = TaskSet(f"connection {peer}")
        self.closed = False
        self.close_reason = ""
        self._max_write_buffer = max_write_buffer
        self._pings: dict[int, asyncio.Future[None]] = {}
        self.lost = asyncio.Event()
        self._abort_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"Connection({self.peer}, {self.remote_addr}, initiator={self.initiator})"

    def start(self, leftover: bytes) -> None:
        self.proto.switch_to(self._on_wire, self._on_lost)
        if leftover and not self.closed:
            self._on_plaintext(leftover)

    # -- input --------------------------------------------------------------------------------

    def _on_wire(self, data: bytes | memoryview) -> None:
        if self.closed:
            return
        try:
            plain = self.noise.receive_data(data)
        except NoiseError as e:
            self.abort_for("noise_error", str(e))
            return
        if plain:
            self._on_plaintext(plain)

    def _on_plaintext(self, plain: bytes | bytearray | memoryview) -> None:
        try:
            events = self.yamux.receive_data(plain)
        except yamux.YamuxError as e:
            self.flush()
            self.abort_for("yamux_protocol_error", str(e), graceful=True)
            return
        for ev in events:
            self._dispatch(ev)
        self.flush()

    def _dispatch(self, ev: yamux.Event) -> None:
        if isinstance(ev, yamux.StreamData):
            st = self.streams.get(ev.stream_id)
            if st is not None:
                st._feed(ev.data)
            else:  # the application already dropped it: release the window ourselves
                self.yamux.consumed(ev.stream_id, len(ev.data))
        elif isinstance(ev, yamux.WindowUpdated):
            st = self.streams.get(ev.stream_id)
            if st is not None:
                st._writable.set()
        elif isinstance(ev, yamux.StreamOpened):
            st = Stream(self, ev.stream_id)
            self.streams[ev.stream_id] = st
            try:
                self.tasks.spawn(self.owner.serve_stream(st), name=f"stream {ev.stream_id}")
            except RuntimeError:
                st.reset()
        elif isinstance(ev, yamux.StreamEnded):
            st = self.streams.get(ev.stream_id)
            if st is not None:
                st._feed_eof()
                self._forget_if_done(ev.stream_id)
        elif isinstance(ev, yamux.StreamReset):
            st = self.streams.pop(ev.stream_id, None)
            if st is not None:
                st._on_reset()
        elif isinstance(ev, yamux.StreamRefused):
            self.owner.count("stream_limit", self.peer, f"stream {ev.stream_id} refused")
        elif isinstance(ev, yamux.PingAck):
            fut = self._pings.pop(ev.opaque, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif isinstance(ev, yamux.GoAwayReceived):
            self.close(f"remote sent go away ({ev.code})")

    def _forget_if_done(self, sid: int) -> None:
        if not self.yamux.is_open(sid):
            self.streams.pop(sid, None)

    # -- output -------------------------------------------------------------------------------

    def flush(self) -> None:
        out = self.yamux.pieces_to_send()
        if not out or self.proto.lost:
            return
        self.proto.writelines(self.noise.encrypt_pieces(out))
        transport = self.proto.transport
        if transport is not None and transport.get_write_buffer_size() > self._max_write_buffer:
            # The peer does not read what its own requests make us send (pings, acks):
            # cut it off rather than buffer without bound.
            self.abort_for("slow_peer", "write buffer limit exceeded")

    def consumed(self, sid: int, n: int) -> None:
        if not self.closed:
            self.yamux.consumed(sid, n)
            self.flush()

    def close_stream(self, sid: int) -> None:
        if self.closed:
            return
        self.yamux.close_stream(sid)
        self._forget_if_done(sid)
        self.flush()

    def reset_stream(self, sid: int) -> None:
        self.streams.pop(sid, None)
        if self.closed:
            return
        self.yamux.reset_stream(sid)
        self.flush()

    def open_stream(self) -> Stream:
        if self.closed:
            raise StreamReset(f"connection to {self.peer} is closed")
        try:
            sid = self.yamux.open_stream()
        except yamux.StreamClosedError as e:
            raise StreamReset(str(e)) from e
        st = Stream(self, sid)
        self.streams[sid] = st
        self.flush()
        return st

    async def ping(self, timeout: float) -> float:
        """A yamux-level ping; returns the round-trip time in seconds."""
        loop = asyncio.get_running_loop()
        opaque = self.yamux.ping()
        fut: asyncio.Future[None] = loop.create_future()
        self._pings[opaque] = fut
        start = loop.time()
        self.flush()
        try:
            async with asyncio.timeout(timeout):
                await fut
        finally:
            self._pings.pop(opaque, None)
        return loop.time() - start

    # -- shutdown -----------------------------------------------------------------------------

    def abort_for(self, reason: str, detail: str, *, graceful: bool = False) -> None:
        """Drop the connection for a protocol violation; counted and reported to hooks."""
        if self.closed:
            return
        self.owner.count(reason, self.peer, detail)
        self.owner.report_misbehaviour(self.peer, reason)
        self._shutdown(reason, graceful=graceful)

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        if not self.proto.lost:
            self.yamux.go_away(yamux.GO_AWAY_NORMAL)
            self.flush()
        self._shutdown(reason, graceful=True)

    def _shutdown(self, reason: str, *, graceful: bool) -> None:
        self.closed = True
        self.close_reason = reason
        transport = self.proto.transport
        if transport is None:
            return
        if graceful and not self.proto.lost:
            transport.close()
            # A peer that stops reading must not keep the socket alive: abort if the
            # goodbye has not drained within a short grace period.
            self._abort_timer = asyncio.get_running_loop().call_later(2.0, transport.abort)
        else:
            transport.abort()

    def _on_lost(self) -> None:
        self.closed = True
        if self._abort_timer is not None:
            self._abort_timer.cancel()
        for st in list(self.streams.values()):
            st._on_reset()
        self.streams.clear()
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(StreamReset("connection closed"))
        self._pings.clear()
        self.lost.set()
        self.owner.connection_lost(self)

    async def aclose(self) -> None:
        """Close and wait until the socket is gone and every stream task has finished."""
        self.close()
        await self.tasks.aclose()
        if not self.proto.lost and self.proto.transport is not None:
            self.proto.transport.abort()
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(5):
                await self.lost.wait()
