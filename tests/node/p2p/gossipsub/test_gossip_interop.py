"""GossipSub interop with py-libp2p 0.8.1 in a separate process (its own venv), both dial
directions: messages published on each side are delivered on the other."""

from __future__ import annotations

import asyncio

import pytest

from node.p2p.gossipsub.messages import default_message_id
from node.p2p.gossipsub.params import GossipParams
from node.p2p.gossipsub.service import GossipSub
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import PeerID

from ..interop.harness import PyLibp2pPeer
from .conftest import dial_addr, wait_for

pytestmark = [pytest.mark.interop, pytest.mark.slow]
T = "interop-topic"


async def _exchange(ours: GossipSub, theirs: PyLibp2pPeer) -> None:
    their_id = PeerID.from_base58(theirs.peer_id)
    sub = ours.subscribe(T)
    assert (await theirs.command(f"subscribe {T}")).startswith("ok")
    await wait_for(lambda: their_id in ours.router.mesh.get(T, ()), timeout=20)
    # py-libp2p grafts us at its next heartbeat (1 s); publish until it is meshed, since a
    # message published before its mesh exists is legitimately not delivered.
    payload = b"from fedchain"
    async with asyncio.timeout(30):
        for attempt in range(1000):
            await ours.publish(T, payload + b" %d" % attempt)
            try:
                topic, data = await asyncio.wait_for(theirs.received.get(), 1.5)
                break
            except TimeoutError:
                continue
    assert topic == T and data.startswith(payload)
    # A large message: its RPC spans several Noise frames.
    big = bytes(range(256)) * 800
    await ours.publish(T, big)
    async with asyncio.timeout(20):
        topic, data = await theirs.received.get()
        while data.startswith(payload):  # copies of the earlier attempts
            topic, data = await theirs.received.get()
    assert topic == T and data == big
    assert (await theirs.command(f"publish {T} {b'from py-libp2p'.hex()}")).startswith("ok")
    async with asyncio.timeout(20):
        got = await sub.get()
        while got.source is None:  # our own publishes are delivered locally too
            got = await sub.get()
    assert got.data == b"from py-libp2p" and got.source == their_id
    assert got.author == their_id.to_bytes()  # signed by its author, verified by us


async def test_gossip_with_pylibp2p_we_dial(make_node) -> None:  # type: ignore[no-untyped-def]
    # py-libp2p's message-ID function (from || seqno), so that its IHAVEs match ours.
    ours = await make_node(
        params=GossipParams(heartbeat_interval=0.5), msg_id_fn=default_message_id
    )
    async with PyLibp2pPeer("--gossip") as theirs:
        await ours.host.connect(Multiaddr.parse(theirs.addr))
        await _exchange(ours, theirs)


async def test_gossip_with_pylibp2p_they_dial(make_node) -> None:  # type: ignore[no-untyped-def]
    ours = await make_node(params=GossipParams(heartbeat_interval=0.5))
    async with PyLibp2pPeer("--gossip") as theirs:
        reply = await theirs.command(f"connect {dial_addr(ours.host)}")
        assert reply.startswith("ok"), reply
        await _exchange(ours, theirs)
