"""Prometheus metrics of one node, on a registry of its own.

Each node gets its own ``CollectorRegistry`` rather than prometheus-client's global one:
tests build several nodes in one process, and the global registry refuses a second metric
of the same name. The services that own what a metric measures (round tracker, catch-up
supervisor, gossip handlers) update these objects, each through a small protocol of its
own naming only the metrics it keeps; ``GET /metrics`` refreshes the values it can read
itself and renders ``NodeMetrics.render()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "NodeMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Rounds take seconds to minutes (training); blocks take around a second.
_ROUND_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, float("inf"))
_BLOCK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, float("inf"))


class _EventCounters(Collector):
    """``fedchain_events_total{layer, reason}``: the counters each layer already keeps
    for its drops, rejections and other notable events (p2p host, gossipsub, block sync,
    blob fetches, the app), read when scraped rather than mirrored on every event."""

    def __init__(self) -> None:
        self.sources: dict[str, Callable[[], Mapping[str, int]]] = {}

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily(
            "fedchain_events",
            "Drops, rejections and other counted events, by layer and reason",
            labels=["layer", "reason"],
        )
        for layer, read in sorted(self.sources.items()):
            for reason, n in sorted(read().items()):
                fam.add_metric([layer, reason], n)
        yield fam


class NodeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ns = "fedchain"
        self.height = Gauge("height", "Latest committed block height", namespace=ns, registry=r)
        self.fl_round = Gauge("fl_round", "Current FL round", namespace=ns, registry=r)
        self.test_accuracy = Gauge(
            "test_accuracy",
            "This node's test accuracy of the latest global model (0..1)",
            namespace=ns,
            registry=r,
        )
        self.peers = Gauge("peers", "Connected peers", namespace=ns, registry=r)
        self.mempool_txs = Gauge("mempool_txs", "Pending transactions", namespace=ns, registry=r)
        self.mempool_bytes = Gauge(
            "mempool_bytes", "Bytes of pending transactions", namespace=ns, registry=r
        )
        self.mempool_added = Counter(
            "mempool_added", "Transactions admitted to the mempool", namespace=ns, registry=r
        )
        self.mempool_rejected = Counter(
            "mempool_rejected",
            "Transactions refused by the mempool, by reason",
            ["reason"],
            namespace=ns,
            registry=r,
        )
        self.gossip_messages = Counter(
            "gossip_messages",
            "Gossip messages by topic and direction (in|out)",
            ["topic", "direction"],
            namespace=ns,
            registry=r,
        )
        self.gossip_bytes = Counter(
            "gossip_bytes",
            "Gossip payload bytes by topic and direction (in|out)",
            ["topic", "direction"],
            namespace=ns,
            registry=r,
        )
        self.catching_up = Gauge(
            "catching_up",
            "1 while the node block-syncs instead of taking part in consensus",
            namespace=ns,
            registry=r,
        )
        self.catchups = Counter(
            "catchups",
            "Times the node found itself behind the chain and paused consensus to sync",
            namespace=ns,
            registry=r,
        )
        self.blocks_synced = Counter(
            "blocks_synced",
            "Blocks applied through block sync (at start-up and when catching up)",
            namespace=ns,
            registry=r,
        )
        self.txs_committed = Counter(
            "txs_committed", "Transactions in committed blocks", namespace=ns, registry=r
        )
        self.round_seconds = Histogram(
            "round_seconds",
            "Wall time of a completed FL round",
            namespace=ns,
            registry=r,
            buckets=_ROUND_BUCKETS,
        )
        self.block_seconds = Histogram(
            "block_seconds",
            "Time between consecutive committed blocks",
            namespace=ns,
            registry=r,
            buckets=_BLOCK_BUCKETS,
        )

        self._events = _EventCounters()
        r.register(self._events)

    def add_event_source(self, layer: str, read: Callable[[], Mapping[str, int]]) -> None:
        """Export the counters ``read()`` returns as ``fedchain_events_total{layer=...}``."""
        self._events.sources[layer] = read

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
