"""Hostile peers at every transport layer: the host drops them, counts why, reports the
peer to the misbehaviour hook once authenticated, and keeps serving an honest peer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from typing import Any

import pytest

from node.p2p import multistream as ms
from node.p2p import noise, ping, yamux
from node.p2p.host import Host
from node.p2p.noise import NoiseSession
from node.p2p.pb import noise_pb2
from node.p2p.peer_id import IdentityKey, PeerID
from tests.helpers import dial_addr, wait_for

MakeHost = Any


class Raw:
    """A scripted attacker on a raw TCP socket, using our own sans-I/O cores."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.session: NoiseSession | None = None

    @classmethod
    async def open(cls, host: Host) -> Raw:
        h, p = host.listen_addrs[0].tcp_endpoint()
        return cls(*await asyncio.open_connection(h, p))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def negotiate(self, proto: str, secure: bool = False) -> None:
        d = ms.Dialer([proto])
        out = d.data_to_send()
        await self.send(self.session.encrypt(out) if secure and self.session else out)
        while True:
            data = await self.reader.read(65536)
            assert data, "closed during negotiation"
            if secure and self.session:
                data = self.session.receive_data(data)
            if d.receive_data(data) is not None:
                return

    async def handshake(self, session: NoiseSession) -> None:
        self.session = session
        await self.send(session.data_to_send())
        while not session.handshake_complete:
            data = await self.reader.read(65536)
            assert data, "closed during handshake"
            session.receive_data(data)
            await self.send(session.data_to_send())

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True once the peer has closed or reset the socket; TimeoutError if it keeps it."""
        async with asyncio.timeout(timeout):
            with contextlib.suppress(ConnectionResetError):
                while await self.reader.read(65536):
                    pass
        self.writer.close()
        return True


class ForgingSession(NoiseSession):
    """Completes the XX handshake but signs a different static key in message 3."""

    def _write_msg3(self) -> None:
        original = noise.make_payload

        def forged(identity: IdentityKey, static_pub: bytes) -> bytes:
            sig = identity.sign(noise.SIGNATURE_PREFIX + os.urandom(32))
            return noise_pb2.NoiseHandshakePayload(
                identity_key=identity.public_key_proto(), identity_sig=sig
            ).SerializeToString()

        noise.make_payload = forged
        try:
            super()._write_msg3()
        finally:
            noise.make_payload = original


HOLD = ms.encode_message(ms.PROTOCOL_ID) + ms.encode_message("/hold/1")


def header(typ: int, flags: int, sid: int, length: int) -> bytes:
    return struct.pack(">BBHII", 0, typ, flags, sid, length)


@pytest.fixture
async def victim(make_host: MakeHost) -> tuple[Host, Host, list[tuple[PeerID, str]]]:
    host = await make_host(handshake_timeout=1.0, yamux=yamux.YamuxConfig(window=256 * 1024))
    honest = await make_host()

    async def hold(stream: object) -> None:
        await asyncio.sleep(3600)  # never reads: only the window bounds what it buffers

    host.set_stream_handler("/hold/1", hold)
    await honest.connect(dial_addr(host))
    reports: list[tuple[PeerID, str]] = []
    host.add_misbehaviour_hook(lambda p, r: reports.append((p, r)))
    return host, honest, reports


async def still_serving(host: Host, honest: Host, *, offender_gone: bool = True) -> None:
    assert await ping.ping(honest, host.peer_id, count=2)
    if offender_gone:
        assert host.connected_peers() == [honest.peer_id]


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"A" * 100,
        b"\xff\xff\xff\xff\x0f" + b"x" * 64,  # length prefix near 2**32
        b"\x13/multistream/1.0.0\n\x08/plain\n" * 40,  # plaintext, repeatedly
        os.urandom(300_000),
    ],
)
async def test_garbage_before_multistream(victim: Any, garbage: bytes) -> None:
    host, honest, _ = victim
    raw = await Raw.open(host)
    with contextlib.suppress(ConnectionError, OSError):  # the host may close it mid-send
        for k in range(0, len(garbage), 65536):
            await raw.send(garbage[k : k + 65536])
    assert await raw.closed_by_peer()
    await still_serving(host, honest)
    assert host.counters["multistream_error"] + host.counters["upgrade_eof"] >= 1


async def test_plaintext_is_never_accepted(victim: Any) -> None:
    host, honest, _ = victim
    raw = await Raw.open(host)
    d = ms.Dialer(["/plaintext/2.0.0"])
    await raw.send(d.data_to_send())
    with pytest.raises(ms.NegotiationFailed):
        while True:
            data = await raw.reader.read(65536)
            assert data
            d.receive_data(data)
    await still_serving(host, honest)


async def test_bad_noise_message(victim: Any) -> None:
    host, honest, _ = victim
    raw = await Raw.open(host)
    await raw.negotiate("/noise")
    await raw.send(b"\x00\x40" + os.urandom(0x40))  # a "msg 1" with garbage payload
    await raw.send(b"\x00\x10" + os.urandom(0x10))  # then a junk msg 3
    assert await raw.closed_by_peer()
    await still_serving(host, honest)
    assert host.counters["noise_error"] == 1


async def test_identity_signature_mismatch(victim: Any) -> None:
    host, honest, _ = victim
    raw = await Raw.open(host)
    await raw.negotiate("/noise")
    await raw.handshake(ForgingSession(IdentityKey.generate(), initiator=True))
    assert await raw.closed_by_peer()
    await still_serving(host, honest)
    assert host.counters["noise_error"] == 1


async def test_silent_peer_times_out_in_handshake(victim: Any) -> None:
    host, honest, _ = victim
    raw = await Raw.open(host)
    await raw.negotiate("/noise")
    assert await raw.closed_by_peer(timeout=5)
    assert host.counters["handshake_timeout"] == 1
    await still_serving(host, honest)


@pytest.mark.parametrize(
    "frames",
    [
        b"\x01" + header(yamux.TYPE_PING, yamux.FLAG_SYN, 0, 1)[1:],
        header(7, 0, 1, 0),
        header(yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_SYN, 1, 0)
        + header(yamux.TYPE_WINDOW_UPDATE, 0, 1, 0xFFFFFFFF),  # window overflow
        header(yamux.TYPE_DATA, yamux.FLAG_SYN, 1, 0xFFFFFFFF),  # length near 2**32
        header(yamux.TYPE_DATA, yamux.FLAG_SYN, 2, 1) + b"x",  # wrong parity
        # Open a stream to a handler that never reads, then overrun the 256 KiB window.
        header(yamux.TYPE_DATA, yamux.FLAG_SYN, 1, len(HOLD))
        + HOLD
        + (header(yamux.TYPE_DATA, 0, 1, 65536) + b"w" * 65536) * 5,
    ],
)
async def test_invalid_yamux_frames(victim: Any, frames: bytes) -> None:
    host, honest, reports = victim
    attacker = IdentityKey.generate()
    raw = await Raw.open(host)
    await raw.negotiate("/noise")
    await raw.handshake(NoiseSession(attacker, initiator=True, expected_peer=host.peer_id))
    await raw.negotiate(yamux.PROTOCOL_ID, secure=True)
    assert raw.session is not None
    with contextlib.suppress(ConnectionError, OSError):
        await raw.send(raw.session.encrypt(frames))
    assert await raw.closed_by_peer()
    assert host.counters["yamux_protocol_error"] == 1
    assert reports == [(attacker.peer_id, "yamux_protocol_error")]
    await still_serving(host, honest)


async def test_stream_flood_is_refused_not_queued(make_host: MakeHost) -> None:
    from node.p2p.connection import Stream

    host = await make_host(yamux=yamux.YamuxConfig(max_streams=8))
    gate = asyncio.Event()

    async def hold(stream: Stream) -> None:
        await gate.wait()

    host.set_stream_handler("/hold/1", hold)
    client = await make_host()
    peer = await client.connect(dial_addr(host))
    opened = await asyncio.gather(
        *(client.new_stream(peer, ["/hold/1"]) for _ in range(20)), return_exceptions=True
    )
    assert sum(not isinstance(o, BaseException) for o in opened) <= 8
    assert host.counters["stream_limit"] >= 12
    gate.set()
    assert await ping.ping(client, peer)


async def test_no_sockets_leak_after_attacks(make_host: MakeHost) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    host = await make_host(handshake_timeout=0.5)
    for _ in range(5):
        raw = await Raw.open(host)
        await raw.send(b"\x13/multistream/1.0.0\nxx")
        raw.writer.close()
    raws = [await Raw.open(host) for _ in range(3)]
    # The five that hung up mid-negotiation and the three that stay silent are all dropped.
    await wait_for(lambda: host.counters["upgrade_eof"] == 5, what="the hang-ups dropped")
    await wait_for(lambda: host.counters["handshake_timeout"] == 3, what="the silent ones")
    await host.close()
    for r in raws:
        r.writer.close()
        await r.writer.wait_closed()
    await wait_for(lambda: len(os.listdir("/proc/self/fd")) <= fds_before, what="no fd left")


async def test_flood_of_100k_small_frames_keeps_host_responsive(victim: Any) -> None:
    """100,000 tiny frames (pings the attacker never reads the answers to, and 1-byte
    data frames): the host processes them without unbounded queues and keeps serving."""
    host, honest, _ = victim
    raw = await Raw.open(host)
    await raw.negotiate("/noise")
    await raw.handshake(NoiseSession(IdentityKey.generate(), initiator=True))
    await raw.negotiate(yamux.PROTOCOL_ID, secure=True)
    assert raw.session is not None
    ping_frame = header(yamux.TYPE_PING, yamux.FLAG_SYN, 0, 7)
    opened = header(yamux.TYPE_DATA, yamux.FLAG_SYN, 1, len(HOLD)) + HOLD
    tiny = header(yamux.TYPE_DATA, 0, 1, 1) + b"t"
    await raw.send(raw.session.encrypt(opened))
    for _ in range(10):
        await raw.send(raw.session.encrypt((ping_frame + tiny) * 5_000))
    await still_serving(host, honest, offender_gone=False)
    conn = next(
        c for p in host.connected_peers() if p != honest.peer_id for c in host.connections(p)
    )
    # The never-reading handler holds exactly what it was sent: bounded by its window.
    assert sum(st._buffered for st in conn.streams.values()) == 50_000
    raw.writer.close()


async def test_unresponsive_peer_is_dropped_by_keepalive(make_host: MakeHost) -> None:
    host = await make_host(keepalive_interval=0.1, keepalive_timeout=0.2)
    raw = await Raw.open(host)
    await raw.negotiate("/noise")
    await raw.handshake(NoiseSession(IdentityKey.generate(), initiator=True))
    await raw.negotiate(yamux.PROTOCOL_ID, secure=True)
    # Never answer anything (not even yamux pings): the host must give up on us.
    await wait_for(lambda: host.counters["keepalive_timeout"], timeout=5, what="keepalive drop")
    await wait_for(lambda: not host.connected_peers(), timeout=5, what="the peer dropped")
    assert host.counters["keepalive_timeout"] == 1
    assert host.connected_peers() == []
    raw.writer.close()


@pytest.mark.parametrize("reply", [b"\xff" * 100_000, b"\x0a\x05" + b"\x08\x01\x12\x01x"])
async def test_hostile_identify_replies(make_host: MakeHost, reply: bytes) -> None:
    """Oversized, or a public key that is not the peer's: the peer is cut off and reported."""
    from node.p2p.connection import Stream

    honest_host = await make_host()
    evil = await make_host()

    async def lying_identify(stream: Stream) -> None:
        await stream.write(reply)

    evil.set_stream_handler("/ipfs/id/1.0.0", lying_identify)
    reports: list[tuple[PeerID, str]] = []
    honest_host.add_misbehaviour_hook(lambda p, r: reports.append((p, r)))
    await honest_host.connect(dial_addr(evil))
    await wait_for(lambda: not honest_host.connected_peers(), timeout=5, what="evil cut off")
    assert honest_host.counters["identify_invalid"] == 1
    assert reports == [(evil.peer_id, "identify_invalid")]


async def test_peer_that_never_reads_is_cut_off_not_buffered(make_host: MakeHost) -> None:
    """Pings make us write; an attacker that never reads the answers fills our socket and
    then our write buffer, and is dropped at the limit instead of growing memory."""
    host = await make_host(max_write_buffer=256 * 1024)
    raw = await Raw.open(host)
    await raw.negotiate("/noise")
    await raw.handshake(NoiseSession(IdentityKey.generate(), initiator=True))
    await raw.negotiate(yamux.PROTOCOL_ID, secure=True)
    assert raw.session is not None
    pings = header(yamux.TYPE_PING, yamux.FLAG_SYN, 0, 1) * 20_000
    with contextlib.suppress(ConnectionError, OSError):
        async with asyncio.timeout(20):
            while host.counters["slow_peer"] == 0:
                await raw.send(raw.session.encrypt(pings))  # fresh nonces: no replay
    assert host.counters["slow_peer"] == 1, host.counters
    await wait_for(lambda: not host.connected_peers(), timeout=5, what="the slow peer dropped")
    raw.writer.close()


async def test_reqresp_length_prefix_near_2_32(make_host: MakeHost) -> None:
    from node.p2p.connection import StreamReset
    from node.p2p.reqresp import RequestResponse
    from node.p2p.varint import encode_uvarint

    server, client = await make_host(), await make_host()

    async def handler(peer: PeerID, data: bytes) -> bytes:
        return data

    rr = RequestResponse(server, "/fedchain/blocks/1", handler)
    peer = await client.connect(dial_addr(server))
    stream = await client.new_stream(peer, ["/fedchain/blocks/1"])
    await stream.write(encode_uvarint(2**32 - 1) + b"x" * 100)
    with pytest.raises((StreamReset, EOFError)):
        await stream.readexactly(1)
    assert server.counters["reqresp_bad_request"] == 1
    # The server still answers well-formed requests on the same connection.
    good = RequestResponse(client, "/fedchain/blocks/1")
    assert await good.request(peer, b"ok?") == b"ok?"
    assert rr.protocol in server.supported_protocols()


async def test_connection_flood_is_capped_during_handshake(victim: Any) -> None:
    """More sockets than pending-upgrade slots from one IP: the IP's share holds, the
    excess sheds the idle ones instead of queueing them."""
    host, honest, _ = victim
    limit = host.config.max_pending_upgrades
    share = host.config.max_pending_upgrades_per_ip
    raws = [await Raw.open(host) for _ in range(limit + 10)]
    await wait_for(
        lambda: host.counters["upgrade_shed"] >= limit + 10 - share, timeout=5, what="the cap"
    )
    assert host.pending_upgrades <= share
    await still_serving(host, honest)
    for r in raws:
        r.writer.close()


async def _idle_socket_slot(host: Host, ip: str, opened: list[int]) -> None:
    """One attacker slot: an idle socket that is reopened as soon as the host drops it."""
    h, p = host.listen_addrs[0].tcp_endpoint()
    while True:
        try:
            reader, writer = await asyncio.open_connection(h, p, local_addr=(ip, 0))
        except OSError:
            await asyncio.sleep(0.05)
            continue
        opened[0] += 1
        try:
            with contextlib.suppress(ConnectionError):
                await reader.read(1)  # the host closes it: refresh the slot
        finally:
            writer.close()
        await asyncio.sleep(0.2)


@pytest.mark.parametrize(
    "ips",
    [["127.0.0.1"], [f"127.0.0.{k}" for k in range(2, 10)]],
    ids=["one-ip-shared-with-honest", "eight-ips"],
)
async def test_honest_dialers_get_through_a_handshake_flood(
    make_host: MakeHost, ips: list[str]
) -> None:
    """80 idle sockets, reopened whenever dropped, against the 64 pending-upgrade slots:
    from the honest dialers' own IP (the per-IP cap applies) or spread over eight (the
    global pool fills). Each of five honest hosts still connects within 2 s."""
    host = await make_host()
    per_ip = 80 // len(ips)
    opened = [0]
    slots = [ip for ip in ips for _ in range(per_ip)]
    flood = [asyncio.create_task(_idle_socket_slot(host, ip, opened)) for ip in slots]
    try:
        await wait_for(lambda: opened[0] >= 80, what="the flood connected")
        await wait_for(
            lambda: host.counters["upgrade_limit"] + host.counters["upgrade_shed"] >= 16,
            what="the pending-upgrade pool full",
        )
        for _ in range(5):
            honest = await make_host(listen=False)
            async with asyncio.timeout(2):
                peer = await honest.connect(dial_addr(host))
            assert peer == host.peer_id
            assert await ping.ping(honest, peer)
    finally:
        for t in flood:
            t.cancel()
        await asyncio.gather(*flood, return_exceptions=True)


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def test_unread_streams_cost_a_bounded_memory_per_connection(make_host: MakeHost) -> None:
    """One peer opens 16 streams to a handler that never reads and fills every window:
    the victim process (its own, measured from /proc) grows by at most the connection's
    budget, stays under 400 MB, and is back near its baseline once the peer has gone."""
    import subprocess
    import sys

    from node.p2p.connection import Stream
    from node.p2p.multiaddr import Multiaddr
    from tests.node.p2p.conftest import window_used_up

    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.node.p2p.hold_host"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        addr = Multiaddr.parse((await asyncio.to_thread(proc.stdout.readline)).strip())
        attacker = await make_host(listen=False)
        peer = await attacker.connect(addr)
        conn = attacker.connections(peer)[0]
        await conn.ping(5)
        baseline = _rss_bytes(proc.pid)
        streams = [await attacker.new_stream(peer, ["/hold/1"]) for _ in range(16)]
        chunk = b"j" * (256 << 10)

        async def fill(st: Stream) -> None:
            while True:  # in socket-sized pieces: our own write buffer stays small
                await st.write(chunk)

        writers = [asyncio.create_task(fill(st)) for st in streams]
        try:
            await wait_for(
                lambda: all(window_used_up(st) for st in streams), timeout=60, what="windows"
            )
            await conn.ping(30)  # ordered after the data: the victim has taken it all in
            grown = _rss_bytes(proc.pid) - baseline
            assert grown < 64 << 20, f"victim grew by {grown >> 20} MiB"
            assert _rss_bytes(proc.pid) < 400 << 20
        finally:
            for w in writers:
                w.cancel()
            await asyncio.gather(*writers, return_exceptions=True)
        await attacker.close()
        await wait_for(
            lambda: _rss_bytes(proc.pid) < baseline + (32 << 20),
            timeout=10,
            what="the victim back near its baseline",
        )
    finally:
        proc.kill()  # by its PID; the victim keeps nothing worth a graceful stop
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


async def test_inbound_streams_and_their_buffers_are_capped_per_connection(
    make_host: MakeHost,
) -> None:
    """100 inbound streams that each send 1 MiB nobody reads: those beyond the per
    connection cap are reset, and what the accepted ones buffer stays in the connection's
    budget (initial windows do not grow while nothing is read)."""
    host = await make_host()

    async def hold(stream: object) -> None:
        await asyncio.Event().wait()

    host.set_stream_handler("/hold/1", hold)
    client = await make_host(listen=False)
    peer = await client.connect(dial_addr(host))
    opened = await asyncio.gather(
        *(client.new_stream(peer, ["/hold/1"]) for _ in range(100)), return_exceptions=True
    )
    streams = [s for s in opened if not isinstance(s, BaseException)]
    cap = host.config.yamux.max_inbound_streams
    assert len(streams) <= cap
    assert host.counters["stream_limit"] >= 100 - cap
    writers = [asyncio.create_task(st.write(b"m" * (1 << 20))) for st in streams]
    try:
        conn = client.connections(peer)[0]
        await conn.ping(10)
        (victim_conn,) = host.connections(client.peer_id)
        await wait_for(
            lambda: all(
                w.done() or st.conn.yamux.send_window(st.sid) == 0
                for w, st in zip(writers, streams, strict=True)
            ),
            what="every window used up",
        )
        await conn.ping(10)
        buffered = sum(st._buffered for st in victim_conn.streams.values())
        assert buffered <= len(streams) * yamux.INITIAL_WINDOW
        assert buffered <= host.config.yamux.max_buffered
    finally:
        for w in writers:
            w.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
    assert await ping.ping(client, peer)


async def test_connections_per_peer_id_are_capped(victim: Any) -> None:
    """20 authenticated connections with one peer ID: the host keeps at most its cap of
    them (the newest) and closes the rest."""
    host, honest, _ = victim
    attacker = IdentityKey.generate()
    raws: list[Raw] = []
    for _ in range(20):
        raw = await Raw.open(host)
        await raw.negotiate("/noise")
        await raw.handshake(NoiseSession(attacker, initiator=True, expected_peer=host.peer_id))
        await raw.negotiate(yamux.PROTOCOL_ID, secure=True)
        raws.append(raw)
    cap = host.config.max_connections_per_peer
    await wait_for(lambda: len(host.connections(attacker.peer_id)) <= cap, what="the per-peer cap")
    for raw in raws[: 20 - cap]:
        assert await raw.closed_by_peer()
    assert host.counters["peer_connection_limit"] == 20 - cap
    newest = {r.writer.get_extra_info("sockname")[1] for r in raws[20 - cap :]}
    kept = {c.remote_addr.tcp_endpoint()[1] for c in host.connections(attacker.peer_id)}
    assert kept == newest
    await still_serving(host, honest, offender_gone=False)
    for raw in raws:
        raw.writer.close()
