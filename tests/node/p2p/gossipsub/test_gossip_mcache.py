"""Message cache windows and the seen cache TTL, as state-machine properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node.p2p.gossipsub.mcache import MessageCache, SeenCache
from node.p2p.gossipsub.messages import Message


@given(st.lists(st.sampled_from(["put", "shift"]), max_size=40), st.integers(1, 5))
def test_message_cache_keeps_history_and_gossips_recent_windows(
    ops: list[str], gossip: int
) -> None:
    history = 5
    mc = MessageCache[str](history, gossip)
    age: dict[bytes, int] = {}  # message id -> shifts since it was put
    for i, op in enumerate(ops):
        if op == "put":
            mid = i.to_bytes(2, "big")
            mc.put(mid, Message("t" if i % 2 else "u", b"%d" % i))
            age[mid] = 0
        else:
            mc.shift()
            age = {m: a + 1 for m, a in age.items()}
        for mid, a in age.items():
            assert (mc.get(mid) is not None) == (a < history)
        t_ids = set(mc.gossip_ids("t"))
        for mid, a in age.items():
            is_t = int.from_bytes(mid, "big") % 2 == 1
            assert (mid in t_ids) == (is_t and a < gossip)
    assert len(mc) == sum(1 for a in age.values() if a < history)


def test_get_for_peer_counts_requests_per_peer() -> None:
    mc = MessageCache[str](3, 2)
    mc.put(b"m", Message("t", b"x"))
    assert mc.get_for_peer(b"m", "a") == (Message("t", b"x"), 1)
    assert mc.get_for_peer(b"m", "a") is not None
    got = mc.get_for_peer(b"m", "a")
    assert got is not None and got[1] == 3
    got = mc.get_for_peer(b"m", "b")
    assert got is not None and got[1] == 1
    assert mc.get_for_peer(b"missing", "a") is None


@given(st.lists(st.tuples(st.integers(0, 20), st.floats(0, 3)), max_size=50))
def test_seen_cache_expires_exactly_after_ttl(ops: list[tuple[int, float]]) -> None:
    ttl = 5.0
    seen = SeenCache(ttl)
    now = 0.0
    first: dict[int, float] = {}
    for key, dt in ops:
        now += dt
        seen.expire(now)
        first = {k: t for k, t in first.items() if t + ttl > now}
        mid = bytes([key])
        added = seen.add(mid, now)
        assert added == (key not in first)
        if added:
            first[key] = now
        assert len(seen) == len(first)
