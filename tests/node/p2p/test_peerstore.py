"""The peer store: what protocols record about peers stays bounded and is forgotten when
it should be."""

from __future__ import annotations

from collections import Counter

import pytest

from node.p2p import peerstore
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import IdentityKey, PeerID
from node.p2p.peer_record import seal
from node.p2p.peerstore import MAX_ADDRS_PER_PEER, Identified, PeerStore

LOCAL = IdentityKey.from_seed(bytes(32)).peer_id


def addr(i: int) -> Multiaddr:
    return Multiaddr.parse(f"/ip4/10.0.{i // 250}.{i % 250 + 1}/tcp/26656")


@pytest.fixture
def counted() -> Counter[str]:
    return Counter()


@pytest.fixture
def store(counted: Counter[str]) -> PeerStore:
    return PeerStore(LOCAL, lambda reason, peer, detail: counted.update([reason]))


def new_peer() -> PeerID:
    return IdentityKey.generate().peer_id


def test_addresses_are_dialable_newest_first_and_capped(store: PeerStore) -> None:
    p = new_peer()
    wildcard = Multiaddr.parse("/ip4/0.0.0.0/tcp/26656")
    store.add_addrs(p, [addr(1).with_peer_id(p), wildcard, addr(2)])
    assert store.addrs(p) == [addr(2), addr(1)]  # /p2p stripped, 0.0.0.0 skipped
    store.add_addrs(p, [addr(1)])
    assert store.addrs(p) == [addr(1), addr(2)]  # seen again: newest first, not twice
    store.add_addrs(p, [addr(i) for i in range(3, 40)])
    assert len(store.addrs(p)) == MAX_ADDRS_PER_PEER
    assert store.addrs(p)[0] == addr(39)
    store.add_addrs(LOCAL, [addr(1)])
    assert store.addrs(LOCAL) == []  # never ourselves


def test_a_full_store_evicts_the_least_recently_seen_disconnected_peer(
    store: PeerStore, counted: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full store makes room for a new peer by forgetting the disconnected peer seen
    longest ago (addresses and record), so a flood of identities cannot lock new peers
    out; connected peers are never evicted, and only a store of connected peers refuses."""
    monkeypatch.setattr(peerstore, "MAX_PEERSTORE", 3)
    a, b, c = new_peer(), new_peer(), new_peer()
    for p in (a, b, c):
        store.add_addrs(p, [addr(1)])
    key = IdentityKey.generate()
    store.connected(c)
    store.add_addrs(a, [addr(2)])  # seen again: now the most recent
    late = new_peer()
    store.add_addrs(late, [addr(3)])
    assert store.addrs(late) == [addr(3)]
    assert store.addrs(b) == []  # the least recently seen, and not connected
    assert store.addrs(a) == [addr(2), addr(1)] and store.addrs(c) == [addr(1)]
    assert store.consume_record(key.peer_id, seal(key, [addr(4)], seq=1))
    assert store.addrs(a) == [] and store.addrs(c) == [addr(1)]  # c is connected
    assert store.record(key.peer_id) is not None
    for p in (late, key.peer_id):
        store.connected(p)
    refused = new_peer()
    store.add_addrs(refused, [addr(5)])
    assert store.addrs(refused) == [] and counted["peerstore_full"] == 1
    store.disconnected(late)
    store.add_addrs(refused, [addr(5)])
    assert store.addrs(refused) == [addr(5)] and store.addrs(late) == []


def test_records_must_be_the_peers_own_and_newer(store: PeerStore, counted: Counter[str]) -> None:
    key = IdentityKey.generate()
    old, new = seal(key, [addr(1)], seq=1), seal(key, [addr(2)], seq=2)
    assert store.consume_record(key.peer_id, new)
    assert store.consume_record(key.peer_id, old)  # valid, but the newer one stays
    assert store.record(key.peer_id) == new
    assert store.addrs(key.peer_id)[0] == addr(2)
    assert not store.consume_record(new_peer(), new)  # someone else's record
    assert not store.consume_record(key.peer_id, b"junk")
    assert counted["peer_record_invalid"] == 2


def test_identify_results_last_while_connected(store: PeerStore) -> None:
    p = new_peer()
    assert store.identified(p) is None
    store.set_identified(p, ["/a/1", "/b/1"], "x" * 1000)
    assert store.identified(p) == Identified(("/a/1", "/b/1"), "x" * 128)
    store.add_addrs(p, [addr(1)])
    store.disconnected(p)
    assert store.identified(p) is None
    assert store.addrs(p) == [addr(1)]  # addresses outlive the connection: for redials


def test_observed_addresses_are_counted_up_to_a_bound(store: PeerStore) -> None:
    store.add_observed(addr(1))
    store.add_observed(addr(1))
    for i in range(2, 200):
        store.add_observed(addr(i))
    seen = store.observed_addrs()
    assert seen[addr(1)] == 2
    assert len(seen) == peerstore.MAX_OBSERVED_ADDRS
