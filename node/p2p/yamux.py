"""yamux 1.0.0 stream multiplexer (``/yamux/1.0.0``), sans-I/O.

Frames carry a 12-byte header: version (0), type (data, window update, ping, go away),
flags (SYN, ACK, FIN, RST), stream ID and length. The client (the side that dialed) uses
odd stream IDs, the server even ones. Each stream starts with the spec's 256 KiB receive
window in both directions and we replenish it as the application consumes data; the
window grows (doubling, up to ``YamuxConfig.window``) only when the application has read
half of it, and only while the sum of the connection's windows stays within
``YamuxConfig.max_buffered`` (go-yamux's auto-tuning, bounded per connection). A stream
nobody reads therefore never holds more than 256 KiB, and inbound streams beyond
``max_inbound_streams`` are reset on arrival.

Flow control is what bounds memory: a stream's unread data never exceeds the window we
granted, and a peer that sends beyond it, opens streams with the wrong parity or a reused
ID, or sends an unknown frame type is a protocol error. The session raises YamuxError and
queues a GoAway(protocol error) for the driver to flush before it drops the connection.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

PROTOCOL_ID = "/yamux/1.0.0"
HEADER = struct.Struct(">BBHII")
HEADER_LEN = 12
VERSION = 0

TYPE_DATA = 0
TYPE_WINDOW_UPDATE = 1
TYPE_PING = 2
TYPE_GO_AWAY = 3

FLAG_SYN = 1
FLAG_ACK = 2
FLAG_FIN = 4
FLAG_RST = 8

GO_AWAY_NORMAL = 0
GO_AWAY_PROTOCOL_ERROR = 1
GO_AWAY_INTERNAL_ERROR = 2

INITIAL_WINDOW = 256 * 1024
MAX_WINDOW_VALUE = 2**32 - 1


class YamuxError(Exception):
    """The remote broke the yamux protocol; the connection must be closed."""


class StreamClosedError(ConnectionError):
    """Data was written to a stream that is closed for writing or reset."""


@dataclass(frozen=True)
class YamuxConfig:
    """Tunables of one connection's multiplexer.

    ``window``: the largest receive window a stream grows to while it is read (>= 256
    KiB); ``max_buffered``: the sum of the receive windows of all of a connection's
    streams beyond which none grows (what a peer can make us buffer, besides 256 KiB per
    stream); ``max_streams``: open streams in all; ``max_inbound_streams``: of those, the
    ones the remote opened (the lower of the two caps holds).
    """

    window: int = 16 * 1024 * 1024
    max_buffered: int = 32 * 1024 * 1024
    max_streams: int = 512
    max_inbound_streams: int = 64
    max_frame: int = 256 * 1024  # largest data frame we send (go and rust peers split smaller)

    def __post_init__(self) -> None:
        if not INITIAL_WINDOW <= self.window <= MAX_WINDOW_VALUE:
            raise ValueError("yamux window must be between 256 KiB and 2**32-1")
        if self.max_buffered < INITIAL_WINDOW:
            raise ValueError("yamux max_buffered must be at least 256 KiB")
        if min(self.max_streams, self.max_inbound_streams) < 1:
            raise ValueError("yamux max_streams and max_inbound_streams must be at least 1")


@dataclass(frozen=True)
class StreamOpened:
    stream_id: int


@dataclass(frozen=True)
class StreamData:
    """Data received on a stream: bytes, or a read-only view of the received plaintext
    (which pins that buffer: copy it to keep it)."""

    stream_id: int
    data: bytes | memoryview


@dataclass(frozen=True)
class StreamEnded:
    """The remote half-closed (FIN): no more data will arrive on this stream."""

    stream_id: int


@dataclass(frozen=True)
class StreamReset:
    stream_id: int


@dataclass(frozen=True)
class WindowUpdated:
    stream_id: int


@dataclass(frozen=True)
class StreamRefused:
    """An inbound stream beyond ``max_streams`` was reset on arrival."""

    stream_id: int


@dataclass(frozen=True)
class PingAck:
    opaque: int


@dataclass(frozen=True)
class GoAwayReceived:
    code: int


Event = (
    StreamOpened
    | StreamData
    | StreamEnded
    | StreamReset
    | WindowUpdated
    | StreamRefused
    | PingAck
    | GoAwayReceived
)


@dataclass
class _Stream:
    inbound: bool = False
    send_window: int = INITIAL_WINDOW
    recv_window: int = INITIAL_WINDOW  # what the remote may still send
    window: int = INITIAL_WINDOW  # recv_window + bytes received and not yet granted back
    unacked: int = 0  # bytes consumed by the application not yet granted back
    local_closed: bool = False
    remote_closed: bool = False
    need_ack: bool = False
    pending_flags: int = field(default=0)


class YamuxSession:
    """The multiplexer state for one connection."""

    def __init__(self, *, is_client: bool, config: YamuxConfig | None = None) -> None:
        self.config = config or YamuxConfig()
        self.is_client = is_client
        self._next_id = 1 if is_client else 2
        self._streams: dict[int, _Stream] = {}
        self._inbound = 0  # streams the remote opened, among _streams
        self._windows = 0  # sum of the streams' windows: what the remote may make us hold
        # Frames to send; data bodies are views of the caller's buffer (the caller's bytes
        # must stay unchanged until pieces_to_send, which the driver calls right away).
        self._out: list[bytes | memoryview] = []
        self._buf = bytearray()
        self._ping_id = 0
        self.go_away_sent = False
        self.go_away_received = False

    # -- output ----------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        return b"".join(self.pieces_to_send())

    def pieces_to_send(self) -> list[bytes | memoryview]:
        """What ``data_to_send`` returns, as the pieces that make it up (data bodies are
        views of the writers' buffers), for a secure channel that encrypts them without
        joining them (``NoiseSession.encrypt_pieces``): the driver's path, kept for large
        writes (BENCHMARKS.md, "Fast paths kept and folded")."""
        out = self._out
        self._out = []
        return out

    def _frame(
        self, typ: int, flags: int, sid: int, length: int, body: bytes | memoryview = b""
    ) -> None:
        self._out.append(HEADER.pack(VERSION, typ, flags, sid, length))
        if body:
            self._out.append(body)

    # -- local actions ---------------------------------------------------------------------

    def open_stream(self) -> int:
        if self.go_away_sent or self.go_away_received:
            raise StreamClosedError("session is going away")
        sid = self._next_id
        if sid > MAX_WINDOW_VALUE:
            raise StreamClosedError("stream IDs exhausted")
        self._next_id += 2
        self._add(sid, _Stream())
        self._frame(TYPE_WINDOW_UPDATE, FLAG_SYN, sid, 0)
        return sid

    def _add(self, sid: int, st: _Stream) -> None:
        self._streams[sid] = st
        self._windows += st.window
        self._inbound += st.inbound

    def _drop(self, sid: int) -> None:
        """Forget ``sid``: its window no longer counts against the connection."""
        st = self._streams.pop(sid, None)
        if st is not None:
            self._windows -= st.window
            self._inbound -= st.inbound

    def send_window(self, sid: int) -> int:
        st = self._streams.get(sid)
        if st is None or st.local_closed:
            raise StreamClosedError(f"stream {sid} is closed")
        return st.send_window

    def send_data(self, sid: int, data: bytes | memoryview) -> int:
        """Queue as much of ``data`` as the send window allows; returns the count queued."""
        st = self._streams.get(sid)
        if st is None or st.local_closed:
            raise StreamClosedError(f"stream {sid} is closed")
        n = min(len(data), st.send_window)
        if n == 0:
            return 0
        flags = self._take_ack(st)
        max_frame = self.config.max_frame
        view = memoryview(data)
        off = 0
        while off < n:
            k = min(n - off, max_frame)
            self._frame(TYPE_DATA, flags, sid, k, view[off : off + k])
            flags = 0
            off += k
        st.send_window -= n
        return n

    def _take_ack(self, st: _Stream) -> int:
        if st.need_ack:
            st.need_ack = False
            return FLAG_ACK
        return 0

    def consumed(self, sid: int, n: int) -> None:
        """The application has read ``n`` bytes of ``sid``: grant them back when worthwhile."""
        st = self._streams.get(sid)
        if st is None or st.remote_closed:
            return
        st.unacked += n
        if st.unacked >= st.window // 2:
            # Read at this pace, the window may double, as far as the connection's
            # budget allows: a stream that is read gets the bandwidth, one that is not
            # stays at the 256 KiB the spec grants.
            growth = min(st.window, self.config.window - st.window)
            growth = max(0, min(growth, self.config.max_buffered - self._windows))
            st.window += growth
            self._windows += growth
            delta = st.unacked + growth
            st.unacked = 0
            st.recv_window += delta
            self._frame(TYPE_WINDOW_UPDATE, self._take_ack(st), sid, delta)

    def close_stream(self, sid: int) -> None:
        """Half-close our side (FIN)."""
        st = self._streams.get(sid)
        if st is None or st.local_closed:
            return
        st.local_closed = True
        self._frame(TYPE_WINDOW_UPDATE, FLAG_FIN | self._take_ack(st), sid, 0)
        self._maybe_forget(sid, st)

    def reset_stream(self, sid: int) -> None:
        if sid not in self._streams:
            return
        self._drop(sid)
        self._frame(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0)

    def ping(self) -> int:
        self._ping_id = (self._ping_id + 1) & MAX_WINDOW_VALUE
        self._frame(TYPE_PING, FLAG_SYN, 0, self._ping_id)
        return self._ping_id

    def go_away(self, code: int = GO_AWAY_NORMAL) -> None:
        if not self.go_away_sent:
            self.go_away_sent = True
            self._frame(TYPE_GO_AWAY, 0, 0, code)

    def _maybe_forget(self, sid: int, st: _Stream) -> None:
        if st.local_closed and st.remote_closed:
            self._drop(sid)

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def is_open(self, sid: int) -> bool:
        return sid in self._streams

    # -- input -----------------------------------------------------------------------------

    def _fail(self, reason: str) -> YamuxError:
        self.go_away(GO_AWAY_PROTOCOL_ERROR)
        return YamuxError(reason)

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed decrypted connection bytes; returns the events they complete.

        As in the Noise layer, only an incomplete frame is buffered: a frame the previous
        call left unfinished is completed with just the bytes it still needs, and the rest
        is parsed straight from ``data`` (a 100 KB data frame split across socket reads is
        then copied into the buffer once, instead of every later chunk being appended).
        """
        events: list[Event] = []
        buf = self._buf
        pos = 0
        end = len(data)
        if buf:
            if len(buf) < HEADER_LEN:
                pos = min(HEADER_LEN - len(buf), end)
                buf += data[:pos]
                if len(buf) < HEADER_LEN:
                    return events
            _version, typ, _flags, _sid, length = HEADER.unpack_from(buf, 0)
            if typ == TYPE_DATA and length <= self.config.window:
                take = min(HEADER_LEN + length - len(buf), end - pos)
                with memoryview(data) as v:
                    buf += v[pos : pos + take]
                pos += take
            # Exactly one frame, complete or not; an invalid header raises here.
            done = self._parse(buf, 0, events)
            if done < len(buf):
                return events  # still incomplete: all of ``data`` went into the buffer
            # The completed frame's body went out as a view of this buffer: retire it
            # rather than copy the body out (the next partial frame gets a new one).
            self._buf = buf = bytearray()
        if pos < end:
            pos = self._parse(data, pos, events)
            if pos < end:
                with memoryview(data) as v:
                    buf += v[pos:]
        return events

    def _parse(self, src: bytes | bytearray | memoryview, pos: int, events: list[Event]) -> int:
        """Handle the complete frames in ``src`` from ``pos``; returns where they end.

        Data bodies are read-only views of ``src``, not copies: ``src`` is a received chunk
        (never overwritten while a view of it is held) or a retired reassembly buffer, and a
        receiver that processes the data at once (GossipSub) never copies a relayed message
        here."""
        end = len(src)
        max_frame_body = self.config.window
        view: memoryview | None = None
        while end - pos >= HEADER_LEN:
            version, typ, flags, sid, length = HEADER.unpack_from(src, pos)
            if version != VERSION:
                raise self._fail(f"unsupported yamux version {version}")
            if typ == TYPE_DATA:
                if length > max_frame_body:
                    raise self._fail(f"data frame of {length} bytes exceeds any window")
                if end - pos - HEADER_LEN < length:
                    break
                if view is None:
                    view = memoryview(src).toreadonly()
                body = view[pos + HEADER_LEN : pos + HEADER_LEN + length]
                pos += HEADER_LEN + length
                self._on_stream_frame(typ, flags, sid, length, body, events)
            elif typ == TYPE_WINDOW_UPDATE:
                pos += HEADER_LEN
                self._on_stream_frame(typ, flags, sid, length, b"", events)
            elif typ == TYPE_PING:
                pos += HEADER_LEN
                if sid != 0:
                    raise self._fail("ping on a stream")
                if flags & FLAG_SYN:
                    self._frame(TYPE_PING, FLAG_ACK, 0, length)
                elif flags & FLAG_ACK:
                    events.append(PingAck(length))
            elif typ == TYPE_GO_AWAY:
                pos += HEADER_LEN
                if sid != 0:
                    raise self._fail("go away on a stream")
                self.go_away_received = True
                events.append(GoAwayReceived(length))
            else:
                raise self._fail(f"unknown frame type {typ}")
        return pos

    def _on_stream_frame(
        self,
        typ: int,
        flags: int,
        sid: int,
        length: int,
        body: bytes | memoryview,
        events: list[Event],
    ) -> None:
        if sid == 0:
            raise self._fail("data or window update on stream 0")
        st = self._streams.get(sid)
        if flags & FLAG_SYN:
            if st is not None:
                raise self._fail(f"SYN for existing stream {sid}")
            if (sid % 2 == 1) == self.is_client:
                raise self._fail(f"remote opened stream {sid} with our parity")
            if (
                self.go_away_sent
                or len(self._streams) >= self.config.max_streams
                or self._inbound >= self.config.max_inbound_streams
            ):
                self._frame(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0)
                events.append(StreamRefused(sid))
                return
            st = _Stream(inbound=True)
            self._add(sid, st)
            events.append(StreamOpened(sid))
            self._frame(TYPE_WINDOW_UPDATE, FLAG_ACK, sid, 0)  # acknowledge at once
        if st is None:
            # A frame for a stream we already reset or forgot: harmless, drop it.
            return
        if typ == TYPE_WINDOW_UPDATE:
            if length:
                st.send_window += length
                if st.send_window > MAX_WINDOW_VALUE:
                    raise self._fail(f"window update overflows stream {sid}")
                events.append(WindowUpdated(sid))
        elif length:
            if st.remote_closed:
                raise self._fail(f"data after FIN on stream {sid}")
            if length > st.recv_window:
                raise self._fail(
                    f"stream {sid} sent {length} bytes into a window of {st.recv_window}"
                )
            st.recv_window -= length
            events.append(StreamData(sid, body))
        if flags & FLAG_RST:
            self._drop(sid)
            events.append(StreamReset(sid))
            return
        if flags & FLAG_FIN and not st.remote_closed:
            st.remote_closed = True
            events.append(StreamEnded(sid))
            self._maybe_forget(sid, st)
