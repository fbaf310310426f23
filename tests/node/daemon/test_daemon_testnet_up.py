"""`fedchain testnet up` runs nodes to a target and reports; `--detach` + `down` stop them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.testnet.runner import STATE_FILE, NodeProc
from tests.helpers import free_base_port, wait_until

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def _cli(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "120"},
    )


def test_up_reaches_the_target_and_writes_a_report(tmp_path: Path, mnist_dir: Path) -> None:
    d = tmp_path / "net"
    r = _cli(
        "testnet", "up", "--nodes", "3", "--dir", str(d), "--data-dir", str(mnist_dir),
        "--base-port", str(free_base_port(8)), "--target-accuracy", "0.6",
        "--max-rounds", "10", "--max-train-samples", "300", "--eval-samples", "1000",
        "--timeout", "150",
        timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((d / "report.json").read_text())
    assert report["reached_target"] and report["nodes_agree"]
    assert report["final_accuracy"] >= 0.6
    assert report["exit_codes"] == {"0": 0, "1": 0, "2": 0}
    assert report["history"] and report["history"][0]["updates"] >= 1
    assert (d / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (d / STATE_FILE).exists()


def test_detach_then_down(tmp_path: Path, mnist_dir: Path) -> None:
    d = tmp_path / "bg"
    r = _cli(
        "testnet", "up", "--nodes", "1", "--engine", "solo", "--dir", str(d),
        "--data-dir", str(mnist_dir), "--base-port", str(free_base_port(8)),
        "--max-train-samples", "100", "--detach",
        timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    state = json.loads((d / STATE_FILE).read_text())
    pids = [int(n["pid"]) for n in state["nodes"]]
    node = NodeProc(0, Path(state["nodes"][0]["home"]), state["nodes"][0]["rpc"])

    def produced_blocks() -> bool:
        s = node.status()
        return s is not None and s["latest_height"] >= 2

    wait_until(produced_blocks, 60, "blocks from the detached node", interval=0.5)
    r = _cli("testnet", "down", "--dir", str(d), timeout=60)
    assert r.returncode == 0, r.stderr
    assert "stopped 1 nodes" in r.stdout
    assert not any(_alive(p) for p in pids)
    r = _cli("testnet", "down", "--dir", str(d), timeout=30)
    assert r.returncode == 1 and "no running testnet" in r.stderr


def test_readme_testnet_of_four_trains_mnist_to_97_percent(tmp_path: Path, mnist_dir: Path) -> None:
    """The README's main job on its embedded defaults (tendermint, IID, full shards, every
    test image): four processes reach 97% test accuracy and agree on the block and the
    global model hash at a common height."""
    d = tmp_path / "main"
    r = _cli(
        "testnet", "up", "--nodes", "4", "--dir", str(d), "--data-dir", str(mnist_dir),
        "--base-port", str(free_base_port(8)), "--target-accuracy", "0.97",
        "--max-rounds", "5", "--timeout", "480",
        timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((d / "report.json").read_text())
    genesis = json.loads((d / "genesis.json").read_text())
    assert genesis["consensus_engine"] == "tendermint" and genesis["fl"]["partition"] == "iid"
    assert report["reached_target"] and report["final_accuracy"] >= 0.97
    assert report["nodes_agree"] and len(report["model_hash_at_common_height"]) == 1
    assert report["exit_codes"] == {str(i): 0 for i in range(4)}
