"""The per-round benchmark log: the fields scripts/bench_testnet.py reads, this node's
training of the round, and the gossip traffic since the line before."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from node.app.application import CommittedBlock
from node.services.fl_worker import TrainOutcome
from node.services.gossip import GossipTraffic
from node.services.round_log import RoundLog
from tests.node.daemon.chainkit import Chain

FIELDS = {
    "round", "height", "updates", "round_seconds", "train_seconds",
    "submit_to_commit_seconds", "consensus_seconds", "aggregation_seconds", "accuracy",
    "gossip_bytes_in", "gossip_bytes_out", "peak_rss_mb", "unix_time",
}  # fmt: skip


def _closing(tmp_path: Path) -> CommittedBlock:
    """A committed block as NodeApp reports it (the third block stands in for one that
    closed round 2)."""
    chain = Chain.build(tmp_path / "chain")
    chain.run_until(lambda: min(chain.heights()) >= 3)
    node = chain.nodes[0]
    block = node.ledger.store.block(3)
    assert block is not None and node.app.commits is not None
    commit = node.app.commits.commit(3)
    assert commit is not None
    block = block.replace(header=block.header.replace(fl_round=3))
    return CommittedBlock(block, commit, b"", True, 4, 1.25, 0.5)


def test_each_line_carries_its_round_and_the_traffic_since_the_last(tmp_path: Path) -> None:
    ev = _closing(tmp_path)
    traffic = GossipTraffic(1000, 400)
    log = RoundLog(tmp_path / "rounds.jsonl", traffic)
    mine = [TrainOutcome(1, 64, 0.5, 9.0, 1.0), TrainOutcome(2, 64, 0.4, 3.25, 10.0)]
    log.record(ev, 12.5, 0.91, 12.0, mine)
    traffic.bytes_in += 30
    log.record(ev, 1.0, None, 5.0, [])
    first, second = (json.loads(line) for line in log.path.read_text().splitlines())
    assert set(first) == FIELDS
    assert (first["round"], first["height"], first["updates"]) == (2, 3, 4)
    assert (first["round_seconds"], first["accuracy"]) == (12.5, 0.91)
    assert (first["train_seconds"], first["submit_to_commit_seconds"]) == (3.25, 2.0)
    assert (first["consensus_seconds"], first["aggregation_seconds"]) == (1.25, 0.5)
    assert (first["gossip_bytes_in"], first["gossip_bytes_out"]) == (1000, 400)
    assert first["peak_rss_mb"] > 0
    assert (second["gossip_bytes_in"], second["gossip_bytes_out"]) == (30, 0)
    assert second["train_seconds"] is None and second["submit_to_commit_seconds"] is None


def test_an_unwritable_log_is_a_warning_not_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = RoundLog(tmp_path / "missing-dir" / "rounds.jsonl", GossipTraffic())
    with caplog.at_level(logging.WARNING, logger="node.services.round_log"):
        log.record(_closing(tmp_path), 1.0, None, 0.0, [])
    assert "cannot write" in caplog.text
