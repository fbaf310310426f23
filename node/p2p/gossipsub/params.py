"""GossipSub v1.1 parameters, with the defaults of the libp2p spec and go-libp2p-pubsub.

Durations are seconds (floats) because the sans-I/O router is driven by a ``now`` that the
caller passes in; nothing in the core reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MESHSUB_V12 = "/meshsub/1.2.0"
MESHSUB_V11 = "/meshsub/1.1.0"
MESHSUB_V10 = "/meshsub/1.0.0"
FLOODSUB = "/floodsub/1.0.0"
PROTOCOLS = (MESHSUB_V12, MESHSUB_V11, MESHSUB_V10, FLOODSUB)
MESH_PROTOCOLS = (MESHSUB_V12, MESHSUB_V11, MESHSUB_V10)

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024


@dataclass(slots=True)
class GossipParams:
    """Overlay parameters (names follow the spec: D, D_lo, D_hi, ...)."""

    d: int = 6
    d_lo: int = 4
    d_hi: int = 12
    d_lazy: int = 6
    d_score: int = 4
    d_out: int = 2
    heartbeat_interval: float = 1.0
    history_length: int = 5
    history_gossip: int = 3
    fanout_ttl: float = 60.0
    seen_ttl: float = 120.0
    gossip_factor: float = 0.25
    prune_peers: int = 16
    prune_backoff: float = 60.0
    unsubscribe_backoff: float = 10.0
    graft_flood_threshold: float = 10.0
    opportunistic_graft_ticks: int = 60
    opportunistic_graft_peers: int = 2
    max_ihave_length: int = 5000
    max_ihave_messages: int = 10
    iwant_followup_time: float = 3.0
    gossip_retransmission: int = 3
    flood_publish: bool = True
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_pending_validations: int = 4096
    # Of those, what one source peer's messages may hold: a flooder fills its own share,
    # not the queue the other peers' messages wait in.
    max_pending_validations_per_peer: int = 512
    max_subscriptions_per_peer: int = 1024
    sign_messages: bool = True
    strict_verification: bool = True
    # Disconnect a peer whose score fell below the graylist threshold at a heartbeat. Its score
    # is retained after the disconnect (PeerScoreParams.retain_score), so reconnecting is no
    # way to wash a bad record.
    disconnect_graylisted: bool = True
    # v1.2 IDONTWANT: on first receipt of a message at least this large, tell the other
    # mesh peers not to send it; honour at most max_idontwant_messages IDs per peer per
    # heartbeat, each for idontwant_ttl heartbeats (go-libp2p-pubsub's defaults).
    idontwant_message_threshold: int = 1024
    max_idontwant_messages: int = 1000
    idontwant_ttl: int = 3

    def __post_init__(self) -> None:
        if not (0 <= self.d_out < self.d_lo <= self.d <= self.d_hi):
            raise ValueError("need 0 <= d_out < d_lo <= d <= d_hi")
        if self.d_out > self.d // 2:
            raise ValueError("d_out must be at most d / 2")
        if self.d_score > self.d:
            raise ValueError("d_score must be at most d")
        if self.history_gossip > self.history_length:
            raise ValueError("history_gossip must be at most history_length")


@dataclass(slots=True)
class TopicScoreParams:
    """Per-topic score parameters P1-P4 (spec names, snake_case)."""

    topic_weight: float = 1.0
    # P1: time in mesh
    time_in_mesh_weight: float = 0.01
    time_in_mesh_quantum: float = 1.0
    time_in_mesh_cap: float = 3600.0
    # P2: first message deliveries
    first_message_deliveries_weight: float = 1.0
    first_message_deliveries_decay: float = 0.5
    first_message_deliveries_cap: float = 100.0
    # P3: mesh message delivery rate (0 weight disables; it needs a known message rate)
    mesh_message_deliveries_weight: float = 0.0
    mesh_message_deliveries_decay: float = 0.5
    mesh_message_deliveries_cap: float = 100.0
    mesh_message_deliveries_threshold: float = 1.0
    mesh_message_deliveries_window: float = 0.01
    mesh_message_deliveries_activation: float = 5.0
    # P3b: mesh failure penalty
    mesh_failure_penalty_weight: float = 0.0
    mesh_failure_penalty_decay: float = 0.5
    # P4: invalid messages
    invalid_message_deliveries_weight: float = -10.0
    invalid_message_deliveries_decay: float = 0.5

    def __post_init__(self) -> None:
        if self.topic_weight < 0:
            raise ValueError("topic_weight must be >= 0")
        if self.time_in_mesh_weight < 0 or self.time_in_mesh_quantum <= 0:
            raise ValueError("P1 needs weight >= 0 and quantum > 0")
        if self.first_message_deliveries_weight < 0:
            raise ValueError("P2 weight must be >= 0")
        if self.mesh_message_deliveries_weight > 0 or self.mesh_failure_penalty_weight > 0:
            raise ValueError("P3/P3b weights must be <= 0")
        if self.invalid_message_deliveries_weight > 0:
            raise ValueError("P4 weight must be <= 0")
        for name in (
            "first_message_deliveries_decay",
            "mesh_message_deliveries_decay",
            "mesh_failure_penalty_decay",
            "invalid_message_deliveries_decay",
        ):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise ValueError(f"{name} must be in (0, 1)")


def _no_app_score(_peer: Any) -> float:
    return 0.0


@dataclass(slots=True)
class PeerScoreParams:
    """Peer-level score parameters: topic map, cap, P5-P7, decay."""

    topics: dict[str, TopicScoreParams] = field(default_factory=dict)
    # Used for any topic missing from ``topics`` (None: unknown topics do not score).
    default_topic: TopicScoreParams | None = field(default_factory=TopicScoreParams)
    topic_score_cap: float = 100.0
    app_specific_score: Callable[[Any], float] = _no_app_score
    app_specific_weight: float = 1.0
    ip_colocation_factor_weight: float = -10.0
    ip_colocation_factor_threshold: float = 10.0
    ip_colocation_factor_whitelist: frozenset[str] = frozenset({"127.0.0.1", "::1"})
    behaviour_penalty_weight: float = -10.0
    behaviour_penalty_threshold: float = 0.0
    behaviour_penalty_decay: float = 0.9
    decay_interval: float = 1.0
    decay_to_zero: float = 0.01
    retain_score: float = 600.0

    def topic_params(self, topic: str) -> TopicScoreParams | None:
        return self.topics.get(topic, self.default_topic)

    def __post_init__(self) -> None:
        if self.ip_colocation_factor_weight > 0 or self.behaviour_penalty_weight > 0:
            raise ValueError("P6/P7 weights must be <= 0")
        if self.ip_colocation_factor_threshold < 1:
            raise ValueError("ip_colocation_factor_threshold must be >= 1")
        if not 0 < self.behaviour_penalty_decay < 1:
            raise ValueError("behaviour_penalty_decay must be in (0, 1)")
        if self.decay_interval <= 0 or not 0 < self.decay_to_zero < 1:
            raise ValueError("decay_interval must be > 0 and decay_to_zero in (0, 1)")


@dataclass(slots=True)
class PeerScoreThresholds:
    """Score thresholds: below gossip no IHAVE/IWANT, below publish no flood publish to the
    peer, below graylist every RPC from the peer is ignored; PX only from peers above
    accept_px; opportunistic grafting when the mesh median is below opportunistic_graft."""

    gossip: float = -10.0
    publish: float = -50.0
    graylist: float = -80.0
    accept_px: float = 10.0
    opportunistic_graft: float = 5.0

    def __post_init__(self) -> None:
        if not (self.graylist <= self.publish <= self.gossip <= 0):
            raise ValueError("need graylist <= publish <= gossip <= 0")
        if self.accept_px < 0 or self.opportunistic_graft < 0:
            raise ValueError("accept_px and opportunistic_graft must be >= 0")
