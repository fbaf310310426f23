"""A short run of scripts/fuzz_p2p.py's live floods: handshake floods, streams nobody
reads and many connections under one peer ID each stay within the host's budgets."""

from __future__ import annotations

from scripts.fuzz_p2p import FLOODS, run_floods


async def test_live_floods_stay_within_the_host_budgets() -> None:
    report = await run_floods(rounds=2 * len(FLOODS), seed=15)
    assert report.findings == [], "\n".join(report.findings)
    assert report.rounds == 2 * len(FLOODS)
