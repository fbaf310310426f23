"""Peer-score arithmetic (P1-P7), decay and retention, checked against hand computations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.p2p.gossipsub.params import PeerScoreParams, TopicScoreParams
from node.p2p.gossipsub.score import PeerScore

T = "t"


def scorer(**topic: float) -> PeerScore[str]:
    tp = TopicScoreParams(
        topic_weight=0.5,
        time_in_mesh_weight=0.1,
        time_in_mesh_quantum=2.0,
        time_in_mesh_cap=10.0,
        first_message_deliveries_weight=1.0,
        first_message_deliveries_decay=0.5,
        first_message_deliveries_cap=5.0,
        mesh_message_deliveries_weight=-2.0,
        mesh_message_deliveries_decay=0.5,
        mesh_message_deliveries_cap=10.0,
        mesh_message_deliveries_threshold=4.0,
        mesh_message_deliveries_window=0.1,
        mesh_message_deliveries_activation=3.0,
        mesh_failure_penalty_weight=-1.0,
        mesh_failure_penalty_decay=0.5,
        invalid_message_deliveries_weight=-3.0,
        invalid_message_deliveries_decay=0.5,
    )
    for k, v in topic.items():
        setattr(tp, k, v)
    prm = PeerScoreParams(
        topics={T: tp},
        default_topic=None,
        topic_score_cap=0.0,
        ip_colocation_factor_threshold=2,
        ip_colocation_factor_weight=-4.0,
        ip_colocation_factor_whitelist=frozenset(),
        behaviour_penalty_weight=-1.0,
        behaviour_penalty_threshold=1.0,
        behaviour_penalty_decay=0.5,
        retain_score=100.0,
    )
    s = PeerScore[str](prm, seen_ttl=120.0)
    s.refresh(0.0)
    return s


def test_p1_time_in_mesh_is_quantised_and_capped() -> None:
    s = scorer()
    s.add_peer("a", (), 0.0)
    s.graft("a", T, 0.0)
    s.refresh(8.0)
    # mesh deliveries are active (8 s > 3 s activation) with deficit 4: P3 = 16 * -2
    p1 = (8.0 / 2.0) * 0.1
    assert s.score("a", 8.0) == pytest.approx(0.5 * (p1 - 32.0))
    s.refresh(100.0)
    assert s.stats("a").topics[T].mesh_time == 100.0  # type: ignore[union-attr]
    assert s.score("a", 100.0) == pytest.approx(0.5 * (10.0 * 0.1 - 32.0))


def test_p2_first_deliveries_capped_and_decayed() -> None:
    s = scorer()
    s.add_peer("a", (), 0.0)
    for i in range(8):
        mid = bytes([i])
        s.validate_message(mid, 0.0)
        s.deliver_message("a", mid, T, 0.0)
    assert s.stats("a").topics[T].first_message_deliveries == 5.0  # type: ignore[union-attr]
    assert s.score("a", 0.0) == pytest.approx(0.5 * 5.0)
    s.refresh(2.0)  # two decay intervals: 5 * 0.25
    assert s.score("a", 2.0) == pytest.approx(0.5 * 1.25)
    s.refresh(10.0)  # below decay_to_zero -> exactly 0
    assert s.stats("a").topics[T].first_message_deliveries == 0.0  # type: ignore[union-attr]


def test_p3_deficit_p3b_failure_penalty_on_prune() -> None:
    s = scorer(time_in_mesh_weight=0.0)
    s.add_peer("a", (), 0.0)
    s.graft("a", T, 0.0)
    mid = b"m"
    s.validate_message(mid, 0.0)
    s.deliver_message("b", mid, T, 0.0)  # someone else was first
    s.duplicate_message("a", mid, T, 0.05)  # within the window: counts for a
    s.duplicate_message("a", b"unknown", T, 0.05)
    assert s.stats("a").topics[T].mesh_message_deliveries == 1.0  # type: ignore[union-attr]
    assert s.score("a", 1.0) == 0.0  # not active before the activation time
    s.refresh(4.0)  # active; 1 * 0.5^4 = 0.0625 deliveries left -> deficit 3.9375
    deficit = 4.0 - 0.0625
    assert s.score("a", 4.0) == pytest.approx(0.5 * -2.0 * deficit**2)
    s.prune("a", T)
    # P3 no longer applies outside the mesh; P3b keeps the deficit squared.
    assert s.score("a", 4.0) == pytest.approx(0.5 * -1.0 * deficit**2)
    s.refresh(5.0)
    assert s.score("a", 5.0) == pytest.approx(0.5 * -0.5 * deficit**2)


def test_duplicates_outside_window_do_not_count() -> None:
    s = scorer()
    s.add_peer("a", (), 0.0)
    s.graft("a", T, 0.0)
    s.validate_message(b"m", 0.0)
    s.deliver_message("b", b"m", T, 0.0)
    s.duplicate_message("a", b"m", T, 0.5)
    assert s.stats("a").topics[T].mesh_message_deliveries == 0.0  # type: ignore[union-attr]


def test_p4_invalid_squared_for_sender_and_duplicate_senders() -> None:
    s = scorer()
    for p in "abc":
        s.add_peer(p, (), 0.0)
    s.validate_message(b"bad", 0.0)
    s.duplicate_message("b", b"bad", T, 0.0)  # arrived while validating
    s.reject_message("a", b"bad", T, 0.0)
    s.duplicate_message("c", b"bad", T, 0.1)  # after the verdict
    for p in "abc":
        assert s.score(p, 0.1) == pytest.approx(0.5 * -3.0)
    s.reject_message("a", None, T, 0.1)  # e.g. a bad signature
    assert s.score("a", 0.1) == pytest.approx(0.5 * -3.0 * 4)
    # Ignored messages cost nothing.
    s.validate_message(b"meh", 0.0)
    s.reject_message("b", b"meh", T, 0.2, ignore=True)
    assert s.score("b", 0.2) == pytest.approx(0.5 * -3.0)


def test_p5_p6_p7_and_topic_cap() -> None:
    s = scorer()
    s.params.app_specific_score = lambda p: 3.0 if p == "a" else 0.0
    s.params.app_specific_weight = 2.0
    for p in "abcd":
        s.add_peer(p, ("10.0.0.1",), 0.0)
    # four peers on one IP, threshold 2: surplus 2 -> 4 * -4
    assert s.score("a", 0.0) == pytest.approx(6.0 - 16.0)
    assert s.score("b", 0.0) == pytest.approx(-16.0)
    s.add_penalty("b", 3.0)  # excess over threshold 1 is 2 -> -4
    assert s.score("b", 0.0) == pytest.approx(-16.0 - 4.0)
    s.refresh(1.0)  # penalty decays to 1.5: excess 0.5 -> -0.25
    assert s.score("b", 1.0) == pytest.approx(-16.0 - 0.25)
    s.params.topic_score_cap = 1.0
    s.validate_message(b"x", 1.0)
    s.deliver_message("c", b"x", T, 1.0)
    s.stats("c").topics[T].first_message_deliveries = 5.0  # type: ignore[union-attr]
    assert s.score("c", 1.0) == pytest.approx(1.0 - 16.0)


def test_negative_score_is_retained_after_disconnect_then_expires() -> None:
    s = scorer()
    s.add_peer("a", (), 0.0)
    s.add_penalty("a", 3.0)
    s.remove_peer("a", 0.0)
    s.refresh(50.0)
    s.add_peer("a", (), 50.0)
    assert s.score("a", 50.0) < 0
    s.remove_peer("a", 50.0)
    s.refresh(151.0)
    assert s.stats("a") is None
    # A positive score is forgotten at once.
    s.add_peer("g", (), 0.0)
    s.params.app_specific_score = lambda p: 1.0
    s.remove_peer("g", 151.0)
    assert s.stats("g") is None


@given(st.lists(st.tuples(st.sampled_from("gpdri"), st.floats(0.0, 5.0)), max_size=60))
def test_counters_never_negative_and_decay_monotone(ops: list[tuple[str, float]]) -> None:
    s = scorer()
    s.add_peer("a", (), 0.0)
    now = 0.0
    for i, (op, dt) in enumerate(ops):
        now += dt
        mid = bytes([i])
        if op == "g":
            s.graft("a", T, now)
        elif op == "p":
            s.prune("a", T)
        elif op == "d":
            s.validate_message(mid, now)
            s.deliver_message("a", mid, T, now)
        elif op == "r":
            s.reject_message("a", None, T, now)
        else:
            before = s.stats("a").topics.get(T)  # type: ignore[union-attr]
            snap = None if before is None else (before.invalid_message_deliveries,)
            s.refresh(now)
            if snap is not None and before is not None:
                assert before.invalid_message_deliveries <= snap[0]
        ts = s.stats("a").topics.get(T)  # type: ignore[union-attr]
        if ts is not None:
            assert ts.first_message_deliveries >= 0 and ts.invalid_message_deliveries >= 0
            assert ts.mesh_failure_penalty >= 0
            assert ts.first_message_deliveries <= 5.0
