"""Relay backpressure: a stream receiver that holds window credit stops its sender, and a
relay whose downstream queue is congested holds its upstream instead of growing the queue
(the loss the 3-process benchmark showed: a relay disconnecting its slower downstream)."""

from __future__ import annotations

import asyncio

from node.p2p.connection import Stream
from node.p2p.gossipsub.params import GossipParams
from node.p2p.gossipsub.service import GossipSub, ServiceConfig
from node.p2p.host import HostConfig
from node.p2p.peer_id import PeerID
from node.p2p.yamux import INITIAL_WINDOW, YamuxConfig

from ..conftest import window_used_up
from .conftest import MakeNode, dial_addr, wait_for

SMALL_WINDOW = HostConfig(yamux=YamuxConfig(window=INITIAL_WINDOW))


async def test_receiver_sees_every_byte_and_held_credit_stops_the_writer(
    make_node: MakeNode,
) -> None:
    a = await make_node(host_config=SMALL_WINDOW)
    b = await make_node(host_config=SMALL_WINDOW)
    got = bytearray()
    streams: list[Stream] = []

    async def handler(stream: Stream) -> None:
        streams.append(stream)
        stream.hold_credit()
        stream.set_receiver(got.extend)
        while await stream.read():
            pass

    b.host.set_stream_handler("/test/sink/1", handler)
    await a.host.connect(dial_addr(b.host))
    st = await a.host.new_stream(b.host.peer_id, ["/test/sink/1"])
    data = bytes(range(256)) * (3 * INITIAL_WINDOW // 256)
    writer = asyncio.create_task(st.write(data))
    # Only the initial window can arrive while the receiver holds its credit.
    await wait_for(lambda: len(got) >= INITIAL_WINDOW - 4096)
    await wait_for(lambda: window_used_up(st), what="the writer out of window")
    assert not writer.done()
    assert len(got) <= INITIAL_WINDOW
    streams[0].release_credit()
    async with asyncio.timeout(10):
        await writer
    await wait_for(lambda: len(got) == len(data))
    assert bytes(got) == data
    await st.close()


async def test_congested_relay_holds_its_upstream_until_the_queue_drains(
    make_node: MakeNode,
) -> None:
    params = GossipParams(heartbeat_interval=0.1, max_message_size=1 << 20)
    cfg = ServiceConfig(publish_low_water=64 * 1024, publish_wait=30.0)
    a = await make_node(params=params, config=cfg, host_config=SMALL_WINDOW)
    b = await make_node(params=params, config=cfg, host_config=SMALL_WINDOW)
    await b.host.connect(dial_addr(a.host))
    received: list[bytes] = []
    for n in (a, b):
        n.subscribe("t", callback=(lambda r: received.append(r.data)) if n is b else None)
    await wait_for(lambda: a.host.peer_id in b.router.mesh.get("t", set()))
    # Pretend B has a downstream peer that cannot keep up.
    ghost = PeerID.from_pubkey(bytes(32))
    b._congested.add(ghost)
    msgs = [i.to_bytes(4, "big") * 16_000 for i in range(40)]  # 64 KB each, 2.5 MB
    publisher = asyncio.create_task(_publish_all(a, msgs))
    await wait_for(lambda: len(b._held) == 1)
    await wait_for(lambda: window_used_up(a._out[b.host.peer_id].stream), what="A held")
    # B stopped granting window: at most about one window of messages got through, and
    # A's own publish is waiting on its queue rather than dropping anything.
    assert len(received) * 64_000 <= 2 * INITIAL_WINDOW
    assert not publisher.done()
    b._uncongest(ghost)
    async with asyncio.timeout(20):
        await publisher
    await wait_for(lambda: len(received) == len(msgs))
    assert received == msgs
    assert not b._held
    assert "disconnect_outbound_queue_full" not in b.all_counters()


async def _publish_all(node: GossipSub, msgs: list[bytes]) -> None:
    for m in msgs:
        await node.publish("t", m)
