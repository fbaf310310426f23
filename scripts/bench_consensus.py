#!/usr/bin/env python3
"""CPU cost of the Tendermint engine per committed height, with no network delay.

    python scripts/bench_consensus.py [--heights 100] [--repeat 3]

n honest engines run in lockstep in one process: every broadcast is delivered at once, the
application answers immediately. Only time spent inside ``engine.handle`` is counted
(process CPU time), so the number is the engine's own cost: message decoding, signature
checks, vote tallies, rule evaluation, encoding. Reported per engine per height (what one
validator's CPU pays) and for the whole network per height, with real Ed25519 signing and
verification and with both replaced by no-ops (to separate the crypto from the logic).
"""

from __future__ import annotations

import argparse
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
    SendTo,
    Start,
)
from consensus.privval import GuardedSigner, MemoryStateStore
from consensus.registry import EngineConfig
from consensus.tendermint.engine import TendermintEngine
from consensus.types import Validator, ValidatorSet
from node.core.codec import sha256
from node.core.crypto import PrivateKey


class NoCryptoKey(PrivateKey):
    """Signs with a constant: isolates the engine logic from Ed25519."""

    def sign(self, message: bytes) -> bytes:
        return b"\x01" * 64


def no_verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    return True


def run(n: int, heights: int, crypto: bool) -> tuple[float, int]:
    """CPU seconds spent in handle() over all engines, and heights decided by all."""
    keys = [PrivateKey.from_secret(f"bench-{i}") for i in range(n)]
    if not crypto:
        keys = [NoCryptoKey(k.seed) for k in keys]
    vset = ValidatorSet.of([Validator(k.public_key, 10 + i) for i, k in enumerate(keys)])
    opts = {"timeout_commit": 0}
    engines: list[Engine] = []
    for k in keys:
        cfg = EngineConfig("bench", GuardedSigner(k, MemoryStateStore()), vset, options=opts)
        if not crypto:
            cfg = EngineConfig(
                "bench",
                GuardedSigner(k, MemoryStateStore()),
                vset,
                options=opts,
                verifier=no_verify,
            )
        engines.append(TendermintEngine(cfg))
    queue: deque[tuple[int, Event]] = deque((i, Start()) for i in range(n))
    done = [0] * n
    cpu = 0.0
    while queue and min(done) < heights:
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
    return cpu, min(done)


def crypto_baseline(samples: int = 2000) -> tuple[float, float]:
    """Median-of-3 CPU ms for one raw Ed25519 sign and one verify of a vote's bytes."""
    from node.core.crypto import verify

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
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--heights", type=int, default=0, help="default: 400/n, at least 5")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    sign_ms, verify_ms = crypto_baseline()
    print(f"baseline: Ed25519 sign {sign_ms * 1000:.0f} us, verify {verify_ms * 1000:.0f} us (CPU)")
    print("floor per engine and height: 2(n-1) vote verifies + 2 signs (+ proposal)")
    print("n  | crypto | heights | ms/height/engine (median) | ms/height network | floor ms | runs")
    print("---+--------+---------+---------------------------+-------------------+----------+-----")
    for crypto in (True, False):
        for n in a.sizes:
            heights = a.heights or max(5, 400 // n)
            per_engine = []
            for _ in range(a.repeat):
                cpu, got = run(n, heights, crypto)
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
