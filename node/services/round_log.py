"""The per-round benchmark log: one JSON line per closed FL round in ``rounds.jsonl``.

``scripts/bench_testnet.py`` splits a round's wall time from these lines (local training,
submit-to-commit, consensus, aggregation), and the gossip traffic and peak memory per
node and round; the field names are that script's input. The log owns only its file and
the gossip totals it last reported, so each line carries the traffic since the line
before without resetting anyone else's counters.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from node.app.application import CommittedBlock
from node.services.gossip import GossipTraffic

if TYPE_CHECKING:
    from node.services.fl_worker import TrainOutcome

__all__ = ["RoundLog"]

log = logging.getLogger(__name__)


class RoundLog:
    def __init__(self, path: Path, traffic: GossipTraffic) -> None:
        self.path = path
        self.traffic = traffic
        self._reported_in = 0
        self._reported_out = 0

    def record(
        self,
        ev: CommittedBlock,
        seconds: float,
        accuracy: float | None,
        closed_at: float,
        outcomes: Sequence[TrainOutcome],
    ) -> None:
        """Append the line of the round ``ev`` closed, ``seconds`` long, whose model
        evaluated to ``accuracy``; ``outcomes`` are this node's training jobs, if any."""
        closed = ev.block.header.fl_round - 1
        mine = [o for o in outcomes if o.round == closed]
        t = self.traffic
        rec = {
            "round": closed,
            "height": ev.block.height,
            "updates": ev.updates,
            "round_seconds": round(seconds, 3),
            "train_seconds": round(mine[-1].seconds, 3) if mine else None,
            "submit_to_commit_seconds": (
                round(closed_at - mine[-1].submitted_at, 3) if mine else None
            ),
            "consensus_seconds": round(ev.consensus_seconds, 3),
            "aggregation_seconds": round(ev.aggregation_seconds, 4),
            "accuracy": accuracy,
            "gossip_bytes_in": t.bytes_in - self._reported_in,
            "gossip_bytes_out": t.bytes_out - self._reported_out,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "unix_time": round(time.time(), 3),
        }
        self._reported_in, self._reported_out = t.bytes_in, t.bytes_out
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(rec) + "\n")
        except OSError as e:
            log.warning("cannot write %s: %s", self.path, e)
