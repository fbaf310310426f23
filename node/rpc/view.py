"""What the RPC server may see of a node: a narrow, read-mostly interface.

The server never reaches into the daemon's internals; it serves from a ``NodeView``. That
keeps the RPC testable against a real ledger and mempool without a network, and lets the
daemon decide what submitting a transaction means (admit to the mempool, then gossip it).
``LocalView`` is the concrete view over a ``Ledger`` and a ``Mempool`` plus what the
services own: it holds the round tracker's ``FLStatus`` and asks the catch-up supervisor
and the host (through callables) whether the node is catching up and who its peers are,
so each piece of state keeps one owner and the view is never stale. Its ``on_tx``
callback publishes admitted transactions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from node.app.mempool import Mempool
from node.ledger.tx import Tx
from node.rpc.metrics import NodeMetrics
from node.services.status import FLStatus, ModelSnapshot, PeerInfo, PeerStanding, RoundStats
from node.store.ledger import Ledger

__all__ = ["LocalView", "NodeView"]


def _not_syncing() -> bool:
    return False


def _no_standing(peer_id: str) -> PeerStanding | None:
    """A view without a network knows no peer."""
    return None


class NodeView(Protocol):
    """The node as the RPC server sees it."""

    node_id: str  # libp2p peer ID (base58)
    moniker: str
    ledger: Ledger
    mempool: Mempool
    metrics: NodeMetrics

    def peers(self) -> list[PeerInfo]: ...

    def peer_standing(self, peer_id: str) -> PeerStanding | None:
        """One peer's standing (score, ban); None when ``peer_id`` is not a peer ID."""
        ...

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
    """A ``NodeView`` over a ledger and mempool and the state the services own."""

    node_id: str
    moniker: str
    ledger: Ledger
    mempool: Mempool
    metrics: NodeMetrics = field(default_factory=NodeMetrics)
    on_tx: Callable[[Tx, bytes | None], Awaitable[None]] | None = None
    fl: FLStatus = field(default_factory=FLStatus)
    list_peers: Callable[[], list[PeerInfo]] = list
    standing_of: Callable[[str], PeerStanding | None] = _no_standing
    is_syncing: Callable[[], bool] = _not_syncing

    def peers(self) -> list[PeerInfo]:
        return list(self.list_peers())

    def peer_standing(self, peer_id: str) -> PeerStanding | None:
        return self.standing_of(peer_id)

    def catching_up(self) -> bool:
        return self.is_syncing()

    def model(self) -> ModelSnapshot | None:
        return self.fl.snapshot

    def fl_history(self) -> list[RoundStats]:
        return list(self.fl.history)

    def latest_accuracy(self) -> float | None:
        return self.fl.test_accuracy

    def accuracy_round(self) -> int | None:
        return self.fl.test_accuracy_round

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
