"""What the node does with gossip: admits received txs and updates, hands consensus
messages to the running engine, and publishes its own.

Received transactions and model updates are admitted inside the topic validators
(``node.services.gossip_topics``): validation is admission, so by the time GossipSub
forwards a message the mempool holds it, and an update's payload is in the blob store
(not fsynced: peers can serve it again). Consensus messages arrive on the consensus topic
(broadcasts) and on a direct request/response protocol (``SendTo`` replies, which go to
a message's author even when it is not a direct neighbour); both are fed to whichever
engine runs now (``ConsensusHandle``).

Only work for a block wakes an engine that waits for transactions: a tx that is admitted
(received or our own) feeds ``TxsAvailable`` when the application has something to put in
a block, so an update that does not yet let the round close does not cut an empty block.

``GossipTraffic`` counts the message bytes this node received and published, for the
per-round benchmark log; the per-topic counters go to the node's metrics.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter

from consensus.engine import MessageReceived, TxsAvailable, Verifier
from node.app.application import NodeApp
from node.core.crypto import verify
from node.ledger.tx import ModelUpdate, Tx
from node.p2p.gossipsub.service import GossipSub, Received
from node.p2p.host import Host
from node.p2p.peer_id import PeerID
from node.p2p.reqresp import ReqRespConfig, RequestResponse
from node.services.consensus_driver import ConsensusHandle
from node.services.gossip_topics import (
    MAX_CONSENSUS_BYTES,
    Topics,
    UpdateGossip,
    consensus_screen,
    consensus_validator,
    tx_validator,
    update_validator,
)
from node.store.blobs import BlobStore

__all__ = ["CONSENSUS_DIRECT_PROTOCOL", "GossipMetrics", "GossipTraffic", "NodeGossip"]

log = logging.getLogger(__name__)

CONSENSUS_DIRECT_PROTOCOL = "/fedchain/consensus/1"


class GossipMetrics(Protocol):
    """The node metrics this service counts (``node.rpc.metrics.NodeMetrics``)."""

    gossip_messages: Counter
    gossip_bytes: Counter


@dataclass
class GossipTraffic:
    """Gossip message bytes delivered to and published by this node since it started."""

    bytes_in: int = 0
    bytes_out: int = 0


class NodeGossip:
    """The node's three topics and its direct consensus protocol (see the module docstring)."""

    def __init__(
        self,
        host: Host,
        gossip: GossipSub,
        topics: Topics,
        *,
        app: NodeApp,
        blobs: BlobStore,
        consensus: ConsensusHandle,
        metrics: GossipMetrics,
        verifier: Verifier = verify,
    ) -> None:
        self.gossip = gossip
        self.topics = topics
        self.app = app
        self.blobs = blobs
        self.consensus = consensus
        self.metrics = metrics
        self.traffic = GossipTraffic()
        me = host.peer_id
        gossip.add_validator(topics.txs, tx_validator(me, self.admit))
        gossip.add_validator(
            topics.updates,
            update_validator(me, self.admit, current_round=lambda: app.ledger.state.meta.fl_round),
        )
        screen = consensus_screen(
            app.genesis.consensus_engine, app.ledger, verifier=verifier, block_id=app.block_id
        )
        gossip.add_validator(topics.consensus, consensus_validator(me, screen))
        self.direct = RequestResponse(
            host,
            CONSENSUS_DIRECT_PROTOCOL,
            self._on_direct,
            ReqRespConfig(max_request=MAX_CONSENSUS_BYTES, max_response=16, timeout=30.0),
        )

    def start(self) -> None:
        """Subscribe to the topics (the GossipSub service is started)."""
        self.gossip.subscribe(self.topics.txs, self._on_gossip)
        self.gossip.subscribe(self.topics.updates, self._on_gossip)
        self.gossip.subscribe(self.topics.consensus, self._on_consensus_gossip)

    # ----------------------------------------------------------------- transactions

    def admit(self, tx: Tx, payload: bytes | None) -> None:
        """Admit a received tx (raises the mempool's TxError, which sets the verdict)."""
        self.app.mempool.add(tx, payload)
        if payload is not None and isinstance(tx.body, ModelUpdate):
            self.blobs.put(payload, round=tx.body.round, durable=False)
        self._txs_changed()

    async def publish_tx(self, tx: Tx, payload: bytes | None) -> None:
        """Publish a tx this node admitted (``LocalView.on_tx``): an update with its
        payload on the updates topic, anything else on the txs topic."""
        if payload is not None and isinstance(tx.body, ModelUpdate):
            self.blobs.put(payload, round=tx.body.round, durable=False)
            await self._publish(self.topics.updates, UpdateGossip(tx.encode(), payload).encode())
        else:
            await self._publish(self.topics.txs, tx.encode())
        self._txs_changed()

    def _txs_changed(self) -> None:
        if self.consensus.running and self.app.has_work():
            self.consensus.feed(TxsAvailable())

    # ----------------------------------------------------------------- consensus

    async def publish_consensus(self, data: bytes) -> None:
        """Broadcast an engine message on the consensus topic."""
        await self._publish(self.topics.consensus, data)

    async def send_direct(self, peer: str, data: bytes) -> None:
        """Send an engine message to one peer (base58 peer ID) over the direct protocol."""
        await self.direct.request(PeerID.from_base58(peer), data, timeout=10.0)

    def _on_consensus_gossip(self, rec: Received) -> None:
        self.traffic.bytes_in += len(rec.data)
        if rec.source is None or not self.consensus.running:
            return  # our own message (the engine has it) or consensus not running yet
        # Replies (SendTo) go to the message's author, who may not be our direct neighbour.
        author = rec.source
        if rec.author:
            with contextlib.suppress(ValueError):
                author = PeerID.from_bytes(rec.author)
        self.consensus.feed(MessageReceived(author.to_base58(), rec.data))

    async def _on_direct(self, peer: PeerID, data: bytes) -> bytes:
        self.consensus.feed(MessageReceived(peer.to_base58(), data))
        return b""

    # ----------------------------------------------------------------- traffic

    def _on_gossip(self, rec: Received) -> None:
        # Txs and updates were admitted by their validators; delivery is only counted.
        self.metrics.gossip_messages.labels(topic=rec.topic, direction="in").inc()
        self.metrics.gossip_bytes.labels(topic=rec.topic, direction="in").inc(len(rec.data))
        self.traffic.bytes_in += len(rec.data)

    async def _publish(self, topic: str, data: bytes) -> None:
        await self.gossip.publish(topic, data)
        m = self.metrics
        m.gossip_messages.labels(topic=topic, direction="out").inc()
        m.gossip_bytes.labels(topic=topic, direction="out").inc(len(data))
        self.traffic.bytes_out += len(data)
