#!/usr/bin/env python3
"""Run the deterministic consensus simulator over many seeds and print a summary table.

    python scripts/sim_consensus.py --seeds 10000 --n 4 7 --jobs 2
    python scripts/sim_consensus.py --engine solo --seeds 10000

Each seed is an independent mixed-fault scenario (consensus.sim.scenarios.mixed): unequal
stakes, Byzantine validators below 1/3 of the stake, delays, loss and a partition until
GST, crash-restarts, stake changes. ``--split-brain`` instead runs the > 1/3 attack, where
violations are expected (it shows the checker can fail). ``--engine`` takes any name in
the engine registry; ``--n`` defaults to the validator counts that engine's simulator
adapter names. Failing seeds are listed so they can be replayed exactly.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from consensus.registry import engine_names, engine_spec
from consensus.sim.network import DEFAULT_ENGINE, run
from consensus.sim.scenarios import mixed, split_brain


@dataclass
class SeedOutcome:
    seed: int
    byz_share: float
    agreement: bool
    validity: bool
    terminated: bool
    heights: int
    sim_time: float


def one(args: tuple[str, int, int, bool]) -> SeedOutcome:
    engine, seed, n, attack = args
    sc = split_brain(seed, n, engine) if attack else mixed(seed, n, engine)
    r = run(sc)
    return SeedOutcome(
        seed,
        sc.byzantine_power / sum(sc.powers),
        not r.agreement_violations,
        not r.validity_violations,
        r.terminated,
        r.max_height,
        r.sim_time,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1000)
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--engine", choices=engine_names(), default=DEFAULT_ENGINE)
    ap.add_argument("--n", type=int, nargs="+", help="validator counts (default: the engine's own)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--split-brain", action="store_true", help="run the > 1/3 attack")
    a = ap.parse_args(argv)
    sizes = a.n or list(engine_spec(a.engine).sim.sizes)
    print(f"engine: {a.engine}")
    rows = []
    failed_any = False
    for n in sizes:
        t0 = time.perf_counter()
        work = [(a.engine, s, n, a.split_brain) for s in range(a.start, a.start + a.seeds)]
        if a.jobs > 1:
            with ProcessPoolExecutor(a.jobs) as ex:
                outs = list(ex.map(one, work, chunksize=16))
        else:
            outs = [one(w) for w in work]
        wall = time.perf_counter() - t0
        agreement = [o.seed for o in outs if not o.agreement]
        validity = [o.seed for o in outs if not o.validity]
        term = [o.seed for o in outs if not o.terminated]
        rate = sum(o.heights for o in outs) / max(1e-9, sum(o.sim_time for o in outs))
        shares = [o.byz_share for o in outs]
        with_byz = sum(1 for s in shares if s > 0)
        rows.append(
            (
                n,
                f"{min(shares):.1%}-{max(shares):.1%} ({with_byz} seeds > 0)",
                len(outs),
                len(agreement),
                len(validity),
                len(term),
                f"{rate:.2f}",
                f"{wall:.0f}",
            )
        )
        checks = (("agreement", agreement), ("validity", validity), ("termination", term))
        for name, seeds in checks:
            if seeds and not a.split_brain:
                failed_any = True
                print(f"n={n} {name} violations at seeds {seeds[:20]}", file=sys.stderr)
    head = (
        "validators",
        "byzantine stake",
        "seeds",
        "agreement viol.",
        "validity viol.",
        "no termination",
        "heights/sim s",
        "wall s",
    )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))
    return 1 if failed_any else 0


if __name__ == "__main__":
    sys.exit(main())
