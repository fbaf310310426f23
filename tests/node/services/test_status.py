"""The status records: peers as the host knows them right now, and a model snapshot
named by the on-chain hash of its parameters."""

from __future__ import annotations

import hashlib

from fl.models import init_params, model_hash
from node.p2p.host import Host
from node.services.status import ModelSnapshot, PeerInfo, peer_infos
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
