"""What the RPC server may see of a node: a narrow, read-mostly interface.

The server never reaches into the daemon's internals; it serves from a ``NodeView``. That
keeps the RPC testable against a real ledger and mempool without a network, and lets the
daemon decide what submitting a transaction means (admit to the mempool, then gossip it).
``LocalView`` is the concrete view over a ``Ledger`` and a ``Mempool``; the daemon keeps
its ``peers``, ``model``, ``history`` and ``test_accuracy`` fields current and passes an
``on_tx`` callback that publishes admitted transactions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from node.app.mempool import Mempool
from node.ledger.tx import Tx
from node.rpc.metrics import NodeMetrics
from node.store.ledger import Ledger

if TYPE_CHECKING:
    from fl.models import Params

__all__ = ["LocalView", "ModelSnapshot", "NodeView", "PeerInfo", "RoundStats"]


@dataclass(frozen=True)
class PeerInfo:
    peer_id: str
    address: str  # the remote multiaddr
    outbound: bool


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


class NodeView(Protocol):
    """The node as the RPC server sees it."""

    node_id: str  # libp2p peer ID (base58)
    moniker: str
    ledger: Ledger
    mempool: Mempool
    metrics: NodeMetrics

    def peers(self) -> list[PeerInfo]: ...

    def catching_up(self) -> bool: ...

    def model(self) -> ModelSnapshot | None: ...

    def fl_history(self) -> list[RoundStats]: ...

    def latest_accuracy(self) -> float | None: ...

    def accuracy_round(self) -> int | None:
        """The FL round of the global model that ``latest_accuracy`` was measured on."""
        ...

    async def submit_tx(self, tx: Tx, payload: bytes | None) -> None:
        """Admit ``tx`` (raise a TxError saying why not) and pass it on to the network."""
        ...


@dataclass
class LocalView:
    """A ``NodeView`` over a ledger and mempool, with fields the daemon keeps current."""

    node_id: str
    moniker: str
    ledger: Ledger
    mempool: Mempool
    metrics: NodeMetrics = field(default_factory=NodeMetrics)
    on_tx: Callable[[Tx, bytes | None], Awaitable[None]] | None = None
    peer_list: list[PeerInfo] = field(default_factory=list)
    snapshot: ModelSnapshot | None = None
    history: list[RoundStats] = field(default_factory=list)
    test_accuracy: float | None = None
    test_accuracy_round: int | None = None
    syncing: bool = False

    def peers(self) -> list[PeerInfo]:
        return list(self.peer_list)

    def catching_up(self) -> bool:
        return self.syncing

    def model(self) -> ModelSnapshot | None:
        return self.snapshot

    def fl_history(self) -> list[RoundStats]:
        return list(self.history)

    def latest_accuracy(self) -> float | None:
        return self.test_accuracy

    def accuracy_round(self) -> int | None:
        return self.test_accuracy_round

    async def submit_tx(self, tx: Tx, payload: bytes | None) -> None:
        try:
            self.mempool.add(tx, payload)
        except Exception as e:
            reason = getattr(e, "code", "invalid")
            self.metrics.mempool_rejected.labels(reason=reason).inc()
            raise
        self.metrics.mempool_added.inc()
        if self.on_tx is not None:
            await self.on_tx(tx, payload)
