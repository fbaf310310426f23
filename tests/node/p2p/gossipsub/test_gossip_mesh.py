"""Whole-network properties on the deterministic in-memory network (every RPC goes through
the wire codec), including hostile peers."""

from __future__ import annotations

import pytest

from node.p2p.gossipsub.messages import RPC, Message, SubOpt
from node.p2p.gossipsub.params import MESHSUB_V10, MESHSUB_V11, GossipParams
from node.p2p.gossipsub.sim import SimNetwork

T = "fl/updates"


def build(n: int, seed: int, degree: int = 4) -> SimNetwork:
    net = SimNetwork(n, seed=seed)
    net.random_graph(degree)
    net.subscribe_all(T)
    net.heartbeat(3)
    return net


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_20_node_random_mesh_delivers_everything_with_bounded_duplicates(seed: int) -> None:
    net = build(20, seed)
    prm = net.nodes[net.ids[0]].router.params
    for node in net.nodes.values():
        assert prm.d_lo <= len(node.router.mesh[T]) <= prm.d_hi
    mids = []
    for i in range(40):
        before = {p: n.copies_received for p, n in net.nodes.items()}
        mids.append(net.publish(net.ids[i % 20], T, b"update %d" % i))
        for p, node in net.nodes.items():
            copies = node.copies_received - before[p]
            # Each mesh neighbour forwards at most once, plus the origin's flood publish.
            assert copies <= len(node.router.mesh[T]) + 1
        if i % 5 == 4:
            net.heartbeat()
    for node in net.nodes.values():
        assert set(node.delivered) == set(mids)
        assert len(node.delivered) == len(mids)  # delivered exactly once


def test_gossip_recovers_messages_the_sparse_mesh_did_not_carry() -> None:
    """With D=1 and no flood publishing the mesh of a 6-node clique leaves nodes out; the
    IHAVE/IWANT gossip of the next heartbeats must deliver every message to everyone."""
    prm = GossipParams(d=1, d_lo=1, d_hi=1, d_score=1, d_out=0, flood_publish=False)
    net = SimNetwork(6, seed=4, params=prm)
    for i, a in enumerate(net.ids):
        for b in net.ids[i + 1 :]:
            net.connect(a, b)
    net.subscribe_all(T)
    net.heartbeat(3)
    mids = [net.publish(net.ids[i % 6], T, b"m%d" % i) for i in range(12)]
    missing = sum(len(set(mids) - set(n.delivered)) for n in net.nodes.values())
    assert missing > 0  # the sparse mesh alone does not reach everyone
    net.heartbeat(3)
    for node in net.nodes.values():
        assert set(node.delivered) == set(mids)


def test_meshsub_v10_and_v11_peers_interoperate() -> None:
    net = SimNetwork(6, seed=5)
    ids = net.ids
    for i in range(6):
        net.connect(ids[i], ids[(i + 1) % 6], MESHSUB_V10 if i % 2 else MESHSUB_V11)
    net.subscribe_all(T)
    net.heartbeat(2)
    mid = net.publish(ids[0], T, b"mixed")
    assert all(mid in n.delivered for n in net.nodes.values())


def test_peer_exchange_on_prune_spreads_peer_ids() -> None:
    net = SimNetwork(16, seed=6, params=GossipParams(d=3, d_lo=2, d_hi=4, d_score=2, d_out=1))
    hub = net.ids[0]
    for other in net.ids[1:]:
        net.connect(other, hub)
    net.subscribe_all(T)
    # Give the hub's peers a high score for the hub, so they accept its PX.
    for p in net.ids[1:]:
        net.nodes[p].router.score.params.app_specific_score = lambda peer: 50.0
    net.heartbeat(2)
    learnt = [len(net.nodes[p].px_learnt) for p in net.ids[1:]]
    assert sum(1 for n in learnt if n > 0) >= 5


def test_flood_of_100k_messages_from_hostile_peer_does_not_stop_honest_traffic() -> None:
    """A hostile peer sends 100,000 small wrongly signed messages within one heartbeat: the
    victim processes the flood cheaply (after the first RPC the attacker is graylisted),
    keeps forwarding honest messages meanwhile, and disconnects the attacker."""
    net = SimNetwork(4, seed=7)
    victim, honest, other, attacker = net.ids
    net.connect(victim, honest)
    net.connect(honest, other)
    net.connect(attacker, victim)
    net.subscribe_all(T)
    net.heartbeat(2)
    honest_mids = []
    for batch in range(100):
        junk = [
            Message(T, b"junk%d" % (batch * 1000 + i), from_=attacker.to_bytes(), seqno=b"\0" * 8)
            for i in range(1000)
        ]
        net.inject(attacker, victim, RPC(publish=junk))
        if batch % 10 == 0:
            honest_mids.append(net.publish(other, T, b"honest %d" % batch))
    router = net.nodes[victim].router
    dropped = router.counters["reject_signature"] + 1000 * router.counters["rpc_graylisted"]
    assert dropped == 100_000
    assert set(honest_mids) <= set(net.nodes[victim].delivered)
    net.heartbeat()
    assert frozenset((attacker, victim)) not in net.links
    assert router.peer_score(attacker, net.now) < router.thresholds.graylist
    mid = net.publish(other, T, b"still works")
    assert mid in net.nodes[victim].delivered


def test_subscription_flood_is_bounded() -> None:
    net = SimNetwork(2, seed=8)
    a, b = net.ids
    net.connect(a, b)
    subs = [SubOpt(True, f"t{i}") for i in range(5000)]
    net.inject(a, b, RPC(subscriptions=subs))
    assert len(net.nodes[b].router.peers[a].topics) == 1024
    assert net.nodes[b].router.counters["subscription_limit"] == 5000 - 1024
