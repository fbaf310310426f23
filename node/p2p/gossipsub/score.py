"""GossipSub v1.1 peer scoring (P1-P7 with decay), following the spec's formulas.

score(p) = min(cap, sum_t w_t * (P1 w1 + P2 w2 + P3 w3 + P3b w3b + P4 w4)) + P5 w5 + P6 w6 + P7 w7

The router reports events (graft, prune, first/duplicate delivery, invalid message,
penalties); ``refresh(now)`` decays the counters once per decay interval. Stats of a
disconnected peer are retained for ``retain_score`` seconds so that a peer cannot reset a
bad score by reconnecting.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from node.p2p.gossipsub.params import PeerScoreParams

P = TypeVar("P", bound=Hashable)


@dataclass(slots=True)
class TopicStats:
    in_mesh: bool = False
    graft_time: float = 0.0
    mesh_time: float = 0.0
    first_message_deliveries: float = 0.0
    mesh_message_deliveries: float = 0.0
    mesh_message_deliveries_active: bool = False
    mesh_failure_penalty: float = 0.0
    invalid_message_deliveries: float = 0.0


@dataclass(slots=True)
class PeerStats:
    connected: bool = True
    expire: float = 0.0
    topics: dict[str, TopicStats] = field(default_factory=dict)
    ips: tuple[str, ...] = ()
    behaviour_penalty: float = 0.0


class DeliveryStatus(enum.Enum):
    UNKNOWN = 0  # being validated
    VALID = 1
    INVALID = 2
    IGNORED = 3


@dataclass(slots=True)
class DeliveryRecord(Generic[P]):
    status: DeliveryStatus = DeliveryStatus.UNKNOWN
    first_seen: float = 0.0
    validated: float = 0.0
    peers: set[P] = field(default_factory=set)


class PeerScore(Generic[P]):
    def __init__(self, params: PeerScoreParams, seen_ttl: float) -> None:
        self.params = params
        self._stats: dict[P, PeerStats] = {}
        self._peer_ips: dict[str, set[P]] = {}
        self._deliveries: dict[bytes, DeliveryRecord[P]] = {}
        self._delivery_expiry: list[tuple[float, bytes]] = []
        self._delivery_ttl = seen_ttl
        self._last_decay: float | None = None

    # ---------------------------------------------------------------- score
    def score(self, peer: P, now: float) -> float:
        ps = self._stats.get(peer)
        if ps is None:
            return 0.0
        prm = self.params
        s = 0.0
        for topic, ts in ps.topics.items():
            tp = prm.topic_params(topic)
            if tp is None:
                continue
            t = 0.0
            if ts.in_mesh:
                p1 = min(ts.mesh_time / tp.time_in_mesh_quantum, tp.time_in_mesh_cap)
                t += p1 * tp.time_in_mesh_weight
            t += ts.first_message_deliveries * tp.first_message_deliveries_weight
            if (
                ts.mesh_message_deliveries_active
                and ts.mesh_message_deliveries < tp.mesh_message_deliveries_threshold
            ):
                deficit = tp.mesh_message_deliveries_threshold - ts.mesh_message_deliveries
                t += deficit * deficit * tp.mesh_message_deliveries_weight
            t += ts.mesh_failure_penalty * tp.mesh_failure_penalty_weight
            t += ts.invalid_message_deliveries**2 * tp.invalid_message_deliveries_weight
            s += t * tp.topic_weight
        if prm.topic_score_cap > 0 and s > prm.topic_score_cap:
            s = prm.topic_score_cap
        s += prm.app_specific_score(peer) * prm.app_specific_weight
        for ip in ps.ips:
            if ip in prm.ip_colocation_factor_whitelist:
                continue
            n = len(self._peer_ips.get(ip, ()))
            if n > prm.ip_colocation_factor_threshold:
                surplus = n - prm.ip_colocation_factor_threshold
                s += surplus * surplus * prm.ip_colocation_factor_weight
        if ps.behaviour_penalty > prm.behaviour_penalty_threshold:
            excess = ps.behaviour_penalty - prm.behaviour_penalty_threshold
            s += excess * excess * prm.behaviour_penalty_weight
        return s

    def stats(self, peer: P) -> PeerStats | None:
        return self._stats.get(peer)

    # ---------------------------------------------------------------- peers
    def add_peer(self, peer: P, ips: tuple[str, ...], now: float) -> None:
        ps = self._stats.get(peer)
        if ps is None:
            ps = self._stats[peer] = PeerStats()
        ps.connected = True
        self._set_ips(peer, ps, ips)

    def remove_peer(self, peer: P, now: float) -> None:
        ps = self._stats.get(peer)
        if ps is None:
            return
        if self.score(peer, now) > 0:
            # A good peer's record is not worth keeping; a bad one's is.
            self._set_ips(peer, ps, ())
            del self._stats[peer]
            return
        for topic, ts in ps.topics.items():
            ts.first_message_deliveries = 0.0
            self._apply_mesh_failure(topic, ts)
            ts.in_mesh = False
            ts.mesh_message_deliveries_active = False
        ps.connected = False
        ps.expire = now + self.params.retain_score

    def _set_ips(self, peer: P, ps: PeerStats, ips: tuple[str, ...]) -> None:
        for ip in ps.ips:
            s = self._peer_ips.get(ip)
            if s is not None:
                s.discard(peer)
                if not s:
                    del self._peer_ips[ip]
        ps.ips = ips
        for ip in ips:
            self._peer_ips.setdefault(ip, set()).add(peer)

    def _topic(self, peer: P, topic: str) -> TopicStats | None:
        ps = self._stats.get(peer)
        if ps is None or self.params.topic_params(topic) is None:
            return None
        ts = ps.topics.get(topic)
        if ts is None:
            ts = ps.topics[topic] = TopicStats()
        return ts

    def graft(self, peer: P, topic: str, now: float) -> None:
        ts = self._topic(peer, topic)
        if ts is None:
            return
        ts.in_mesh = True
        ts.graft_time = now
        ts.mesh_time = 0.0
        ts.mesh_message_deliveries_active = False

    def prune(self, peer: P, topic: str) -> None:
        ts = self._topic(peer, topic)
        if ts is None:
            return
        self._apply_mesh_failure(topic, ts)
        ts.in_mesh = False
        ts.mesh_message_deliveries_active = False

    def _apply_mesh_failure(self, topic: str, ts: TopicStats) -> None:
        tp = self.params.topic_params(topic)
        if tp is None or not ts.in_mesh:
            return
        if (
            ts.mesh_message_deliveries_active
            and ts.mesh_message_deliveries < tp.mesh_message_deliveries_threshold
        ):
            deficit = tp.mesh_message_deliveries_threshold - ts.mesh_message_deliveries
            ts.mesh_failure_penalty += deficit * deficit

    def add_penalty(self, peer: P, count: float) -> None:
        ps = self._stats.get(peer)
        if ps is not None:
            ps.behaviour_penalty += count

    # ---------------------------------------------------------------- deliveries
    def _record(self, msg_id: bytes, now: float) -> DeliveryRecord[P]:
        rec = self._deliveries.get(msg_id)
        if rec is None:
            rec = self._deliveries[msg_id] = DeliveryRecord(first_seen=now)
            self._delivery_expiry.append((now + self._delivery_ttl, msg_id))
        return rec

    def validate_message(self, msg_id: bytes, now: float) -> None:
        """A new message entered validation: open its delivery record."""
        self._record(msg_id, now)

    def deliver_message(self, peer: P | None, msg_id: bytes, topic: str, now: float) -> None:
        """Validation accepted the message first received from ``peer`` (None: our own)."""
        rec = self._record(msg_id, now)
        if rec.status is not DeliveryStatus.UNKNOWN:
            return
        rec.status = DeliveryStatus.VALID
        rec.validated = now
        if peer is not None:
            self._mark_first_delivery(peer, topic)
        for p in rec.peers:
            if p != peer:
                self._mark_duplicate_delivery(p, topic, None, now)

    def reject_message(
        self, peer: P, msg_id: bytes | None, topic: str, now: float, *, ignore: bool = False
    ) -> None:
        """The message from ``peer`` is invalid (or ignored). Without an ID (e.g. a bad
        signature, where the ID cannot be trusted) only the sender is penalised."""
        if msg_id is None:
            if not ignore:
                self._mark_invalid(peer, topic)
            return
        rec = self._record(msg_id, now)
        if rec.status is not DeliveryStatus.UNKNOWN:
            return
        if ignore:
            rec.status = DeliveryStatus.IGNORED
            rec.peers.clear()
            return
        rec.status = DeliveryStatus.INVALID
        self._mark_invalid(peer, topic)
        for p in rec.peers:
            if p != peer:
                self._mark_invalid(p, topic)
        rec.peers.clear()

    def duplicate_message(self, peer: P, msg_id: bytes, topic: str, now: float) -> None:
        rec = self._deliveries.get(msg_id)
        if rec is None:
            return
        if peer in rec.peers:
            return
        if rec.status is DeliveryStatus.UNKNOWN:
            rec.peers.add(peer)
        elif rec.status is DeliveryStatus.VALID:
            rec.peers.add(peer)
            self._mark_duplicate_delivery(peer, topic, rec.validated, now)
        elif rec.status is DeliveryStatus.INVALID:
            self._mark_invalid(peer, topic)

    def _mark_first_delivery(self, peer: P, topic: str) -> None:
        ts = self._topic(peer, topic)
        if ts is None:
            return
        tp = self.params.topic_params(topic)
        assert tp is not None
        ts.first_message_deliveries = min(
            ts.first_message_deliveries + 1, tp.first_message_deliveries_cap
        )
        if ts.in_mesh:
            ts.mesh_message_deliveries = min(
                ts.mesh_message_deliveries + 1, tp.mesh_message_deliveries_cap
            )

    def _mark_duplicate_delivery(
        self, peer: P, topic: str, validated: float | None, now: float
    ) -> None:
        ts = self._topic(peer, topic)
        if ts is None or not ts.in_mesh:
            return
        tp = self.params.topic_params(topic)
        assert tp is not None
        if validated is not None and now - validated > tp.mesh_message_deliveries_window:
            return
        ts.mesh_message_deliveries = min(
            ts.mesh_message_deliveries + 1, tp.mesh_message_deliveries_cap
        )

    def _mark_invalid(self, peer: P, topic: str) -> None:
        ts = self._topic(peer, topic)
        if ts is not None:
            ts.invalid_message_deliveries += 1

    # ---------------------------------------------------------------- decay
    def refresh(self, now: float) -> None:
        """Decay counters once per elapsed decay interval and update mesh times."""
        prm = self.params
        steps = 0
        if self._last_decay is None:
            self._last_decay = now
        elif now - self._last_decay >= prm.decay_interval:
            steps = int((now - self._last_decay) // prm.decay_interval)
            self._last_decay += steps * prm.decay_interval
        dz = prm.decay_to_zero

        def decayed(v: float, rate: float) -> float:
            v *= rate**steps
            return 0.0 if v < dz else v

        for peer in list(self._stats):
            ps = self._stats[peer]
            if not ps.connected:
                if now > ps.expire:
                    self._set_ips(peer, ps, ())
                    del self._stats[peer]
                continue
            for topic, ts in ps.topics.items():
                tp = prm.topic_params(topic)
                if tp is None:
                    continue
                if steps:
                    ts.first_message_deliveries = decayed(
                        ts.first_message_deliveries, tp.first_message_deliveries_decay
                    )
                    ts.mesh_message_deliveries = decayed(
                        ts.mesh_message_deliveries, tp.mesh_message_deliveries_decay
                    )
                    ts.mesh_failure_penalty = decayed(
                        ts.mesh_failure_penalty, tp.mesh_failure_penalty_decay
                    )
                    ts.invalid_message_deliveries = decayed(
                        ts.invalid_message_deliveries, tp.invalid_message_deliveries_decay
                    )
                if ts.in_mesh:
                    ts.mesh_time = now - ts.graft_time
                    if ts.mesh_time > tp.mesh_message_deliveries_activation:
                        ts.mesh_message_deliveries_active = True
            if steps:
                ps.behaviour_penalty = decayed(ps.behaviour_penalty, prm.behaviour_penalty_decay)
        # Forget delivery records older than the seen TTL.
        exp = self._delivery_expiry
        i = 0
        while i < len(exp) and exp[i][0] <= now:
            self._deliveries.pop(exp[i][1], None)
            i += 1
        if i:
            del exp[:i]
