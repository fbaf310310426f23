from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.p2p import yamux as y


def frame(typ: int, flags: int, sid: int, length: int, body: bytes = b"") -> bytes:
    return struct.pack(">BBHII", 0, typ, flags, sid, length) + body


def pair(window: int = y.INITIAL_WINDOW, **kw: int) -> tuple[y.YamuxSession, y.YamuxSession]:
    cfg = y.YamuxConfig(window=window, **kw)
    return y.YamuxSession(is_client=True, config=cfg), y.YamuxSession(is_client=False, config=cfg)


def pump(a: y.YamuxSession, b: y.YamuxSession) -> tuple[list[y.Event], list[y.Event]]:
    eb = b.receive_data(a.data_to_send())
    ea = a.receive_data(b.data_to_send())
    return ea, eb


def test_open_send_fin() -> None:
    c, s = pair()
    sid = c.open_stream()
    assert sid == 1 and c.open_stream() == 3
    c.send_data(sid, b"hello")
    c.close_stream(sid)
    _, ev = pump(c, s)
    assert ev == [y.StreamOpened(1), y.StreamOpened(3), y.StreamData(1, b"hello"), y.StreamEnded(1)]
    s.close_stream(1)
    _, ec = pump(s, c)
    assert y.StreamEnded(1) in ec
    assert not c.is_open(1) and not s.is_open(1)


def test_first_frame_is_a_window_update_with_syn() -> None:
    """The SYN grants nothing beyond the spec's 256 KiB, whatever the window may grow to."""
    c, _ = pair(window=1024 * 1024)
    c.open_stream()
    assert c.data_to_send() == frame(y.TYPE_WINDOW_UPDATE, y.FLAG_SYN, 1, 0)


def test_send_window_limits_and_updates() -> None:
    c, s = pair()
    sid = c.open_stream()
    pump(c, s)
    assert c.send_data(sid, b"x" * (y.INITIAL_WINDOW + 10)) == y.INITIAL_WINDOW
    assert c.send_window(sid) == 0
    assert c.send_data(sid, b"more") == 0
    _, ev = pump(c, s)
    got = sum(len(e.data) for e in ev if isinstance(e, y.StreamData))
    assert got == y.INITIAL_WINDOW
    s.consumed(sid, got)
    _, ec = pump(s, c)
    assert y.WindowUpdated(sid) in ec
    assert c.send_window(sid) == y.INITIAL_WINDOW


def _fill_and_read(c: y.YamuxSession, s: y.YamuxSession, sid: int, *, read: bool) -> int:
    """Send all the window allows on ``sid``; the receiver reads it if ``read``."""
    n = c.send_data(sid, b"x" * c.send_window(sid))
    pump(c, s)
    if read:
        s.consumed(sid, n)
    pump(s, c)
    return n


def test_window_grows_only_while_the_application_reads() -> None:
    """A stream starts at 256 KiB both ways; each time the reader has read half its window
    the window doubles, up to ``window``. An unread stream stays at 256 KiB."""
    c, s = pair(window=4 * 1024 * 1024)
    sid, idle = c.open_stream(), c.open_stream()
    pump(c, s)
    assert c.send_window(sid) == s.send_window(sid) == y.INITIAL_WINDOW
    sent = [_fill_and_read(c, s, sid, read=True) for _ in range(6)]
    assert sent == [256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20, 4 << 20]
    assert _fill_and_read(c, s, idle, read=False) == y.INITIAL_WINDOW
    assert c.send_window(idle) == 0


def test_windows_grow_within_the_connection_budget() -> None:
    """The sum of a connection's windows stays within ``max_buffered``: once it is
    reached a read stream is refilled but grows no more."""
    c, s = pair(window=4 * 1024 * 1024, max_buffered=1024 * 1024)
    a, b = c.open_stream(), c.open_stream()
    pump(c, s)
    for _ in range(4):
        _fill_and_read(c, s, a, read=True)
        _fill_and_read(c, s, b, read=True)
    assert c.send_window(a) + c.send_window(b) == 1024 * 1024


def test_inbound_streams_beyond_the_cap_are_reset() -> None:
    c, s = pair(max_inbound_streams=2)
    for _ in range(3):
        c.open_stream()
    _, ev = pump(c, s)
    assert ev == [y.StreamOpened(1), y.StreamOpened(3), y.StreamRefused(5)]
    assert s.open_stream() == 2  # our own streams do not count against it


def test_peer_exceeding_our_window_is_a_protocol_error() -> None:
    _, s = pair()
    s.receive_data(frame(y.TYPE_WINDOW_UPDATE, y.FLAG_SYN, 1, 0))
    s.data_to_send()
    s.receive_data(frame(y.TYPE_DATA, 0, 1, y.INITIAL_WINDOW, b"a" * y.INITIAL_WINDOW))
    with pytest.raises(y.YamuxError, match="window"):
        s.receive_data(frame(y.TYPE_DATA, 0, 1, 1, b"b"))
    assert s.data_to_send() == frame(y.TYPE_GO_AWAY, 0, 0, 0, b"")[:8] + struct.pack(
        ">I", y.GO_AWAY_PROTOCOL_ERROR
    )


def test_length_near_2_32_fails_before_buffering() -> None:
    _, s = pair()
    with pytest.raises(y.YamuxError):
        s.receive_data(frame(y.TYPE_DATA, y.FLAG_SYN, 1, 0xFFFFFFFF))


@pytest.mark.parametrize(
    "bad",
    [
        b"\x01" + frame(y.TYPE_PING, y.FLAG_SYN, 0, 1)[1:],  # version 1
        frame(9, 0, 1, 0),  # unknown type
        frame(y.TYPE_WINDOW_UPDATE, y.FLAG_SYN, 2, 0),  # server's parity from the client
        frame(y.TYPE_DATA, 0, 0, 0),  # data on the session stream
        frame(y.TYPE_PING, y.FLAG_SYN, 5, 1),
        frame(y.TYPE_GO_AWAY, 0, 5, 0),
        frame(y.TYPE_WINDOW_UPDATE, y.FLAG_SYN, 1, 0) * 2,  # SYN reuse
        frame(y.TYPE_WINDOW_UPDATE, y.FLAG_SYN, 1, 0)
        + frame(y.TYPE_WINDOW_UPDATE, 0, 1, 0xFFFFFFFF),  # window overflow
        frame(y.TYPE_WINDOW_UPDATE, y.FLAG_SYN | y.FLAG_FIN, 1, 0)
        + frame(y.TYPE_DATA, 0, 1, 1, b"x"),
    ],
)
def test_invalid_frames_raise(bad: bytes) -> None:
    _, s = pair()
    with pytest.raises(y.YamuxError):
        s.receive_data(bad)


def test_frames_for_unknown_streams_are_ignored() -> None:
    _, s = pair()
    assert s.receive_data(frame(y.TYPE_DATA, 0, 7, 3, b"abc")) == []
    assert s.receive_data(frame(y.TYPE_WINDOW_UPDATE, y.FLAG_RST, 9, 0)) == []


def test_stream_limit_refuses_with_rst() -> None:
    c, s = pair(max_streams=2)
    for _ in range(3):
        c.open_stream()
    ec, ev = pump(c, s)
    assert ev.count(y.StreamRefused(5)) == 1
    assert y.StreamReset(5) in ec


def test_ping_and_go_away() -> None:
    c, s = pair()
    opaque = c.ping()
    ea, _ = pump(c, s)
    assert ea == [y.PingAck(opaque)]
    s.go_away()
    assert c.receive_data(s.data_to_send()) == [y.GoAwayReceived(0)]
    with pytest.raises(y.StreamClosedError):
        c.open_stream()


def test_reset_stream() -> None:
    c, s = pair()
    sid = c.open_stream()
    pump(c, s)
    s.reset_stream(sid)
    _, ec = pump(s, c)
    assert y.StreamReset(sid) in ec
    with pytest.raises(y.StreamClosedError):
        c.send_data(sid, b"x")


def test_split_delivery() -> None:
    c, s = pair()
    sid = c.open_stream()
    c.send_data(sid, b"0123456789" * 100)
    wire = c.data_to_send()
    events: list[y.Event] = []
    for k in range(0, len(wire), 5):
        events += s.receive_data(wire[k : k + 5])
    assert b"".join(e.data for e in events if isinstance(e, y.StreamData)) == b"0123456789" * 100


@given(st.lists(st.binary(max_size=64), max_size=10))
def test_fuzz_frames(chunks: list[bytes]) -> None:
    _, s = pair()
    try:
        for c in chunks:
            s.receive_data(c)
    except y.YamuxError:
        pass


@given(
    st.lists(
        st.tuples(
            st.integers(0, 4), st.integers(0, 15), st.integers(0, 8), st.integers(0, 1 << 19)
        ),
        max_size=12,
    )
)
def test_fuzz_structured_frames(frames: list[tuple[int, int, int, int]]) -> None:
    _, s = pair()
    try:
        for typ, flags, sid, length in frames:
            body = b"z" * min(length, 1 << 16) if typ == y.TYPE_DATA else b""
            s.receive_data(
                frame(typ, flags, sid, len(body) if typ == y.TYPE_DATA else length, body)
            )
    except y.YamuxError:
        pass
    assert s.stream_count <= s.config.max_streams


@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["open", "send", "close"]), st.integers(0, 5), st.integers(0, 3000)
        ),
        max_size=30,
    ),
    cuts=st.lists(st.integers(1, 500), min_size=1, max_size=10),
)
def test_any_chunking_delivers_the_same_streams(
    ops: list[tuple[str, int, int]], cuts: list[int]
) -> None:
    """State-machine property: whatever the client does and however the bytes are split on
    the way, the server sees each stream's data in order and each FIN exactly once."""
    c, s = pair()
    opened: list[int] = []
    sent: dict[int, bytes] = {}
    closed: set[int] = set()
    for op, idx, size in ops:
        if op == "open" or not opened:
            sid = c.open_stream()
            opened.append(sid)
            sent[sid] = b""
            continue
        sid = opened[idx % len(opened)]
        if sid in closed:
            continue
        if op == "send":
            payload = bytes([sid % 256]) * size
            n = c.send_data(sid, payload)
            sent[sid] += payload[:n]
        else:
            c.close_stream(sid)
            closed.add(sid)
    wire = c.data_to_send()
    got: dict[int, bytes] = {}
    ended: list[int] = []
    pos, i = 0, 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        for ev in s.receive_data(wire[pos : pos + step]):
            if isinstance(ev, y.StreamOpened):
                got[ev.stream_id] = b""
            elif isinstance(ev, y.StreamData):
                got[ev.stream_id] += ev.data
            elif isinstance(ev, y.StreamEnded):
                ended.append(ev.stream_id)
        pos += step
        i += 1
    assert got == sent
    assert sorted(ended) == sorted(closed)


def test_send_data_cuts_frames_and_stops_at_the_window() -> None:
    c, s = pair(max_frame=1024)
    sid = c.open_stream()
    pump(c, s)
    body = bytes(range(256)) * 10
    assert c.send_data(sid, memoryview(b"<" + body + b">")[1:-1]) == len(body)
    wire = c.data_to_send()
    assert wire == b"".join(
        frame(y.TYPE_DATA, 0, sid, len(body[o : o + 1024]), body[o : o + 1024])
        for o in range(0, len(body), 1024)
    )
    assert s.receive_data(wire) == [y.StreamData(sid, body[o : o + 1024]) for o in (0, 1024, 2048)]
    assert c.send_window(sid) == y.INITIAL_WINDOW - len(body)
    assert c.send_data(sid, bytes(y.INITIAL_WINDOW)) == y.INITIAL_WINDOW - len(body)
    c.data_to_send()
    assert c.send_data(sid, b"more") == 0  # the window is used up: nothing is queued
    assert c.data_to_send() == b"" and c.send_window(sid) == 0
    c.close_stream(sid)
    with pytest.raises(y.StreamClosedError):
        c.send_data(sid, b"x")


@given(st.lists(st.integers(0, 5000), max_size=8), st.integers(1, 7000))
def test_received_bodies_are_read_only_views_that_stay_intact(sizes: list[int], step: int) -> None:
    """Bodies are views of the received chunks (or of a retired reassembly buffer for a
    frame split across chunks): read-only, and unchanged by everything fed after them."""
    c, s = pair()
    sid = c.open_stream()
    bodies = [bytes([k % 251]) * n for k, n in enumerate(sizes)]
    for body in bodies:
        c.send_data(sid, body)
    wire = c.data_to_send()
    got: list[bytes | memoryview] = []
    for k in range(0, len(wire), step):
        chunk = bytearray(wire[k : k + step])  # what the Noise layer hands over
        got += [e.data for e in s.receive_data(chunk) if isinstance(e, y.StreamData)]
    assert all(d.readonly for d in got if isinstance(d, memoryview))
    assert b"".join(got) == b"".join(bodies)
