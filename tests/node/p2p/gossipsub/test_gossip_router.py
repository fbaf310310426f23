"""Router behaviour on small deterministic in-memory networks."""

from __future__ import annotations

import random

import pytest

from node.p2p.gossipsub.messages import (
    RPC,
    IHave,
    Message,
    PeerInfo,
    Prune,
    SubOpt,
    Verdict,
    content_message_id,
    default_message_id,
)
from node.p2p.gossipsub.params import (
    MESHSUB_V10,
    MESHSUB_V11,
    MESHSUB_V12,
    GossipParams,
    PeerScoreThresholds,
)
from node.p2p.gossipsub.router import Deliver, Disconnect, GossipSubRouter, PeerExchange, Validate
from node.p2p.gossipsub.signing import IdentitySigner, verify_message
from node.p2p.gossipsub.sim import SimNetwork
from node.p2p.peer_id import IdentityKey, PeerID

T = "topic"


def make_router(seed: int = 0, **kw: object) -> tuple[IdentityKey, GossipSubRouter[PeerID]]:
    key = IdentityKey.from_seed(bytes([seed]) * 32)
    r = GossipSubRouter[PeerID](
        signer=IdentitySigner(key),
        verifier=verify_message,
        peer_id_bytes=PeerID.to_bytes,
        rng=random.Random(seed),
        **kw,  # type: ignore[arg-type]
    )
    return key, r


def peer(i: int) -> PeerID:
    return IdentityKey.from_seed(bytes([100 + i]) * 32).peer_id


def signed(key: IdentityKey, data: bytes, topic: str = T, seq: int = 1) -> Message:
    m = Message(topic=topic, data=data, from_=key.peer_id.to_bytes(), seqno=seq.to_bytes(8, "big"))
    IdentitySigner(key).sign(m)
    return m


def with_subscribed_peers(
    n: int, outbound: bool = True
) -> tuple[GossipSubRouter[PeerID], list[PeerID]]:
    _, r = make_router()
    peers = [peer(i) for i in range(n)]
    for p in peers:
        r.add_peer(p, MESHSUB_V11, outbound, 0.0)
        r.handle_rpc(p, RPC(subscriptions=[SubOpt(True, T)]), 0.0)
    return r, peers


# ---------------------------------------------------------------------- mesh maintenance
def test_join_grafts_d_peers_and_heartbeat_keeps_mesh_within_bounds() -> None:
    r, peers = with_subscribed_peers(20)
    r.subscribe(T, 0.0)
    assert len(r.mesh[T]) == r.params.d
    grafted = {p for p, rpc in r.take_outgoing() if rpc.graft == [T]}
    assert grafted == r.mesh[T]
    # 10 more peers graft us: the mesh grows past D_hi, the heartbeat prunes back to D.
    for p in peers:
        r.handle_rpc(p, RPC(graft=[T]), 1.0)
    assert len(r.mesh[T]) > r.params.d_hi
    r.take_outgoing()
    r.heartbeat(2.0)
    assert len(r.mesh[T]) == r.params.d
    pruned = {p for p, rpc in r.take_outgoing() if rpc.prune}
    assert len(pruned) == 20 - r.params.d
    assert sum(1 for p in r.mesh[T] if r.peers[p].outbound) >= r.params.d_out


def test_heartbeat_tops_up_mesh_below_d_lo() -> None:
    r, _peers = with_subscribed_peers(10)
    r.subscribe(T, 0.0)
    for p in list(r.mesh[T])[:4]:
        r.handle_rpc(p, RPC(prune=[Prune(T, [], 60)]), 1.0)
    assert len(r.mesh[T]) == 2 < r.params.d_lo
    r.heartbeat(2.0)
    assert len(r.mesh[T]) == r.params.d


def test_mesh_keeps_d_out_outbound_peers_when_pruning() -> None:
    _, r = make_router()
    peers = [peer(i) for i in range(16)]
    for i, p in enumerate(peers):
        r.add_peer(p, MESHSUB_V11, i < 2, 0.0)  # only two outbound peers
        r.handle_rpc(p, RPC(subscriptions=[SubOpt(True, T)]), 0.0)
    r.subscribe(T, 0.0)
    for p in peers:
        r.handle_rpc(p, RPC(graft=[T]), 0.5)
    r.heartbeat(1.0)
    assert {peers[0], peers[1]} <= r.mesh[T]


def test_graft_accepted_then_graft_during_backoff_is_penalised_and_pruned() -> None:
    r, peers = with_subscribed_peers(3)
    r.subscribe(T, 0.0)
    p = peers[0]
    r.handle_rpc(p, RPC(prune=[Prune(T, [], 60)]), 1.0)
    assert p not in r.mesh[T]
    assert r.backoff_of(p, T) == pytest.approx(61.0)
    r.take_outgoing()
    r.handle_rpc(p, RPC(graft=[T]), 2.0)
    assert p not in r.mesh[T]
    out = dict(r.take_outgoing())
    assert out[p].prune and out[p].prune[0].topic == T and out[p].prune[0].peers == []
    st = r.score.stats(p)
    assert st is not None and st.behaviour_penalty == 2  # backoff violation + flood cutoff


def test_prune_backoff_prevents_regraft_until_expiry() -> None:
    r, peers = with_subscribed_peers(1)
    r.subscribe(T, 0.0)
    p = peers[0]
    r.handle_rpc(p, RPC(prune=[Prune(T, [], 10)]), 1.0)
    for t in range(2, 11):
        r.heartbeat(float(t))
        assert p not in r.mesh[T]
    for t in range(11, 16):
        r.heartbeat(float(t))
    assert p in r.mesh[T]


def test_graft_for_unknown_topic_is_ignored_and_at_d_hi_only_outbound_accepted() -> None:
    r, peers = with_subscribed_peers(14, outbound=False)
    r.subscribe(T, 0.0)
    r.take_outgoing()
    r.handle_rpc(peers[0], RPC(graft=["other"]), 1.0)
    assert "other" not in r.mesh and r.counters["graft_unknown_topic"] == 1
    for p in peers:
        r.handle_rpc(p, RPC(graft=[T]), 1.0)
    assert len(r.mesh[T]) == r.params.d_hi


def test_unsubscribe_prunes_mesh_with_unsubscribe_backoff() -> None:
    r, _ = with_subscribed_peers(8)
    r.subscribe(T, 0.0)
    r.take_outgoing()
    r.unsubscribe(T, 1.0)
    assert T not in r.mesh
    out = r.take_outgoing()
    prunes = [pr for _, rpc in out for pr in rpc.prune]
    assert len(prunes) == 6 and all(pr.backoff == 10 for pr in prunes)
    assert all(SubOpt(False, T) in rpc.subscriptions for _, rpc in out)


def test_v10_peers_get_prune_without_backoff_or_px() -> None:
    _, r = make_router()
    old, new = peer(1), peer(2)
    r.add_peer(old, MESHSUB_V10, True, 0.0)
    r.add_peer(new, MESHSUB_V11, True, 0.0)
    for p in (old, new):
        r.handle_rpc(p, RPC(subscriptions=[SubOpt(True, T)]), 0.0)
    r.subscribe(T, 0.0)
    r.take_outgoing()
    r.unsubscribe(T, 1.0)
    out = dict(r.take_outgoing())
    assert out[old].prune == [Prune(T, [], None)]
    assert out[new].prune[0].backoff == 10


def test_peer_exchange_only_from_peers_above_accept_px() -> None:
    r, peers = with_subscribed_peers(2)
    r.subscribe(T, 0.0)
    px = [PeerInfo(peer(50).to_bytes()), PeerInfo(peers[1].to_bytes())]
    r.handle_rpc(peers[0], RPC(prune=[Prune(T, px, 60)]), 1.0)
    assert not [e for e in r.take_events() if isinstance(e, PeerExchange)]
    assert r.counters["px_below_threshold"] == 1
    # A peer with a high score (app-specific) is trusted for PX; known peers are filtered.
    r.score.params.app_specific_score = lambda p: 20.0 if p == peers[1] else 0.0
    r.handle_rpc(peers[1], RPC(prune=[Prune(T, px, 60)]), 2.0)
    ev = [e for e in r.take_events() if isinstance(e, PeerExchange)]
    assert len(ev) == 1 and [i.peer_id for i in ev[0].peers] == [peer(50).to_bytes()]


def test_prune_we_send_carries_px_of_other_topic_peers() -> None:
    r, peers = with_subscribed_peers(3)
    r.subscribe(T, 0.0)
    r.take_outgoing()
    r.unsubscribe(T, 1.0)
    out = dict(r.take_outgoing())
    for p in peers:
        ids = {i.peer_id for i in out[p].prune[0].peers}
        assert ids == {q.to_bytes() for q in peers if q != p}


# ---------------------------------------------------------------------- publish / forward
def test_flood_publish_reaches_all_topic_peers_and_fanout_when_not_subscribed() -> None:
    r, peers = with_subscribed_peers(10)
    mid = r.publish(T, b"x", 0.0)
    out = dict(r.take_outgoing())
    assert set(out) == set(peers)
    assert all(rpc.publish[0].data == b"x" for rpc in out.values())
    assert mid == content_message_id(Message(T, b"x"))
    # Not subscribed and flood publishing off: D fanout peers, kept for fanout_ttl.
    _, r2 = make_router(params=GossipParams(flood_publish=False))
    for p in peers:
        r2.add_peer(p, MESHSUB_V11, True, 0.0)
        r2.handle_rpc(p, RPC(subscriptions=[SubOpt(True, T)]), 0.0)
    r2.publish(T, b"y", 0.0)
    assert len(r2.take_outgoing()) == r2.params.d == len(r2.fanout[T])
    r2.heartbeat(30.0)
    assert T in r2.fanout
    r2.heartbeat(61.0)
    assert T not in r2.fanout


def test_own_messages_are_delivered_locally_signed_and_kept_without_peers() -> None:
    _, r = make_router()
    r.subscribe(T, 0.0)
    mid = r.publish(T, b"alone", 0.0)
    ev = r.take_events()
    assert [e.msg_id for e in ev if isinstance(e, Deliver)] == [mid]
    assert r.counters["publish_no_peers"] == 1
    msg = r.mcache.get(mid)
    assert msg is not None and verify_message(msg)


def test_received_message_is_forwarded_to_mesh_except_source_and_author() -> None:
    r, peers = with_subscribed_peers(8)
    r.subscribe(T, 0.0)
    r.take_outgoing()
    author = IdentityKey.from_seed(bytes([100]) * 32)  # == peers[0]
    src = next(iter(r.mesh[T] - {peers[0]}))
    r.handle_rpc(src, RPC(publish=[signed(author, b"m")]), 1.0)
    out = dict(r.take_outgoing())
    assert set(out) == r.mesh[T] - {src, peers[0]}
    assert next(e for e in r.take_events() if isinstance(e, Deliver)).source == src


def test_duplicates_are_not_forwarded_again() -> None:
    r, _peers = with_subscribed_peers(8)
    r.subscribe(T, 0.0)
    r.take_outgoing()
    m = signed(IdentityKey.from_seed(b"\x07" * 32), b"dup")
    mesh = list(r.mesh[T])
    r.handle_rpc(mesh[0], RPC(publish=[m]), 1.0)
    r.take_outgoing()
    r.handle_rpc(mesh[1], RPC(publish=[m]), 1.0)
    assert r.take_outgoing() == []
    assert r.counters["duplicate"] == 1


def test_messages_for_unsubscribed_topics_and_oversize_are_dropped() -> None:
    r, peers = with_subscribed_peers(2, outbound=True)
    r.params.max_message_size = 10
    r.subscribe(T, 0.0)
    key = IdentityKey.from_seed(b"\x08" * 32)
    r.handle_rpc(peers[0], RPC(publish=[signed(key, b"x", topic="other")]), 1.0)
    r.handle_rpc(peers[0], RPC(publish=[signed(key, b"y" * 11)]), 1.0)
    assert not r.take_events()
    assert r.counters["drop_unsubscribed_topic"] == 1 and r.counters["reject_oversize"] == 1


# ---------------------------------------------------------------------- StrictSign / ids
def test_unsigned_and_wrongly_signed_messages_are_rejected_and_penalised() -> None:
    r, peers = with_subscribed_peers(3)
    r.subscribe(T, 0.0)
    key = IdentityKey.from_seed(b"\x09" * 32)
    other = IdentityKey.from_seed(b"\x0a" * 32)
    unsigned = Message(T, b"u")
    forged = signed(key, b"f")
    forged.from_ = other.peer_id.to_bytes()  # signature by key, claims other
    tampered = signed(key, b"t")
    tampered.data = b"T"
    wrong_key = signed(key, b"k")
    wrong_key.key = other.public_key_proto()
    r.handle_rpc(peers[0], RPC(publish=[unsigned, forged, tampered, wrong_key]), 1.0)
    assert r.counters["reject_signature"] == 4
    assert not [e for e in r.take_events() if isinstance(e, Deliver)]
    # A forged copy did not poison the seen cache: the genuine message still gets through.
    r.handle_rpc(peers[1], RPC(publish=[signed(key, b"f")]), 1.0)
    assert [e for e in r.take_events() if isinstance(e, Deliver)]
    st = r.score.stats(peers[0])
    assert st is not None and st.topics[T].invalid_message_deliveries == 4
    assert r.peer_score(peers[0], 1.0) == pytest.approx(-160.0)  # P4: -10 * 4^2
    assert r.peer_score(peers[0], 1.0) < r.thresholds.graylist


def test_signatures_cover_topic_and_seqno() -> None:
    key = IdentityKey.from_seed(b"\x0b" * 32)
    m = signed(key, b"d")
    assert verify_message(m)
    m.topic = "elsewhere"
    assert not verify_message(m)
    m = signed(key, b"d")
    m.seqno = (2).to_bytes(8, "big")
    assert not verify_message(m)


def test_message_id_functions() -> None:
    key = IdentityKey.from_seed(b"\x0c" * 32)
    a, b = signed(key, b"same", seq=1), signed(key, b"same", seq=2)
    assert content_message_id(a) == content_message_id(b)
    assert default_message_id(a) != default_message_id(b)
    assert default_message_id(a) == key.peer_id.to_bytes() + (1).to_bytes(8, "big")
    # With the spec default the two publishes are distinct messages; with ours, one.
    net = SimNetwork(3, msg_id_fn=default_message_id)
    net.connect(net.ids[0], net.ids[1])
    net.connect(net.ids[1], net.ids[2])
    net.subscribe_all(T)
    net.heartbeat()
    net.publish(net.ids[0], T, b"same")
    net.publish(net.ids[0], T, b"same")
    assert len(net.nodes[net.ids[2]].delivered) == 2
    net2 = SimNetwork(3)
    net2.connect(net2.ids[0], net2.ids[1])
    net2.connect(net2.ids[1], net2.ids[2])
    net2.subscribe_all(T)
    net2.heartbeat()
    net2.publish(net2.ids[0], T, b"same")
    net2.publish(net2.ids[0], T, b"same")
    assert len(net2.nodes[net2.ids[2]].delivered) == 1


def test_self_origin_messages_from_peers_are_rejected() -> None:
    key, r = make_router()
    r.add_peer(peer(1), MESHSUB_V11, True, 0.0)
    r.subscribe(T, 0.0)
    r.handle_rpc(peer(1), RPC(publish=[signed(key, b"me?")]), 1.0)
    assert r.counters["reject_self_origin"] == 1


# ---------------------------------------------------------------------- validation
def test_validation_reject_is_never_forwarded_and_counts_against_sender() -> None:
    net = SimNetwork(4)
    a, b, c, d = net.ids
    net.connect(a, b)
    net.connect(b, c)
    net.connect(c, d)
    net.subscribe_all(T)
    net.heartbeat()
    net.set_validator(T, lambda node, m: Verdict.REJECT if m.data == b"bad" else Verdict.ACCEPT)
    # a's own publish is not validated by a (its app produced it); b rejects it.
    net.publish(a, T, b"bad")
    net.publish(a, T, b"good")
    assert len(net.nodes[b].delivered) == 1
    assert len(net.nodes[c].delivered) == 1 and len(net.nodes[d].delivered) == 1
    st = net.nodes[b].router.score.stats(a)
    assert st is not None and st.topics[T].invalid_message_deliveries == 1
    assert net.nodes[b].router.counters["reject_validation"] == 1
    assert net.nodes[c].router.counters.get("reject_validation", 0) == 0


def test_async_validation_pending_then_verdicts() -> None:
    r, peers = with_subscribed_peers(4)
    r.subscribe(T, 0.0)
    r.set_validated(T, True)
    r.take_outgoing()
    key = IdentityKey.from_seed(b"\x0d" * 32)
    m1, m2, m3 = signed(key, b"1", seq=1), signed(key, b"2", seq=2), signed(key, b"3", seq=3)
    src = next(iter(r.mesh[T]))
    r.handle_rpc(src, RPC(publish=[m1, m2, m3]), 1.0)
    reqs = [e for e in r.take_events() if isinstance(e, Validate)]
    assert len(reqs) == 3 and r.take_outgoing() == []
    # A duplicate during validation is not validated twice.
    other = next(p for p in peers if p != src)
    r.handle_rpc(other, RPC(publish=[m1]), 1.0)
    assert r.take_events() == []
    r.validation_result(reqs[0].msg_id, Verdict.ACCEPT, 1.5)
    r.validation_result(reqs[1].msg_id, Verdict.IGNORE, 1.5)
    r.validation_result(reqs[2].msg_id, Verdict.REJECT, 1.5)
    delivered = [e.msg.data for e in r.take_events() if isinstance(e, Deliver)]
    assert delivered == [b"1"]
    sent = [m.data for _, rpc in r.take_outgoing() for m in rpc.publish]
    assert set(sent) == {b"1"}
    st = r.score.stats(src)
    assert st is not None and st.topics[T].invalid_message_deliveries == 1


def test_validation_queue_bound_drops_are_counted_not_marked_seen() -> None:
    r, peers = with_subscribed_peers(2)
    r.params.max_pending_validations = 2
    r.subscribe(T, 0.0)
    r.set_validated(T, True)
    key = IdentityKey.from_seed(b"\x0e" * 32)
    msgs = [signed(key, bytes([i]), seq=i + 1) for i in range(3)]
    r.handle_rpc(peers[0], RPC(publish=msgs), 1.0)
    assert r.counters["drop_validation_queue_full"] == 1
    assert content_message_id(msgs[2]) not in r.seen


# ---------------------------------------------------------------------- gossip
def test_ihave_iwant_exchange_and_retransmission_limit() -> None:
    r, peers = with_subscribed_peers(12)
    r.subscribe(T, 0.0)
    r.take_outgoing()
    mid = r.publish(T, b"gossiped", 0.0)
    r.take_outgoing()
    r.heartbeat(1.0)
    out = dict(r.take_outgoing())
    ihaves = {p: rpc.ihave for p, rpc in out.items() if rpc.ihave}
    # Gossip goes to non-mesh topic peers only (at least D_lazy of them, here all 6).
    assert set(ihaves) == set(peers) - r.mesh[T]
    assert all(ih[0].message_ids == [mid] for ih in ihaves.values())
    asker = next(iter(ihaves))
    for i in range(5):
        r.handle_rpc(asker, RPC(iwant=[mid]), 1.0 + i / 10)
        sent = dict(r.take_outgoing()).get(asker)
        if i < r.params.gossip_retransmission:
            assert sent is not None and sent.publish[0].data == b"gossiped"
        else:
            assert sent is None
    # After history_length heartbeats the message leaves the cache.
    for t in range(2, 8):
        r.heartbeat(float(t))
    assert r.mcache.get(mid) is None


def test_ihave_yields_iwant_for_unseen_only_and_is_flood_limited() -> None:
    r, peers = with_subscribed_peers(2)
    r.subscribe(T, 0.0)
    seen_mid = r.publish(T, b"seen", 0.0)
    r.take_outgoing()
    ids = [bytes([i]) * 32 for i in range(3)]
    r.handle_rpc(peers[0], RPC(ihave=[IHave(T, [*ids, seen_mid]), IHave("x", [b"z" * 32])]), 1.0)
    out = dict(r.take_outgoing())
    assert sorted(out[peers[0]].iwant) == sorted(ids)
    for i in range(r.params.max_ihave_messages + 3):
        r.handle_rpc(peers[1], RPC(ihave=[IHave(T, [bytes([50 + i]) * 32])]), 1.0)
    out = dict(r.take_outgoing())
    assert len(out[peers[1]].iwant) == r.params.max_ihave_messages
    assert r.counters["ihave_flood"] == 3


def test_broken_iwant_promise_is_penalised() -> None:
    r, peers = with_subscribed_peers(1)
    r.subscribe(T, 0.0)
    r.handle_rpc(peers[0], RPC(ihave=[IHave(T, [b"m" * 32])]), 1.0)
    r.heartbeat(2.0)
    st = r.score.stats(peers[0])
    assert st is not None and st.behaviour_penalty == 0
    r.heartbeat(5.0)
    assert st.behaviour_penalty == pytest.approx(1.0)
    assert r.counters["iwant_promise_broken"] == 1


def test_gossip_below_gossip_threshold_is_ignored() -> None:
    r, peers = with_subscribed_peers(1)
    r.subscribe(T, 0.0)
    r.penalize(peers[0], 2, "test")  # P7: -10 * 2^2 = -40 < gossip threshold -10
    r.take_outgoing()  # our SUBSCRIBE and GRAFT
    r.handle_rpc(peers[0], RPC(ihave=[IHave(T, [b"m" * 32])]), 1.0)
    assert r.take_outgoing() == []  # no IWANT for the unseen message it advertised
    assert r.counters["ihave_below_gossip_threshold"] == 1


# ---------------------------------------------------------------------- graylist
def test_graylisted_peer_is_ignored_and_disconnected_at_heartbeat() -> None:
    r, peers = with_subscribed_peers(2)
    r.subscribe(T, 0.0)
    r.penalize(peers[0], 3, "malformed_rpc")  # -90 < graylist -80
    r.handle_rpc(peers[0], RPC(subscriptions=[SubOpt(True, "new")]), 1.0)
    assert r.counters["rpc_graylisted"] == 1 and "new" not in r.topic_peers
    r.heartbeat(1.0)
    ev = [e for e in r.take_events() if isinstance(e, Disconnect)]
    assert [e.peer for e in ev] == [peers[0]]
    # The score survives a reconnect (retained for retain_score seconds).
    r.remove_peer(peers[0], 1.0)
    r.add_peer(peers[0], MESHSUB_V11, False, 2.0)
    assert r.peer_score(peers[0], 2.0) < r.thresholds.graylist


def test_negative_score_peers_are_pruned_from_mesh_without_px() -> None:
    r, _peers = with_subscribed_peers(8)
    r.subscribe(T, 0.0)
    r.take_outgoing()
    bad = next(iter(r.mesh[T]))
    r.penalize(bad, 1, "test")
    r.heartbeat(1.0)
    assert bad not in r.mesh[T]
    out = dict(r.take_outgoing())
    assert out[bad].prune[0].peers == []


def test_thresholds_and_params_are_validated() -> None:
    with pytest.raises(ValueError):
        PeerScoreThresholds(gossip=-100, publish=-50)
    with pytest.raises(ValueError):
        GossipParams(d=3, d_lo=4)
    _, r = make_router()
    with pytest.raises(ValueError):
        r.publish(T, b"x" * (r.params.max_message_size + 1), 0.0)
    with pytest.raises(ValueError):
        r.add_peer(peer(1), "/unknown/1.0.0", True, 0.0)


def test_opportunistic_graft_adds_better_peers_when_mesh_median_is_low() -> None:
    _, r = make_router(params=GossipParams(opportunistic_graft_ticks=1))
    peers = [peer(i) for i in range(10)]
    for p in peers:
        r.add_peer(p, MESHSUB_V11, True, 0.0)
        r.handle_rpc(p, RPC(subscriptions=[SubOpt(True, T)]), 0.0)
    r.subscribe(T, 0.0)
    outside = [p for p in peers if p not in r.mesh[T]]
    star = outside[0]
    r.score.params.app_specific_score = lambda p: 8.0 if p == star else 0.0
    r.heartbeat(1.0)
    assert star in r.mesh[T]
    assert len(r.mesh[T]) == r.params.d + 1  # only peers above the median are grafted


def test_floodsub_peers_receive_every_message_and_are_never_meshed() -> None:
    from node.p2p.gossipsub.params import FLOODSUB

    net = SimNetwork(3, seed=9)
    a, b, c = net.ids
    net.connect(a, b)
    net.connect(b, c, FLOODSUB)
    net.subscribe_all(T)
    net.heartbeat(2)
    assert c not in net.nodes[b].router.mesh[T]
    mid = net.publish(a, T, b"to the flood peer")
    assert mid in net.nodes[c].delivered


def test_px_carries_signed_peer_records_when_known() -> None:
    records = {peer(1): b"signed envelope of peer 1"}
    _, r = make_router(peer_record=records.get)
    peers = [peer(i) for i in range(3)]
    for p in peers:
        r.add_peer(p, MESHSUB_V11, True, 0.0)
        r.handle_rpc(p, RPC(subscriptions=[SubOpt(True, T)]), 0.0)
    r.subscribe(T, 0.0)
    r.take_outgoing()
    r.unsubscribe(T, 1.0)
    out = dict(r.take_outgoing())
    infos = {i.peer_id: i.signed_peer_record for i in out[peers[0]].prune[0].peers}
    assert infos == {peer(1).to_bytes(): b"signed envelope of peer 1", peer(2).to_bytes(): None}


# ---------------------------------------------------------------------- v1.2 IDONTWANT
def _v12_mesh(n: int, **params: object) -> tuple[GossipSubRouter[PeerID], list[PeerID]]:
    """A router meshed with n v1.2 peers on T (and validating T)."""
    _, r = make_router(params=GossipParams(**params))  # type: ignore[arg-type]
    peers = [peer(i) for i in range(n)]
    for p in peers:
        r.add_peer(p, MESHSUB_V12, True, 0.0)
        r.handle_rpc(p, RPC(subscriptions=[SubOpt(True, T)]), 0.0)
    r.subscribe(T, 0.0)
    r.set_validated(T, True)
    r.take_outgoing()
    return r, peers


def test_a_large_message_makes_us_send_idontwant_to_the_other_v12_mesh_peers() -> None:
    r, peers = _v12_mesh(4, d=4, d_lo=3, d_hi=8, d_score=2, d_out=1)
    assert r.mesh[T] == set(peers)
    r.add_peer(peer(9), MESHSUB_V11, True, 0.0)  # an old peer, in the mesh too
    r.handle_rpc(peer(9), RPC(subscriptions=[SubOpt(True, T)]), 0.0)
    r.mesh[T].add(peer(9))
    author = IdentityKey.from_seed(b"\x07" * 32)
    big = signed(author, b"x" * 2000)
    r.handle_rpc(peers[0], RPC(publish=[big]), 1.0)
    mid = content_message_id(big)
    sent = {p: rpc.idontwant for p, rpc in r.take_outgoing() if rpc.idontwant}
    # Sent before validation finishes, to every v1.2 mesh peer but the one it came from.
    assert sent == {p: [mid] for p in peers[1:]}
    small = signed(author, b"tiny", seq=2)
    r.handle_rpc(peers[0], RPC(publish=[small]), 1.0)
    assert not any(rpc.idontwant for _, rpc in r.take_outgoing())


def test_a_message_validated_before_the_flush_goes_out_instead_of_its_idontwant() -> None:
    """Inline validation: the message reaches the other mesh peers in the same RPC as the
    IDONTWANT would, and says more (the peer will not send back what it got from us)."""
    r, peers = _v12_mesh(3, d=3, d_lo=2, d_hi=6, d_score=1, d_out=1)
    r.set_validated(T, False)
    big = signed(IdentityKey.from_seed(b"\x07" * 32), b"x" * 2000)
    r.handle_rpc(peers[0], RPC(publish=[big]), 1.0)
    out = dict(r.take_outgoing())
    assert set(out) == set(peers[1:])
    for p in peers[1:]:
        assert out[p].publish == [big] and out[p].idontwant == []


def test_peers_that_said_idontwant_or_sent_a_copy_are_not_sent_the_message() -> None:
    r, peers = _v12_mesh(4, d=4, d_lo=3, d_hi=8, d_score=2, d_out=1)
    author = IdentityKey.from_seed(b"\x07" * 32)
    msg = signed(author, b"y" * 5000)
    mid = content_message_id(msg)
    # peers[1] announces it has the message before we even receive it ...
    r.handle_rpc(peers[1], RPC(idontwant=[mid]), 1.0)
    r.handle_rpc(peers[0], RPC(publish=[msg]), 1.0)
    # ... and peers[2] sends its own copy while ours is still being validated.
    r.handle_rpc(peers[2], RPC(publish=[msg]), 1.0)
    r.take_outgoing()
    r.validation_result(mid, Verdict.ACCEPT, 1.1)
    forwarded = {p for p, rpc in r.take_outgoing() if rpc.publish}
    assert forwarded == {peers[3]}
    assert r.counters["idontwant_not_sent"] == 2
    # Our own publish honours IDONTWANT too.
    own = b"z" * 5000
    r.handle_rpc(peers[3], RPC(idontwant=[content_message_id(Message(topic=T, data=own))]), 2.0)
    r.publish(T, own, 2.0)
    assert {p for p, rpc in r.take_outgoing() if rpc.publish} == set(peers[:3])


def test_idontwant_is_bounded_per_heartbeat_and_forgotten_after_its_ttl() -> None:
    r, peers = _v12_mesh(3, d=3, d_lo=2, d_hi=6, d_score=1, d_out=1, max_idontwant_messages=5)
    ids = [bytes([i]) * 32 for i in range(8)]
    r.handle_rpc(peers[0], RPC(idontwant=ids), 1.0)
    assert r.counters["idontwant_over_limit"] == 3
    r.handle_rpc(peers[0], RPC(idontwant=[b"\xee" * 32]), 1.0)  # still this heartbeat
    assert r.counters["idontwant_over_limit"] == 4
    for t in range(r.params.idontwant_ttl + 1):
        r.heartbeat(2.0 + t)
    # Forgotten: a message with one of those IDs arriving now is forwarded to everyone.
    r.take_outgoing()
    assert not r._has
    r.handle_rpc(peers[0], RPC(idontwant=[b"\x01" * 32]), 9.0)  # a new heartbeat: room again
    assert r.counters["idontwant_over_limit"] == 4
    r.remove_peer(peers[0], 9.0)
    assert peers[0] not in r._idontwant_taken


def test_idontwant_from_a_v11_peer_is_ignored_and_counted() -> None:
    r, _ = with_subscribed_peers(2)
    r.subscribe(T, 0.0)
    r.handle_rpc(peer(0), RPC(idontwant=[b"\x01" * 32]), 1.0)
    assert r.counters["idontwant_from_old_protocol"] == 1 and not r._has


def test_idontwant_cuts_duplicates_in_a_flood_published_mesh() -> None:
    """Ten nodes, all connected (like a local testnet): flood publishing gives everyone the
    message from its author, so without IDONTWANT every mesh forward is a duplicate."""

    def duplicates(protocol: str) -> int:
        net = SimNetwork(10, seed=3, slow_validation=True)
        for i, a in enumerate(net.ids):
            for b in net.ids[i + 1 :]:
                net.connect(a, b, protocol)
        net.subscribe_all(T)
        for _ in range(3):
            net.heartbeat()
        net.set_validator(T, lambda node, m: Verdict.ACCEPT)
        for k in range(5):
            net.publish(net.ids[k], T, bytes([k]) * 10_000)
        assert all(len(n.delivered) == 5 for n in net.nodes.values())
        return sum(n.router.counters.get("duplicate", 0) for n in net.nodes.values())

    with_v12, with_v11 = duplicates(MESHSUB_V12), duplicates(MESHSUB_V11)
    assert with_v12 < with_v11 / 2, (with_v12, with_v11)


def test_one_peer_cannot_fill_the_validation_queue() -> None:
    """A peer that sends as many messages as the whole pending-validation queue holds gets
    only its share of it: another peer's message is still taken for validation, and the
    flooder's excess is dropped, counted and not marked seen."""
    r, peers = with_subscribed_peers(2)
    r.subscribe(T, 0.0)
    r.set_validated(T, True)
    key = IdentityKey.from_seed(b"\x0f" * 32)
    total = r.params.max_pending_validations
    flood = [signed(key, i.to_bytes(4, "big"), seq=i + 1) for i in range(total)]
    r.handle_rpc(peers[0], RPC(publish=flood), 1.0)
    share = r.params.max_pending_validations_per_peer
    assert len([e for e in r.take_events() if isinstance(e, Validate)]) == share
    assert r.counters["drop_validation_peer_share"] == total - share
    assert content_message_id(flood[-1]) not in r.seen
    honest = signed(IdentityKey.from_seed(b"\x10" * 32), b"honest", seq=1)
    r.handle_rpc(peers[1], RPC(publish=[honest]), 1.0)
    assert [e.msg.data for e in r.take_events() if isinstance(e, Validate)] == [b"honest"]
    # Verdicts free the share again.
    first = content_message_id(flood[0])
    r.validation_result(first, Verdict.IGNORE, 1.5)
    r.handle_rpc(peers[0], RPC(publish=[flood[-1]]), 2.0)
    assert [e.msg.data for e in r.take_events() if isinstance(e, Validate)] == [flood[-1].data]
