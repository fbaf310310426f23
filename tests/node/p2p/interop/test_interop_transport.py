"""Interop with py-libp2p 0.8.1 in a separate process: Noise + yamux over TCP, identify
and ping, in both directions."""

from __future__ import annotations

import asyncio
import json

import pytest

from node.p2p import ping
from node.p2p.connection import Stream
from node.p2p.host import Host
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import IdentityKey, PeerID
from node.p2p.peer_record import open_record
from node.p2p.peerstore import Identified
from tests.helpers import wait_for

from ..conftest import MakeHost
from .harness import PyLibp2pPeer

pytestmark = [pytest.mark.interop, pytest.mark.slow]


@pytest.fixture
async def host(make_host: MakeHost) -> Host:
    return await make_host()


async def wait_for_identify(host: Host, peer: PeerID) -> Identified:
    return await wait_for(lambda: host.peerstore.identified(peer), what=f"identify of {peer}")


async def test_we_dial_py_libp2p(host: Host) -> None:
    async with PyLibp2pPeer() as py:
        peer = await host.connect(Multiaddr.parse(py.addr))
        assert str(peer) == py.peer_id
        rtts = await ping.ping(host, peer, count=3)
        assert len(rtts) == 3
        seen = await wait_for_identify(host, peer)
        assert "/ipfs/ping/1.0.0" in seen.protocols
        assert seen.agent.startswith("py-libp2p")
        assert host.peerstore.addrs(peer) == [Multiaddr.parse(py.addr).without_peer_id()]
        # py-libp2p signs its addresses into a peer record inside identify; ours verifies it.
        record = host.peerstore.record(peer)
        assert record is not None
        signed = [a.without_peer_id() for a in open_record(record).addrs]
        assert signed == [Multiaddr.parse(py.addr).without_peer_id()]
        # ... and the py-libp2p side can use the same connection to reach us.
        assert (await py.command(f"ping {host.peer_id}")).startswith("ok ping")
        reply = await py.command(f"identify {host.peer_id}")
        assert reply.startswith("ok identify "), reply
        info = json.loads(reply.split(" ", 2)[2])
        assert info["key_matches"] is True
        assert info["agent"] == "fedchain/0.1.0"
        assert "/ipfs/ping/1.0.0" in info["protocols"]
        assert info["listen_addrs"] == [str(a) for a in host.listen_addrs]
        assert info["observed_addr"] == str(Multiaddr.parse(py.addr).without_peer_id())
        assert host.counters.total() == 0, host.counters


async def test_py_libp2p_dials_us(host: Host) -> None:
    async with PyLibp2pPeer() as py:
        addr = host.listen_addrs[0].with_peer_id(host.peer_id)
        reply = await py.command(f"connect {addr}")
        assert reply == f"ok connect {host.peer_id}", reply
        peer = PeerID.from_base58(py.peer_id)
        await wait_for(lambda: peer in host.connected_peers(), what="py-libp2p connected")
        assert (await py.command(f"ping {host.peer_id}")).startswith("ok ping")
        reply = await py.command(f"identify {host.peer_id}")
        info = json.loads(reply.split(" ", 2)[2])
        assert info["key_matches"] is True
        assert info["observed_addr"].startswith("/ip4/127.0.0.1/tcp/")
        assert len(await ping.ping(host, peer, count=2)) == 2
        seen = await wait_for_identify(host, peer)
        assert "/ipfs/id/1.0.0" in seen.protocols
        assert host.counters.total() == 0, host.counters


async def test_py_libp2p_rejects_a_wrong_peer_id_and_so_do_we(host: Host) -> None:
    async with PyLibp2pPeer() as py:
        wrong = Multiaddr.parse(py.addr).with_peer_id(IdentityKey.generate().peer_id)
        from node.p2p.host import DialError

        with pytest.raises(DialError, match="peer_id_mismatch"):
            await host.connect(wrong)
        # Its host keeps working for an honest dial afterwards.
        peer = await host.connect(Multiaddr.parse(py.addr))
        assert await ping.ping(host, peer)


async def test_bulk_transfer_flow_control_both_ways(host: Host) -> None:
    """Megabytes through yamux windows in both directions, with py-libp2p's window updates."""

    async def sink(stream: Stream) -> None:
        total = 0
        while data := await stream.read():
            total += len(data)
        await stream.write(str(total).encode())

    host.set_stream_handler("/interop/sink/1.0.0", sink)
    async with PyLibp2pPeer() as py:
        peer = await host.connect(Multiaddr.parse(py.addr))
        stream = await host.new_stream(peer, ["/interop/echo/1.0.0"])
        blob = bytes(range(256)) * (3 * 4096)  # 3 MiB: many window updates each way
        writer = asyncio.create_task(stream.write(blob))
        got = await stream.readexactly(len(blob))
        await writer
        assert got == blob
        await stream.close()
        assert await stream.read() == b""
        n = 5_000_000
        reply = await py.command(f"send {host.peer_id} /interop/sink/1.0.0 {n}", timeout=60)
        assert reply == f"ok send {n}", reply
        assert host.counters.total() == 0, host.counters
