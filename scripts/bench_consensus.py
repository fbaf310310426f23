#!/usr/bin/env python3
"""CPU cost of a consensus engine per committed height, with no network delay.

    python scripts/bench_consensus.py [--engine tendermint] [--heights 100] [--repeat 3]

n honest engines (any registered engine, by name; Tendermint by default) run in lockstep
in one process: every broadcast is delivered at once, the application answers
immediately, and a timer fires (in virtual time) only when no message is left to deliver.
Only time spent inside ``engine.handle`` is counted (process CPU time), so the number is
the engine's own cost: message decoding, signature checks, vote tallies, rule evaluation,
encoding. Reported per engine per height (what one validator's CPU pays) and for the
whole network per height, with real Ed25519 signing and verification and with both
replaced by no-ops (to separate the crypto from the logic). Engines run with their
simulator adapter's options (``consensus.spec.SimAdapter``).
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import statistics
import time
from collections import deque

from consensus.block import Block
from consensus.engine import (
    BlockCommitted,
    Broadcast,
    CommitBlock,
    Engine,
    Event,
    MessageReceived,
    ProposalReady,
    ProposalVerdict,
    RequestProposal,
    RequestVerification,
    ScheduleTimeout,
    SendTo,
    Start,
    TimeoutFired,
)
from consensus.privval import GuardedSigner, MemoryStateStore
from consensus.registry import EngineConfig, create_engine, engine_names, engine_spec
from consensus.sim.network import DEFAULT_ENGINE
from consensus.types import Validator, ValidatorSet
from node.core.codec import sha256
from node.core.crypto import PrivateKey, verify


class NoCryptoKey(PrivateKey):
    """Signs with a constant: isolates the engine logic from Ed25519."""

    def sign(self, message: bytes) -> bytes:
        return b"\x01" * 64


def no_verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    return True


def run(engine: str, n: int, heights: int, crypto: bool) -> tuple[float, int]:
    """CPU seconds spent in handle() over all engines, and heights decided by all."""
    keys = [PrivateKey.from_secret(f"bench-{i}") for i in range(n)]
    if not crypto:
        keys = [NoCryptoKey(k.seed) for k in keys]
    vset = ValidatorSet.of([Validator(k.public_key, 10 + i) for i, k in enumerate(keys)])
    opts = engine_spec(engine).sim.options
    engines: list[Engine] = []
    for k in keys:
        cfg = EngineConfig(
            "bench",
            GuardedSigner(k, MemoryStateStore()),
            vset,
            options=opts,
            verifier=verify if crypto else no_verify,
        )
        engines.append(create_engine(engine, cfg))
    queue: deque[tuple[int, Event]] = deque((i, Start()) for i in range(n))
    # (virtual due time, sequence, engine, event): fired only when the queue is empty
    timers: list[tuple[float, int, int, TimeoutFired]] = []
    seq = itertools.count()
    now = 0.0
    done = [0] * n
    cpu = 0.0
    while (queue or timers) and min(done) < heights:
        if not queue:
            now, _, j, fired = heapq.heappop(timers)
            queue.append((j, fired))
        i, ev = queue.popleft()
        t0 = time.process_time()
        effects = engines[i].handle(ev)
        cpu += time.process_time() - t0
        for eff in effects:
            if isinstance(eff, Broadcast):
                queue.extend((j, MessageReceived(str(i), eff.data)) for j in range(n) if j != i)
            elif isinstance(eff, SendTo):
                queue.append((int(eff.peer), MessageReceived(str(i), eff.data)))
            elif isinstance(eff, RequestProposal):
                data = f"block {eff.height} {eff.round}".encode()
                queue.append((i, ProposalReady(eff.height, eff.round, Block(sha256(data), data))))
            elif isinstance(eff, RequestVerification):
                queue.append((i, ProposalVerdict(eff.height, eff.block, True)))
            elif isinstance(eff, CommitBlock):
                done[i] = eff.height
                queue.append((i, BlockCommitted(eff.height, b"")))
            elif isinstance(eff, ScheduleTimeout):
                fired = TimeoutFired(eff.kind, eff.height, eff.round)
                heapq.heappush(timers, (now + eff.duration, next(seq), i, fired))
    return cpu, min(done)


def crypto_baseline(samples: int = 2000) -> tuple[float, float]:
    """Median-of-3 CPU ms for one raw Ed25519 sign and one verify of a vote's bytes."""
    key = PrivateKey.from_secret("baseline")
    msg = b"v" * 60
    sig = key.sign(msg)
    verify(key.public_key, sig, msg)  # warm the parsed-key cache
    signs, verifies = [], []
    for _ in range(3):
        t0 = time.process_time()
        for _ in range(samples):
            key.sign(msg)
        signs.append((time.process_time() - t0) / samples * 1000)
        t0 = time.process_time()
        for _ in range(samples):
            verify(key.public_key, sig, msg)
        verifies.append((time.process_time() - t0) / samples * 1000)
    return statistics.median(signs), statistics.median(verifies)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", choices=engine_names(), default=DEFAULT_ENGINE)
    ap.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        help="validator counts (default: 4 16 64, or the engine's own when it runs fewer)",
    )
    ap.add_argument("--heights", type=int, default=0, help="default: 400/n, at least 5")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    own = engine_spec(a.engine).sim.sizes
    sizes = a.sizes or ([4, 16, 64] if max(own) > 1 else list(own))
    sign_ms, verify_ms = crypto_baseline()
    print(f"engine: {a.engine}")
    print(f"baseline: Ed25519 sign {sign_ms * 1000:.0f} us, verify {verify_ms * 1000:.0f} us (CPU)")
    print("BFT floor per engine and height: 2(n-1) vote verifies + 2 signs (+ proposal)")
    print("n  | crypto | heights | ms/height/engine (median) | ms/height network | floor ms | runs")
    print("---+--------+---------+---------------------------+-------------------+----------+-----")
    for crypto in (True, False):
        for n in sizes:
            heights = a.heights or max(5, 400 // n)
            per_engine = []
            for _ in range(a.repeat):
                cpu, got = run(a.engine, n, heights, crypto)
                per_engine.append(cpu / got / n * 1000)
            med = statistics.median(per_engine)
            runs = ", ".join(f"{x:.3f}" for x in per_engine)
            floor = (2 * (n - 1) * verify_ms + 2 * sign_ms) if crypto else 0.0
            print(
                f"{n:<3}| {'yes' if crypto else 'no':<7}| {heights:<8}| {med:<26.3f}| "
                f"{med * n:<18.2f}| {floor:<9.3f}| {runs}"
            )


if __name__ == "__main__":
    main()
