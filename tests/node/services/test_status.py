"""The status records: peers as the host knows them right now, and a model snapshot
named by the on-chain hash of its parameters."""

from __future__ import annotations

import hashlib

from fl.models import init_params, model_hash
from node.p2p.gossipsub.service import GossipSub
from node.p2p.host import Host
from node.services.status import ModelSnapshot, PeerInfo, PeerStanding, peer_infos, peer_standing
from tests.helpers import wait_for
from tests.node.daemon.chainkit import connect


async def test_peers_are_read_from_the_host_when_asked(hosts: list[Host]) -> None:
    a, b, c = hosts
    assert peer_infos(a) == []
    await connect(a, b)
    await connect(c, a)
    await wait_for(lambda: len(peer_infos(a)) == 2, 10, "both connections")
    by_id = {p.peer_id: p for p in peer_infos(a)}
    assert by_id[b.peer_id.to_base58()].outbound  # a dialled b
    assert not by_id[c.peer_id.to_base58()].outbound  # c dialled a
    assert by_id[b.peer_id.to_base58()].address == str(b.listen_addrs[0])
    assert all(isinstance(p, PeerInfo) for p in by_id.values())


def test_a_snapshot_is_named_by_the_model_hash() -> None:
    params = init_params("cnn", 1)
    snap = ModelSnapshot.from_params(3, "cnn", params)
    assert (snap.round, snap.architecture, snap.model_hash) == (3, "cnn", model_hash(params))
    assert snap.safetensors_sha256 == hashlib.sha256(snap.safetensors).digest()


async def test_a_peers_standing_shows_its_connections_ban_and_gossip_score(
    hosts: list[Host],
) -> None:
    a, b, _ = hosts
    gossip, other = GossipSub(a), GossipSub(b)
    await gossip.start()
    await other.start()
    try:
        await connect(a, b)
        await wait_for(lambda: b.peer_id in gossip.router.peers, 10, "b's pubsub stream")
        s = peer_standing(a, gossip, b.peer_id.to_base58())
        assert s == PeerStanding(b.peer_id.to_base58(), True, 1, False, 0.0)
        gossip.router.penalize(b.peer_id, 10.0, "test")
        a.disconnect(b.peer_id, "test", ban=60.0)
        await wait_for(lambda: not a.is_connected(b.peer_id), 10, "b cut off")
        s = peer_standing(a, gossip, b.peer_id.to_base58())
        assert s is not None
        assert (s.connected, s.connections, s.banned) == (False, 0, True)
        assert s.gossip_score < 0  # retained after the disconnect
        assert peer_standing(a, gossip, "not-a-peer") is None
    finally:
        await gossip.close()
        await other.close()
