from __future__ import annotations

import asyncio
from typing import Any

import pytest

from node.p2p import identify, ping
from node.p2p.behaviour import Behaviour
from node.p2p.connection import Connection, Stream, StreamReset
from node.p2p.host import DialError, Host, PeerNotConnected
from node.p2p.multiaddr import Multiaddr
from node.p2p.multistream import NegotiationFailed
from node.p2p.peer_id import IdentityKey, PeerID
from node.p2p.reqresp import HandlerError, RemoteError, ReqRespConfig, RequestError, RequestResponse
from tests.helpers import dial_addr, wait_for

from .conftest import window_used_up

MakeHost = Any


async def echo(stream: Stream) -> None:
    while data := await stream.read():
        await stream.write(data)


def protocols_of(host: Host, peer: PeerID) -> tuple[str, ...]:
    """What ``peer`` told ``host`` it speaks, in its latest identify (empty before one)."""
    seen = host.peerstore.identified(peer)
    return seen.protocols if seen is not None else ()


async def test_connect_stream_ping_identify(make_host: MakeHost) -> None:
    a, b = await make_host(), await make_host()
    b.set_stream_handler("/echo/1", echo)
    events: list[str] = []
    b.add_notifee(lambda p: events.append(f"up {p}"), lambda p: events.append(f"down {p}"))
    peer = await a.connect(dial_addr(b))
    assert peer == b.peer_id
    assert await a.connect(dial_addr(b)) == peer  # already connected: no second dial
    await wait_for(lambda: a.peer_id in b.connected_peers())
    assert events == [f"up {a.peer_id}"]

    stream = await a.new_stream(peer, ["/missing/1", "/echo/1"])
    assert stream.protocol == "/echo/1"
    await stream.write(b"hello")
    assert await stream.readexactly(5) == b"hello"
    await stream.close()
    assert await stream.read() == b""

    rtts = await ping.ping(a, peer, count=3)
    assert len(rtts) == 3 and all(r < 1 for r in rtts)

    seen = await wait_for(lambda: a.peerstore.identified(peer), what="identify of b")
    assert "/echo/1" in seen.protocols
    assert seen.agent == "fedchain/0.1.0"
    assert a.peerstore.addrs(peer) == b.listen_addrs
    info = await identify.request(b, b.connections(a.peer_id)[0])
    assert info.observed_addr is not None and info.observed_addr.tcp_endpoint()[0] == "127.0.0.1"
    assert info.listen_addrs == a.listen_addrs

    with pytest.raises(NegotiationFailed):
        await a.new_stream(peer, ["/nothing/1"])
    b.disconnect(a.peer_id, "test")
    await wait_for(lambda: not a.connected_peers())
    assert events[-1] == f"down {a.peer_id}"
    assert b.counters["disconnect:test"] == 1
    with pytest.raises(PeerNotConnected):
        await a.new_stream(peer, ["/echo/1"])


class Recorder(Behaviour):
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def on_connection_established(self, conn: Connection, *, first: bool) -> None:
        self.events.append(("up", conn, first))

    def on_connection_closed(self, conn: Connection, *, last: bool) -> None:
        self.events.append(("down", conn, last))

    def on_local_protocols_changed(self) -> None:
        self.events.append(("protocols",))


class Broken(Behaviour):
    def on_connection_established(self, conn: Connection, *, first: bool) -> None:
        raise RuntimeError("a broken protocol")


async def test_behaviours_hear_connection_events_with_first_and_last(make_host: MakeHost) -> None:
    a, b = await make_host(), await make_host()
    rec = Recorder()
    a.add_behaviour(Broken())  # raising must not keep the others from hearing the event
    a.add_behaviour(rec)
    peer = await a.connect(dial_addr(b))
    await a.connect(b.listen_addrs[0])  # no /p2p: a second connection to the same peer
    c1, c2 = a.connections(peer)
    assert rec.events == [("up", c1, True), ("up", c2, False)]
    c1.close("test")
    await wait_for(lambda: len(rec.events) == 3)
    assert rec.events[2] == ("down", c1, False)
    c2.close("test")
    await wait_for(lambda: len(rec.events) == 4)
    assert rec.events[3] == ("down", c2, True)
    a.set_stream_handler("/new/1", echo)
    assert rec.events[4:] == [("protocols",)]


async def test_dial_with_wrong_peer_id_is_refused(make_host: MakeHost) -> None:
    a, b = await make_host(), await make_host()
    wrong = b.listen_addrs[0].with_peer_id(IdentityKey.generate().peer_id)
    with pytest.raises(DialError, match="peer_id_mismatch"):
        await a.connect(wrong)
    assert a.counters["peer_id_mismatch"] == 1
    assert not a.connected_peers()
    with pytest.raises(DialError):
        await a.connect(Multiaddr.parse("/ip4/127.0.0.1/tcp/1"))


async def test_many_concurrent_streams_and_large_transfer(make_host: MakeHost) -> None:
    a, b = await make_host(), await make_host()
    b.set_stream_handler("/echo/1", echo)
    peer = await a.connect(dial_addr(b))
    blob = bytes(range(256)) * 4096  # 1 MiB, larger than the initial 256 KiB window

    async def one(i: int) -> None:
        s = await a.new_stream(peer, ["/echo/1"])
        writer = asyncio.create_task(s.write(blob[i:]))
        got = await s.readexactly(len(blob) - i)
        await writer
        assert got == blob[i:]
        await s.close()
        assert await s.read() == b""

    await asyncio.gather(*(one(i) for i in range(20)))


async def test_slow_reader_blocks_writer_instead_of_buffering(make_host: MakeHost) -> None:
    from node.p2p.yamux import YamuxConfig

    window = 256 * 1024
    a = await make_host(yamux=YamuxConfig(window=window))
    b = await make_host(yamux=YamuxConfig(window=window))
    gate = asyncio.Event()
    received = 0

    async def lazy(stream: Stream) -> None:
        nonlocal received
        await gate.wait()
        while data := await stream.read():
            received += len(data)

    b.set_stream_handler("/lazy/1", lazy)
    peer = await a.connect(dial_addr(b))
    s = await a.new_stream(peer, ["/lazy/1"])
    writer = asyncio.create_task(s.write(b"x" * (4 * window)))
    await wait_for(lambda: window_used_up(s), what="the window used up")
    assert not writer.done()  # blocked on the window: nothing piles up unbounded
    conn = b.connections(a.peer_id)[0]
    assert sum(st._buffered for st in conn.streams.values()) <= window
    gate.set()
    await asyncio.wait_for(writer, 10)
    await s.close()
    await wait_for(lambda: received == 4 * window)


async def test_handler_errors_reset_only_their_stream(make_host: MakeHost) -> None:
    a, b = await make_host(), await make_host()

    async def broken(stream: Stream) -> None:
        raise RuntimeError("boom")

    b.set_stream_handler("/broken/1", broken)
    b.set_stream_handler("/echo/1", echo)
    peer = await a.connect(dial_addr(b))
    s = await a.new_stream(peer, ["/broken/1"])
    with pytest.raises(StreamReset):
        await s.readexactly(1)
    s2 = await a.new_stream(peer, ["/echo/1"])
    await s2.write(b"ok")
    assert await s2.readexactly(2) == b"ok"
    assert b.counters["handler_error"] == 1


async def test_close_cancels_stream_tasks_and_notifies(make_host: MakeHost) -> None:
    a, b = await make_host(), await make_host()
    started = asyncio.Event()

    async def forever(stream: Stream) -> None:
        started.set()
        await asyncio.sleep(3600)

    b.set_stream_handler("/forever/1", forever)
    peer = await a.connect(dial_addr(b))
    s = await a.new_stream(peer, ["/forever/1"])
    await started.wait()
    await b.close()  # must not hang on the sleeping handler
    with pytest.raises(StreamReset):
        await asyncio.wait_for(s.read(), 5)
    await wait_for(lambda: not a.connected_peers())


async def test_persistent_peer_is_redialed_with_backoff(make_host: MakeHost) -> None:
    b = await make_host()
    a = await make_host(persistent=(dial_addr(b),), reconnect_base=0.05, reconnect_max=0.2)
    await wait_for(lambda: b.peer_id in a.connected_peers())
    for _ in range(2):
        old = a.connections(b.peer_id)[0]
        b.disconnect(a.peer_id, "test")
        await wait_for(lambda old=old: old.closed)
        # The manager redials on its own: a new connection replaces the old one.
        await wait_for(lambda old=old: any(c is not old for c in a.connections(b.peer_id)))
    assert a.connmgr.is_protected(b.peer_id)


async def test_persistent_peer_that_is_down_counts_failures(make_host: MakeHost) -> None:
    gone = Multiaddr.parse("/ip4/127.0.0.1/tcp/1").with_peer_id(IdentityKey.generate().peer_id)
    a = await make_host(persistent=(gone,), reconnect_base=0.01, reconnect_max=0.05)
    await wait_for(lambda: a.counters["reconnect_failed"] >= 3)


async def test_max_peers_prunes_newest_unprotected(make_host: MakeHost) -> None:
    hub = await make_host(max_peers=2, target_peers=2)
    spokes = [await make_host() for _ in range(3)]
    hub.connmgr.protect(spokes[2].peer_id, "test")
    for s in spokes:  # one after the other, so that the hub sees them in this order
        await s.connect(dial_addr(hub))
        await wait_for(lambda s=s: s.peer_id in hub.connected_peers())
    await wait_for(lambda: len(hub.connected_peers()) == 2)
    assert spokes[2].peer_id in hub.connected_peers()
    assert spokes[0].peer_id in hub.connected_peers()
    assert hub.counters["pruned"] == 1


async def test_discovery_dials_exchanged_peers(make_host: MakeHost) -> None:
    a, b, c = await make_host(), await make_host(), await make_host()
    await a.connect(dial_addr(b))
    await b.connect(dial_addr(c))
    await wait_for(lambda: b.peerstore.addrs(c.peer_id) != [])
    # What GossipSub PRUNE peer exchange does: hand peers and addresses to the host.
    a.add_discovered_peers([(c.peer_id, b.peerstore.addrs(c.peer_id))])
    await wait_for(lambda: c.peer_id in a.connected_peers())


async def test_bootstrap_and_identify_addresses(make_host: MakeHost) -> None:
    b = await make_host()
    a = await make_host(bootstrap=(dial_addr(b),))
    await wait_for(lambda: b.peer_id in a.connected_peers())
    await wait_for(lambda: b.peerstore.addrs(a.peer_id) == a.listen_addrs)


async def test_request_response(make_host: MakeHost) -> None:
    a, b = await make_host(), await make_host()
    gate = asyncio.Event()
    waiting = 0

    async def handler(peer: object, data: bytes) -> bytes:
        nonlocal waiting
        if data == b"fail":
            raise HandlerError("no such block")
        if data == b"slow":
            waiting += 1
            await gate.wait()
        return data[::-1]

    cfg = ReqRespConfig(max_response=1 << 20, timeout=2.0, max_inbound_per_peer=2)
    RequestResponse(b, "/fedchain/test/1", handler, cfg)
    client = RequestResponse(a, "/fedchain/test/1", None, ReqRespConfig(max_outbound_per_peer=8))
    peer = await a.connect(dial_addr(b))
    assert await client.request(peer, b"abc") == b"cba"
    big = b"q" * 500_000
    assert await client.request(peer, big) == big[::-1]
    with pytest.raises(RemoteError, match="no such block"):
        await client.request(peer, b"fail")
    with pytest.raises(RequestError):
        await client.request(peer, b"r" * (2 << 20))
    # Over the per-peer limit the responder refuses instead of queueing.
    slow = [asyncio.create_task(client.request(peer, b"slow", timeout=5)) for _ in range(2)]
    await wait_for(lambda: waiting == 2, what="both slow requests in the handler")
    with pytest.raises(RequestError):
        await client.request(peer, b"x")
    assert b.counters["reqresp_busy"] >= 1
    gate.set()
    assert await asyncio.gather(*slow) == [b"wols", b"wols"]
    with pytest.raises(RequestError):
        await client.request(peer, b"z" * 10, timeout=0.000001)
    # A peer that does not serve the protocol is a RequestError (callers move on to the
    # next peer), not a negotiation exception escaping from the helper.
    other = RequestResponse(a, "/fedchain/absent/1", None, ReqRespConfig())
    with pytest.raises(RequestError, match="does not speak"):
        await other.request(peer, b"abc")


async def test_host_without_listen_addrs_can_dial(make_host: MakeHost) -> None:
    a = await make_host(listen=False)
    b = await make_host()
    assert a.listen_addrs == []
    await a.connect(dial_addr(b))
    assert isinstance(a, Host) and a.connected_peers() == [b.peer_id]


def test_hosts_work_on_uvloop() -> None:
    """The node runs on uvloop, whose transports are not asyncio.Transport subclasses."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        local = Multiaddr.parse("/ip4/127.0.0.1/tcp/0")
        async with (
            Host(IdentityKey.generate(), listen=[local]) as a,
            Host(IdentityKey.generate(), listen=[local]) as b,
        ):
            b.set_stream_handler("/echo/1", echo)
            peer = await a.connect(dial_addr(b))
            assert await ping.ping(a, peer, count=2)
            s = await a.new_stream(peer, ["/echo/1"])
            await s.write(b"x" * 300_000)
            assert await s.readexactly(300_000) == b"x" * 300_000
            await s.close()
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not leftover

    uvloop.run(scenario())


async def test_disconnect_with_ban_refuses_reconnects(make_host: MakeHost) -> None:
    a, b = await make_host(), await make_host()
    await a.connect(dial_addr(b))
    await wait_for(lambda: a.peer_id in b.connected_peers())
    b.disconnect(a.peer_id, "graylisted", ban=30)
    await wait_for(lambda: not a.connected_peers())
    # b lets the handshake finish (a cannot tell that it is banned), then drops it.
    assert await a.connect(dial_addr(b)) == b.peer_id
    await wait_for(lambda: b.counters["banned_peer"] == 1, what="b refusing a")
    await wait_for(lambda: not a.connected_peers(), what="a dropped by b")
    with pytest.raises(DialError, match="banned"):
        await b.connect(dial_addr(a))
    assert b.counters["banned_peer"] >= 1
    assert b.connected_peers() == []


async def test_wildcard_listener_advertises_concrete_addresses(make_host: MakeHost) -> None:
    # White-box (no socket bound to 0.0.0.0 in tests): what a wildcard listener advertises.
    h = Host(IdentityKey.generate())
    h._listen_addrs = [Multiaddr.parse("/ip4/0.0.0.0/tcp/26656")]
    adv = h.advertised_addrs()
    assert adv and all(a.tcp_endpoint()[1] == 26656 for a in adv)
    assert all(a.tcp_endpoint()[0] != "0.0.0.0" for a in adv)
    announced = Multiaddr.parse("/dns4/node0/tcp/26656")
    h2 = await make_host(announce=(announced,))
    assert h2.advertised_addrs() == [announced]


async def test_identify_push_announces_new_protocols(make_host: MakeHost) -> None:
    a, b = await make_host(), await make_host()
    peer = await a.connect(dial_addr(b))
    await wait_for(lambda: protocols_of(a, peer))
    assert "/late/1" not in protocols_of(a, peer)
    b.set_stream_handler("/late/1", echo)  # registered after the connection exists
    await wait_for(lambda: "/late/1" in protocols_of(a, peer))
    b.remove_stream_handler("/late/1")
    await wait_for(lambda: "/late/1" not in protocols_of(a, peer))


async def test_new_stream_can_dial_known_peers(make_host: MakeHost) -> None:
    a, b = await make_host(), await make_host()
    b.set_stream_handler("/echo/1", echo)
    with pytest.raises(PeerNotConnected):
        await a.new_stream(b.peer_id, ["/echo/1"], dial=True)  # no address known
    a.peerstore.add_addrs(b.peer_id, b.listen_addrs)
    with pytest.raises(PeerNotConnected):
        await a.new_stream(b.peer_id, ["/echo/1"])  # dialing is opt-in
    s = await a.new_stream(b.peer_id, ["/echo/1"], dial=True)
    await s.write(b"hi")
    assert await s.readexactly(2) == b"hi"
    gone = IdentityKey.generate().peer_id
    a.peerstore.add_addrs(gone, [Multiaddr.parse("/ip4/127.0.0.1/tcp/1")])
    with pytest.raises(DialError):
        await a.new_stream(gone, ["/echo/1"], dial=True)


async def test_try_write_sends_at_once_or_not_at_all(make_host: MakeHost) -> None:
    """``try_write`` sends all of its data at once when nothing has to wait (more than one
    yamux frame of it too), and nothing on a stream closed for writing; the reader sees
    exactly what was written."""
    a, b = await make_host(), await make_host()
    b.set_stream_handler("/echo/1", echo)
    peer = await a.connect(dial_addr(b))
    s = await a.new_stream(peer, ["/echo/1"])
    small = bytes(range(256)) * 300
    assert s.try_write(small)
    assert await s.readexactly(len(small)) == small
    warm = bytes(1 << 20)  # read by the echo handler: the window grows past 256 KiB
    _, echoed = await asyncio.gather(s.write(warm), s.readexactly(len(warm)))
    assert echoed == warm
    big = b"x" + bytes(300_000) + b"y"  # beyond one 256 KiB frame
    assert s.try_write(big)
    assert await s.readexactly(len(big)) == big
    await s.write(small)
    assert await s.readexactly(len(small)) == small
    await s.close()
    assert await s.read() == b""
    assert not s.try_write(small)  # closed for writing


def test_wire_protocol_reads_into_one_reused_buffer() -> None:
    """The socket is read into one reused buffer: bytes held during the upgrade are copied
    out of it before the next read overwrites it, and afterwards the sink gets each read."""
    from node.p2p.connection import WireProtocol

    proto = WireProtocol()
    buf = proto.get_buffer(-1)
    assert len(buf) >= 64 * 1024 and proto.get_buffer(-1) is buf
    buf[:5] = b"hello"
    proto.buffer_updated(5)
    buf[:3] = b"xyz"
    proto.buffer_updated(3)
    got: list[bytes] = []
    proto.switch_to(lambda d: got.append(bytes(d)), lambda: None)
    assert got == [b"helloxyz"]
    buf[:4] = b"more"
    proto.buffer_updated(4)
    assert got == [b"helloxyz", b"more"]


async def test_a_write_that_outgrows_the_window_goes_out_as_it_opens(
    make_host: MakeHost,
) -> None:
    """Data larger than what is left of the peer's window is not held back until all of
    it fits (a peer may grant window only after receiving more): it is sent as the window
    allows."""
    from node.p2p.yamux import YamuxConfig

    window = 256 * 1024
    a = await make_host(yamux=YamuxConfig(window=window))
    b = await make_host(yamux=YamuxConfig(window=window))
    gate = asyncio.Event()
    received = bytearray()

    async def lazy(stream: Stream) -> None:
        await gate.wait()
        while data := await stream.read():
            received.extend(data)

    b.set_stream_handler("/lazy/1", lazy)
    peer = await a.connect(dial_addr(b))
    s = await a.new_stream(peer, ["/lazy/1"])
    # The reader grants window back once it has consumed half of it (128 KiB): after the
    # first 100 KB it never would, if the second write waited for room for all of itself.
    await s.write(b"a" * 100_000)
    task = asyncio.create_task(s.write(b"<" + b"b" * 200_000 + b">"))
    # The rest of the window goes out, and the write waits for more.
    await wait_for(lambda: window_used_up(s), what="the window used up")
    assert not task.done()
    gate.set()
    await asyncio.wait_for(task, 10)
    await s.close()
    await wait_for(lambda: len(received) == 300_002)
    assert bytes(received) == b"a" * 100_000 + b"<" + b"b" * 200_000 + b">"


async def test_a_full_ban_map_evicts_one_entry_and_never_unbans_everybody(
    make_host: MakeHost,
) -> None:
    """Bans beyond the map's capacity push out an expired ban first, else the oldest one,
    one at a time: every other banned peer stays banned."""
    from node.p2p.host import MAX_BANS

    host = await make_host(listen=False)
    peers = [IdentityKey.from_seed(i.to_bytes(32, "big")).peer_id for i in range(MAX_BANS + 2)]
    host.disconnect(peers[0], "test", ban=1e-9)  # expired by the time the map is full
    for p in peers[1:MAX_BANS]:
        host.disconnect(p, "test", ban=3600)
    host.disconnect(peers[MAX_BANS], "test", ban=3600)  # the expired one makes room
    assert all(host.is_banned(p) for p in peers[1 : MAX_BANS + 1])
    host.disconnect(peers[MAX_BANS + 1], "test", ban=3600)  # the oldest ban goes
    assert not host.is_banned(peers[1])
    assert all(host.is_banned(p) for p in peers[2:])
