"""The node's gossip handlers: received updates are admitted with their payload and wake
a waiting engine only when a block has work, own txs go out on their topic and are
counted, and consensus messages (gossiped or direct) reach the running engine as their
author's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from consensus.engine import Event, MessageReceived, TxsAvailable
from fl.attacks import nan_update
from fl.update import ModelUpdate as FLUpdate
from node.app.application import NodeApp
from node.app.mempool import Mempool
from node.core.crypto import PrivateKey
from node.ledger.tx import Transfer, Tx, sign_tx
from node.p2p.gossipsub.messages import Message, Verdict
from node.p2p.gossipsub.params import GossipParams
from node.p2p.gossipsub.service import GossipSub, Received
from node.p2p.host import Host
from node.p2p.peer_id import IdentityKey
from node.rpc.metrics import NodeMetrics
from node.rpc.server import RPCServer
from node.rpc.view import LocalView
from node.services.consensus_driver import ConsensusHandle
from node.services.gossip import NodeGossip
from node.services.gossip_topics import Topics, UpdateGossip
from node.store.blobs import BlobStore
from node.store.commits import CommitStore
from node.store.ledger import Ledger
from node.store.models import ZERO_HASH, ModelStore
from tests.helpers import wait_for
from tests.kits.updates import signed_update
from tests.node.daemon.chainkit import connect, genesis_for, initial_fl_hash, make_update

KEYS = [PrivateKey.from_secret(f"node-gossip-{i}") for i in range(2)]
PEER = IdentityKey.from_seed(b"\x11" * 32).peer_id
AUTHOR = IdentityKey.from_seed(b"\x12" * 32).peer_id


class FakeGossipSub:
    """The GossipSub calls the handlers make, recorded."""

    def __init__(self) -> None:
        self.validators: dict[str, object] = {}
        self.subscribed: dict[str, object] = {}
        self.published: list[tuple[str, bytes]] = []

    def add_validator(self, topic: str, validator: object) -> None:
        self.validators[topic] = validator

    def subscribe(self, topic: str, callback: object) -> None:
        self.subscribed[topic] = callback

    async def publish(self, topic: str, data: bytes) -> None:
        self.published.append((topic, data))


@dataclass
class Driver:
    fed: list[Event] = field(default_factory=list)

    def feed(self, event: Event) -> None:
        self.fed.append(event)


@dataclass
class Node:
    gossip: NodeGossip
    pubsub: FakeGossipSub
    app: NodeApp
    blobs: BlobStore
    driver: Driver
    handle: ConsensusHandle
    metrics: NodeMetrics


def _node(
    tmp_path: Path,
    host: Host,
    *,
    min_updates: int = 1,
    running: bool = True,
    pubsub: FakeGossipSub | GossipSub | None = None,
) -> Node:
    g = genesis_for(KEYS, min_updates=min_updates)
    ledger = Ledger.open(tmp_path / "chain.sqlite", g, fsync=False)
    blobs = BlobStore(tmp_path / "blobs")
    app = NodeApp(
        ledger, Mempool(ledger.state), ModelStore(blobs, g.fl), CommitStore(tmp_path / "c.sqlite")
    )
    handle = ConsensusHandle(catching_up=False)
    driver = Driver()
    if running:
        handle.driver = driver  # type: ignore[assignment]
    pubsub = pubsub or FakeGossipSub()
    metrics = NodeMetrics()
    gossip = NodeGossip(
        host,
        pubsub,  # type: ignore[arg-type]
        Topics(g.chain_id),
        app=app,
        blobs=blobs,
        consensus=handle,
        metrics=metrics,
    )
    gossip.start()
    return Node(gossip, pubsub, app, blobs, driver, handle, metrics)  # type: ignore[arg-type]


def _update(node: Node, key: PrivateKey = KEYS[0], seed: int = 1) -> tuple[bytes, bytes, bytes]:
    g = node.app.genesis
    tx, payload = make_update(
        key, g, round=0, base_ledger_hash=ZERO_HASH, base_fl_hash=initial_fl_hash(g), seed=seed
    )
    return tx.encode(), payload, tx.hash


def _out(metrics: NodeMetrics, topic: str, name: str, direction: str = "out") -> float | None:
    return metrics.registry.get_sample_value(
        f"fedchain_{name}_total", {"topic": topic, "direction": direction}
    )


async def test_a_received_update_is_admitted_and_wakes_the_engine_only_with_work(
    tmp_path: Path, hosts: list[Host]
) -> None:
    for min_updates, woken in ((1, [TxsAvailable()]), (2, [])):
        node = _node(tmp_path / str(min_updates), hosts[min_updates], min_updates=min_updates)
        topic = node.gossip.topics.updates
        tx, payload, tx_hash = _update(node)
        validate = node.pubsub.validators[topic]
        msg = Message(topic=topic, data=UpdateGossip(tx, payload).encode(), from_=PEER.to_bytes())
        assert await validate(PEER, msg) is Verdict.ACCEPT  # type: ignore[operator]
        assert node.app.mempool.payload(tx_hash) == payload
        assert node.blobs.get(node.app.mempool.get(tx_hash).body.payload_hash) == payload  # type: ignore[union-attr]
        # One update is a block's worth only when one closes the round.
        assert node.driver.fed == woken


async def test_own_txs_go_out_on_their_topic_and_are_counted(
    tmp_path: Path, hosts: list[Host]
) -> None:
    node = _node(tmp_path, hosts[0])
    g, topics = node.app.genesis, node.gossip.topics
    transfer = sign_tx(KEYS[0], g.chain_id, 0, g.fees, Transfer(KEYS[1].address, 3))
    await node.gossip.publish_tx(transfer, None)
    tx, payload, _ = _update(node, KEYS[1])
    update = Tx.from_bytes(tx)
    await node.gossip.publish_tx(update, payload)
    assert node.pubsub.published == [
        (topics.txs, transfer.encode()),
        (topics.updates, UpdateGossip(tx, payload).encode()),
    ]
    assert node.blobs.has(update.body.payload_hash)  # type: ignore[union-attr]
    assert _out(node.metrics, topics.txs, "gossip_messages") == 1
    assert _out(node.metrics, topics.updates, "gossip_bytes") == len(node.pubsub.published[1][1])
    assert node.gossip.traffic.bytes_out == sum(len(d) for _, d in node.pubsub.published)


async def test_consensus_gossip_reaches_the_running_engine_as_its_authors(
    tmp_path: Path, hosts: list[Host]
) -> None:
    node = _node(tmp_path, hosts[0])
    topics = node.gossip.topics
    deliver = node.pubsub.subscribed[topics.consensus]
    deliver(Received(b"id1", topics.consensus, b"vote", AUTHOR.to_bytes(), PEER))  # type: ignore[operator]
    deliver(Received(b"id2", topics.consensus, b"junk author", b"\x00", PEER))  # type: ignore[operator]
    deliver(Received(b"id3", topics.consensus, b"own", None, None))  # type: ignore[operator]
    assert node.driver.fed == [
        MessageReceived(AUTHOR.to_base58(), b"vote"),  # replies go to the author...
        MessageReceived(PEER.to_base58(), b"junk author"),  # ...or else the forwarder
    ]
    assert node.gossip.traffic.bytes_in == len(b"vote" + b"junk author" + b"own")
    node.handle.driver = None  # consensus paused for a catch-up: messages are dropped
    deliver(Received(b"id4", topics.consensus, b"late", AUTHOR.to_bytes(), PEER))  # type: ignore[operator]
    assert len(node.driver.fed) == 2
    # Delivered txs and updates were admitted by their validators: only counted here.
    node.pubsub.subscribed[topics.txs](Received(b"id5", topics.txs, b"tx", None, PEER))  # type: ignore[operator]
    assert _out(node.metrics, topics.txs, "gossip_messages", "in") == 1
    assert len(node.driver.fed) == 2


async def test_direct_consensus_messages_reach_the_other_node(
    tmp_path: Path, hosts: list[Host]
) -> None:
    a = _node(tmp_path / "a", hosts[0])
    b = _node(tmp_path / "b", hosts[1])
    await connect(hosts[0], hosts[1])
    await a.gossip.send_direct(hosts[1].peer_id.to_base58(), b"prevote")
    await wait_for(lambda: b.driver.fed, 10, "the direct message")
    assert b.driver.fed == [MessageReceived(hosts[0].peer_id.to_base58(), b"prevote")]


async def test_a_malformed_update_submitted_over_rpc_is_refused_and_never_gossiped(
    tmp_path: Path, hosts: list[Host]
) -> None:
    """Issue 15 item 13: RPC admitted an update its own gossip validator would refuse and
    published it, so the honest node's peers scored it down for junk it merely relayed.
    Over real GossipSub between two nodes: the junk gets a 422 at A and never leaves it, B
    holds nothing against A, and a valid update still goes through (the path works)."""
    params = GossipParams(heartbeat_interval=0.1)
    subs = [
        GossipSub(h, params=params, msg_id_fn=Topics("daemon-test").message_id) for h in hosts[:2]
    ]
    for sub in subs:
        await sub.start()
    a = _node(tmp_path / "a", hosts[0], pubsub=subs[0])
    b = _node(tmp_path / "b", hosts[1], pubsub=subs[1])
    view = LocalView(
        node_id=hosts[0].peer_id.to_base58(),
        moniker="a",
        ledger=a.app.ledger,
        mempool=a.app.mempool,
        metrics=a.metrics,
        on_tx=a.gossip.publish_tx,
    )
    server = RPCServer(view, "127.0.0.1", 0, max_body_bytes=4 << 20)
    await server.start()
    try:
        await connect(hosts[0], hosts[1])
        topic = a.gossip.topics.updates
        await wait_for(
            lambda: hosts[1].peer_id in subs[0].router.mesh.get(topic, set()),
            10,
            "the updates mesh",
        )
        g = a.app.genesis
        good_tx, good = make_update(
            KEYS[0],
            g,
            round=0,
            base_ledger_hash=ZERO_HASH,
            base_fl_hash=initial_fl_hash(g),
            seed=1,
        )
        bad = nan_update(FLUpdate.decode(good))
        bad_tx = signed_update(KEYS[0], g, bad, round=0, base_ledger_hash=ZERO_HASH, samples=100)
        async with aiohttp.ClientSession() as http:
            for tx, payload, status in ((bad_tx, bad, 422), (good_tx, good, 202)):
                doc = {"tx": tx.encode().hex(), "payload": payload.hex()}
                async with http.post(f"{server.url}/txs", json=doc) as r:
                    got = await r.json()
                    assert r.status == status, got
                if status == 422:
                    assert got["error"]["code"] == "non_finite_payload"
                    assert _out(a.metrics, topic, "gossip_messages") is None  # not published
        await wait_for(lambda: good_tx.hash in b.app.mempool, 10, "the valid update at B")
        assert bad_tx.hash not in b.app.mempool
        assert subs[1].all_counters().get("reject_validation", 0) == 0
        assert subs[1].router.peer_score(hosts[0].peer_id, subs[1].now()) >= 0
    finally:
        await server.close()
        for sub in subs:
            await sub.close()
