"""Limits and timers of a host, its protocols and its connection manager.

A module of its own because the protocols read it too (identify advertises the versions,
the connection manager keeps ``max_peers``): they import this, never ``host``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from node.p2p.multiaddr import Multiaddr
from node.p2p.yamux import YamuxConfig


@dataclass(frozen=True)
class HostConfig:
    """Limits and timers of a host and its connection manager.

    Inbound connections in their upgrade (multistream, Noise, muxer) hold one of
    ``max_pending_upgrades`` slots, at most ``max_pending_upgrades_per_ip`` from one
    address; a socket that sends nothing for ``first_byte_timeout`` or has not finished
    within ``handshake_timeout`` is dropped. A newcomer that finds its IP's share or the
    pool full sheds the pending upgrade that made the least progress (idle ones first,
    then the one silent longest) instead of being refused, so idle sockets cannot keep
    an honest dialer, which sends at once, out.

    One peer ID keeps at most ``max_connections_per_peer`` connections: past it the host
    closes the oldest inbound ones first, then the oldest it dialled, never the newest
    (libp2p's convention; two, so that a simultaneous dial from both sides, where each
    side would rather keep the one it dialled, loses neither).
    """

    yamux: YamuxConfig = field(default_factory=YamuxConfig)
    dial_timeout: float = 10.0
    handshake_timeout: float = 5.0
    first_byte_timeout: float = 2.0
    negotiate_timeout: float = 10.0
    max_write_buffer: int = 64 * 1024 * 1024
    max_pending_upgrades: int = 64
    max_pending_upgrades_per_ip: int = 16
    max_connections_per_peer: int = 2
    keepalive_interval: float = 15.0
    keepalive_timeout: float = 10.0
    agent_version: str = "fedchain/0.1.0"
    protocol_version: str = "ipfs/0.1.0"
    identify_on_connect: bool = True
    bootstrap: tuple[Multiaddr, ...] = ()
    persistent: tuple[Multiaddr, ...] = ()
    announce: tuple[Multiaddr, ...] = ()  # addresses to advertise instead of the bound ones

    def __post_init__(self) -> None:
        if self.target_peers > self.max_peers:
            raise ValueError("target_peers must not exceed max_peers")
        timeouts = (
            self.dial_timeout,
            self.handshake_timeout,
            self.first_byte_timeout,
            self.negotiate_timeout,
        )
        if min(timeouts) <= 0:
            raise ValueError("timeouts must be positive")
        if not 1 <= self.max_pending_upgrades_per_ip <= self.max_pending_upgrades:
            raise ValueError("need 1 <= max_pending_upgrades_per_ip <= max_pending_upgrades")
        if self.max_connections_per_peer < 1:
            raise ValueError("max_connections_per_peer must be at least 1")
        if self.reconnect_base <= 0 or self.reconnect_max < self.reconnect_base:
            raise ValueError("need 0 < reconnect_base <= reconnect_max")

    max_peers: int = 50
    target_peers: int = 16
    reconnect_base: float = 1.0
    reconnect_max: float = 60.0
