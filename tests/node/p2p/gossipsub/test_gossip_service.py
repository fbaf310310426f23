"""The asyncio service over real hosts (TCP, Noise, yamux) in one process."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import pytest

from node.p2p.gossipsub.messages import RPC, Message, Verdict
from node.p2p.gossipsub.params import (
    MESH_PROTOCOLS,
    MESHSUB_V10,
    MESHSUB_V11,
    MESHSUB_V12,
    GossipParams,
)
from node.p2p.gossipsub.service import GossipSub, PublishRejected, ServiceConfig
from node.p2p.gossipsub.wire import encode_rpc
from node.p2p.host import HostConfig
from node.p2p.peer_id import PeerID
from node.p2p.varint import encode_uvarint
from node.p2p.yamux import YamuxConfig

from .conftest import MakeNode, dial_addr, wait_for

T = "blocks"


async def line(make_node: MakeNode, n: int, **kw: object) -> list[GossipSub]:
    nodes = [await make_node(**kw) for _ in range(n)]
    for a, b in itertools.pairwise(nodes):
        await b.host.connect(dial_addr(a.host))
    return nodes


async def meshed(nodes: list[GossipSub], topic: str = T) -> None:
    def ok() -> bool:
        return all(
            len(g.router.mesh.get(topic, ())) == min(2, len(g.host.connected_peers()))
            or len(g.router.mesh.get(topic, ())) >= len(g.host.connected_peers())
            for g in nodes
        )

    await wait_for(ok)


async def test_publish_reaches_every_node_on_a_line_both_ways(make_node: MakeNode) -> None:
    a, b, c = await line(make_node, 3)
    subs = [g.subscribe(T) for g in (a, b, c)]
    await meshed([a, b, c])
    mid = await a.publish(T, b"from a")
    mid2 = await c.publish(T, b"from c")
    for sub in subs:
        got = {(await asyncio.wait_for(sub.get(), 5)).msg_id for _ in range(2)}
        assert got == {mid, mid2}
    assert a.router.peers[b.host.peer_id].protocol == MESHSUB_V12
    # Mesh peers are protected from connection pruning (after a heartbeat).
    await wait_for(lambda: b.host.peer_id in a.protected_peers)
    # Unsubscribing ends an ``async for`` over the subscription.
    seen: list[bytes] = []

    async def consume() -> None:
        async for r in subs[2]:
            seen.append(r.data)

    task = asyncio.create_task(consume())
    await a.publish(T, b"third")
    await wait_for(lambda: seen == [b"third"], what="the consumer inside its async for")
    c.unsubscribe(subs[2])
    await asyncio.wait_for(task, 5)
    assert T not in c.router.subscriptions


async def test_validator_reject_stops_propagation_and_callbacks_work(make_node: MakeNode) -> None:
    a, b, c = await line(make_node, 3)
    seen_c: list[bytes] = []
    for g in (a, b):
        g.subscribe(T)
    c.subscribe(T, callback=lambda r: seen_c.append(r.data))

    async def no_bad(peer: PeerID, msg: Message) -> Verdict:
        return Verdict.REJECT if msg.data.startswith(b"bad") else Verdict.ACCEPT

    b.add_validator(T, no_bad)
    await meshed([a, b, c])
    await a.publish(T, b"bad one")
    await a.publish(T, b"good one")
    await wait_for(lambda: seen_c == [b"good one"])
    # c hears only through b: once b has rejected the bad one, it can never reach c.
    await wait_for(lambda: b.all_counters().get("reject_validation") == 1, what="b rejecting")
    assert seen_c == [b"good one"]
    # Our own validator refuses to let us publish junk.
    b.subscribe("x")
    b.add_validator("x", no_bad)
    with pytest.raises(PublishRejected):
        await b.publish("x", b"bad")


async def test_meshsub_v10_fallback(make_node: MakeNode) -> None:
    old = await make_node(config=ServiceConfig(protocols=(MESHSUB_V10,)))
    new = await make_node()
    await new.host.connect(dial_addr(old.host))
    s_old, s_new = old.subscribe(T), new.subscribe(T)
    await meshed([old, new])
    assert new.router.peers[old.host.peer_id].protocol == MESHSUB_V10
    await new.publish(T, b"to old")
    await old.publish(T, b"to new")
    assert (await asyncio.wait_for(s_old.get(), 5)).data in (b"to old", b"to new")
    assert {(await asyncio.wait_for(s_new.get(), 5)).data for _ in range(2)} == {
        b"to old",
        b"to new",
    }


async def _raw_stream(attacker: GossipSub, victim: GossipSub):  # type: ignore[no-untyped-def]
    await attacker.host.connect(dial_addr(victim.host))
    return await attacker.host.new_stream(victim.host.peer_id, [MESHSUB_V11])


async def test_malformed_rpc_penalises_and_disconnects_without_hurting_others(
    make_node: MakeNode,
) -> None:
    victim, honest = await line(make_node, 2)
    attacker = await make_node()
    sv, sh = victim.subscribe(T), honest.subscribe(T)
    await meshed([victim, honest])
    stream = await _raw_stream(attacker, victim)
    await stream.write(b"\x10" + b"\xff" * 16)  # a 16-byte frame of protobuf garbage
    await wait_for(lambda: attacker.host.peer_id not in victim.host.connected_peers())
    assert victim.all_counters()["disconnect_malformed_rpc"] == 1
    assert victim.router.peer_score(attacker.host.peer_id, victim.now()) < -80
    # The offender is banned for a while: the victim refuses its reconnection.
    with contextlib.suppress(ConnectionError):
        await attacker.host.connect(dial_addr(victim.host))
    await wait_for(lambda: victim.host.counters["banned_peer"] >= 1)
    await wait_for(lambda: attacker.host.peer_id not in victim.host.connected_peers())
    # Length prefix near 2**32 (from a second attacker): refused before allocation.
    attacker2 = await make_node()
    stream = await _raw_stream(attacker2, victim)
    await stream.write(encode_uvarint(2**32 - 1) + b"x" * 10)
    await wait_for(lambda: victim.all_counters()["disconnect_malformed_rpc"] == 2)
    await honest.publish(T, b"still fine")
    assert (await asyncio.wait_for(sv.get(), 5)).data == b"still fine"
    assert (await asyncio.wait_for(sh.get(), 5)).data == b"still fine"


@pytest.mark.slow
async def test_flood_of_100k_small_messages_from_hostile_peer(make_node: MakeNode) -> None:
    """100,000 unsigned messages arrive between two heartbeats: the victim rejects the first
    RPC's messages, ignores the graylisted rest cheaply, keeps forwarding an honest peer's
    messages during the flood, and disconnects the attacker at its next heartbeat."""
    # No heartbeat of its own during the test: the flood must be absorbed in full first.
    victim = await make_node(params=GossipParams(heartbeat_interval=3600.0))
    honest = await make_node()
    await honest.host.connect(dial_addr(victim.host))
    attacker = await make_node()
    sv = victim.subscribe(T)
    honest.subscribe(T)
    await wait_for(lambda: honest.host.peer_id in victim.router.mesh.get(T, ()))
    stream = await _raw_stream(attacker, victim)
    me = attacker.host.peer_id.to_bytes()
    honest_sent = []
    for sent in range(0, 100_000, 500):
        rpc = RPC(
            publish=[Message(T, b"%d" % (sent + i), from_=me, seqno=b"\0" * 8) for i in range(500)]
        )
        raw = encode_rpc(rpc)
        await stream.write(encode_uvarint(len(raw)) + raw)
        if sent % 20_000 == 0:
            await honest.publish(T, b"honest %d" % sent)
            honest_sent.append(b"honest %d" % sent)

    def processed() -> int:
        c = victim.all_counters()
        return c.get("reject_signature", 0) + 500 * c.get("rpc_graylisted", 0)

    await wait_for(lambda: processed() == 100_000, timeout=30)
    got = [(await asyncio.wait_for(sv.get(), 5)).data for _ in honest_sent]
    assert sorted(got) == sorted(honest_sent)
    assert victim.router.peer_score(attacker.host.peer_id, victim.now()) < -80
    victim.heartbeat()
    await wait_for(lambda: attacker.host.peer_id not in victim.host.connected_peers())
    await honest.publish(T, b"after")
    assert (await asyncio.wait_for(sv.get(), 5)).data == b"after"


async def test_slow_peer_is_disconnected_not_silently_dropped(make_node: MakeNode) -> None:
    cfg = ServiceConfig(max_queue_bytes=1_000_000, publish_low_water=300_000, publish_wait=0.5)
    fast = await make_node(config=cfg)
    # A 256 KiB receive window (the yamux minimum) so that a peer that does not read
    # blocks us quickly.
    slow = await make_node(host_config=HostConfig(yamux=YamuxConfig(window=256 * 1024)))

    async def never_read(stream: object) -> None:
        await asyncio.sleep(3600)

    # The slow peer accepts our stream but never reads it: its yamux window fills up.
    for proto in MESH_PROTOCOLS:
        slow.host.set_stream_handler(proto, never_read)  # type: ignore[arg-type]
    await fast.host.connect(dial_addr(slow.host))
    fast.subscribe(T)
    await wait_for(lambda: slow.host.peer_id in fast.router.peers)
    fast.router.handle_rpc(
        slow.host.peer_id,
        RPC(
            subscriptions=[
                __import__("node.p2p.gossipsub.messages", fromlist=["SubOpt"]).SubOpt(True, T)
            ]
        ),
        fast.now(),
    )
    for i in range(40):
        await fast.publish(T, bytes([i]) * 100_000)
        if slow.host.peer_id not in fast.host.connected_peers():
            break
    await wait_for(lambda: slow.host.peer_id not in fast.host.connected_peers())
    c = fast.all_counters()
    assert (
        c.get("disconnect_publish_wait_exceeded", 0) + c.get("disconnect_outbound_queue_full", 0)
        == 1
    )
    assert fast.router.peer_score(slow.host.peer_id, fast.now()) < 0


async def test_large_message_8mib(make_node: MakeNode) -> None:
    a, b = await line(make_node, 2)
    sa, sb = a.subscribe(T), b.subscribe(T)
    await meshed([a, b])
    big = bytes(range(256)) * (8 * 1024 * 1024 // 256)
    await a.publish(T, big)
    assert (await asyncio.wait_for(sb.get(), 20)).data == big
    assert (await asyncio.wait_for(sa.get(), 5)).data == big


@pytest.mark.slow
async def test_20_real_hosts_random_mesh_deliver_everything(make_node: MakeNode) -> None:
    import random

    rng = random.Random(20)
    nodes = [await make_node() for _ in range(20)]
    for i, g in enumerate(nodes):
        for j in rng.sample([k for k in range(20) if k != i], 2):
            with contextlib.suppress(ConnectionError):
                await g.host.connect(dial_addr(nodes[j].host))
    got: list[list[bytes]] = [[] for _ in nodes]
    for i, g in enumerate(nodes):
        g.subscribe(T, callback=lambda r, i=i: got[i].append(r.data))  # type: ignore[misc]
    await wait_for(lambda: all(len(g.router.mesh.get(T, ())) >= 2 for g in nodes), timeout=20)
    sent = [b"m%d" % k for k in range(20)]
    for k, data in enumerate(sent):
        await nodes[k].publish(T, data)
    await wait_for(lambda: all(sorted(x) == sorted(sent) for x in got), timeout=20)
    for g in nodes:
        assert g.all_counters().get("duplicate", 0) <= 20 * len(g.router.mesh[T])
