"""Our GossipSub across real processes: three nodes in a line A-B-C over loopback TCP
(Noise, yamux), driven through the benchmark's worker mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]


@pytest.mark.slow
def test_three_process_line_delivers_everything() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench_gossip.py"),
            "--impls=ours",
            "--count=100",
            "--size=20000",
            "--big=2000000",
            "--small-count=20",
            "--mesh-messages=0",
            "--settle=2",
            "--idle=5",
            "--repeat=1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)["median"]["ours"]
    assert res["bulk"]["received"] == 100 and res["bulk"]["lost"] == 0
    assert res["big"]["received"] == 1
    assert res["small"]["received"] == 20
