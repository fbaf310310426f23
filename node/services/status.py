"""What a node reports about itself: records the services fill and the RPC view serves.

They live here, below the RPC layer, so the services that own the information (the round
tracker, the peer list) build them without importing the RPC server, and the RPC view
(``node.rpc.view``) serves them as they are. ``FLStatus`` is the one mutable record: the
round tracker is its only writer; the view holds a reference and reads it per request.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from node.p2p.peer_id import PeerID, PeerIDError

if TYPE_CHECKING:
    from fl.models import Params
    from node.p2p.gossipsub.service import GossipSub
    from node.p2p.host import Host

__all__ = [
    "FLStatus",
    "ModelSnapshot",
    "PeerInfo",
    "PeerStanding",
    "RoundStats",
    "peer_infos",
    "peer_standing",
]


@dataclass(frozen=True)
class PeerInfo:
    peer_id: str
    address: str  # the remote multiaddr
    outbound: bool


def peer_infos(host: Host) -> list[PeerInfo]:
    """The host's connected peers, read when asked (so /peers is never stale)."""
    peers = []
    for p in host.connected_peers():
        conns = host.connections(p)
        addr = str(conns[0].remote_addr) if conns else ""
        outbound = bool(conns and conns[0].initiator)
        peers.append(PeerInfo(p.to_base58(), addr, outbound))
    return peers


@dataclass(frozen=True)
class PeerStanding:
    """How this node treats one peer, connected or not: what an operator (or a hostile-peer
    test) reads to see that an offender was scored down, cut off or banned."""

    peer_id: str
    connected: bool
    connections: int  # open connections to the peer right now
    banned: bool  # refused inbound and outbound until its ban expires
    gossip_score: float  # GossipSub's score (0 for a peer it holds no record of)


def peer_standing(host: Host, gossip: GossipSub, peer_id: str) -> PeerStanding | None:
    """The standing of ``peer_id`` (base58), or None when that is not a peer ID."""
    try:
        peer = PeerID.from_base58(peer_id)
    except (PeerIDError, ValueError):
        return None
    return PeerStanding(
        peer_id=peer.to_base58(),
        connected=host.is_connected(peer),
        connections=len(host.connections(peer)),
        banned=host.is_banned(peer),
        gossip_score=gossip.router.peer_score(peer, gossip.now()),
    )


@dataclass(frozen=True)
class RoundStats:
    """One completed FL round as this node saw it."""

    round: int
    height: int  # the block that closed the round
    updates: int
    accuracy: float | None  # this node's test accuracy of the new global model
    loss: float | None
    seconds: float
    model_hash: str = ""  # hex: the global model the round produced


@dataclass(frozen=True)
class ModelSnapshot:
    """The current global model: its on-chain hash and its safetensors export."""

    round: int
    architecture: str
    model_hash: bytes  # fl.models.model_hash of the parameters (what headers carry)
    safetensors: bytes

    @property
    def safetensors_sha256(self) -> bytes:
        return hashlib.sha256(self.safetensors).digest()

    @classmethod
    def from_params(cls, round: int, architecture: str, params: Params) -> ModelSnapshot:
        from fl.models import export_safetensors, model_hash

        return cls(round, architecture, model_hash(params), export_safetensors(params))


@dataclass
class FLStatus:
    """The FL fields of /status, /model and /fl/history (see the module docstring)."""

    snapshot: ModelSnapshot | None = None  # the newest global model this node holds
    history: list[RoundStats] = field(default_factory=list)
    # The newest evaluated model's accuracy, with the round of that model.
    test_accuracy: float | None = None
    test_accuracy_round: int | None = None
