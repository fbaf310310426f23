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

if TYPE_CHECKING:
    from fl.models import Params
    from node.p2p.host import Host

__all__ = ["FLStatus", "ModelSnapshot", "PeerInfo", "RoundStats", "peer_infos"]


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
