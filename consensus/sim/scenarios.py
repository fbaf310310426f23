"""Seeded scenario generators: mixed faults with < 1/3 Byzantine stake, and the attack
with more than 1/3 that must break agreement (the checker's non-vacuity witness).

Scenarios describe the network and the faults only; the engine is a registry name, so
the same seeds test every engine."""

from __future__ import annotations

import random

from consensus.sim.network import DEFAULT_ENGINE, ByzSpec, Crash, Scenario

__all__ = ["mixed", "split_brain"]


def mixed(seed: int, n: int, engine: str = DEFAULT_ENGINE) -> Scenario:
    """Unequal stakes, Byzantine validators with less than 1/3 of the stake (possibly
    none), message delay/reordering/loss and a partition before GST, crash-restarts of
    honest nodes, and stake changes during the run."""
    rng = random.Random(seed * 7919 + n)
    powers = tuple(rng.randint(1, 10) for _ in range(n))
    total = sum(powers)
    order = list(range(n))
    rng.shuffle(order)
    byz_power = 0
    byz: list[int] = []
    for i in order:
        if rng.random() < 0.7 and (byz_power + powers[i]) * 3 < total:
            byz.append(i)
            byz_power += powers[i]
    honest = [i for i in range(n) if i not in byz]
    specs: dict[int, ByzSpec] = {}
    for i in sorted(byz):
        audiences: tuple[frozenset[int], ...] = ()
        if rng.random() < 0.6:
            audiences = tuple(
                frozenset(j for j in range(n) if j != i and rng.random() < 0.6) for _ in range(2)
            )
        specs[i] = ByzSpec(
            audiences=audiences,
            withhold=rng.choice((0.0, 0.0, 0.3, 1.0)),
            equivocate=rng.random() < 0.5,
            invalid_blocks=rng.random() < 0.4,
        )
    gst = rng.uniform(0.0, 8.0)
    partition: tuple[frozenset[int], ...] = ()
    if rng.random() < 0.4:
        side = frozenset(i for i in range(n) if rng.random() < 0.5)
        partition = (side, frozenset(range(n)) - side)
    crashes: list[Crash] = []
    if rng.random() < 0.4:
        for node in rng.sample(honest, k=min(len(honest), 1 if n < 7 else 2)):
            at = rng.uniform(0.0, gst + 1.0)
            crashes.append(Crash(node, at, at + rng.uniform(0.1, 3.0)))
    changes: dict[int, tuple[tuple[int, int], ...]] = {}
    if rng.random() < 0.3:
        # Only honest stake grows, so the Byzantine share stays below 1/3 at every height.
        node = rng.choice(honest)
        changes[rng.randint(1, 4)] = ((node, powers[node] + rng.randint(1, 10)),)
    return Scenario(
        seed=seed,
        powers=powers,
        byzantine=specs,
        gst=gst,
        delay=(0.001, rng.uniform(0.05, 1.0)),
        post_gst_delay=0.1,
        drop_rate=rng.choice((0.0, 0.1, 0.3)),
        partition=partition,
        crashes=tuple(crashes),
        heights_after_gst=3,
        window=120.0,
        power_changes=changes,
        engine=engine,
    )


def split_brain(seed: int, n: int = 4, engine: str = DEFAULT_ENGINE) -> Scenario:
    """More than 1/3 of the stake Byzantine, honest nodes split in two halves until GST,
    each Byzantine node showing each half a different face."""
    rng = random.Random(seed)
    f = n // 3 + 1
    powers = tuple(rng.randint(5, 10) for _ in range(n))
    byz = list(range(n - f, n))
    honest = list(range(n - f))
    half_a = frozenset(honest[: len(honest) // 2 or 1])
    half_b = frozenset(honest) - half_a or half_a
    byzset = frozenset(byz)
    return Scenario(
        seed=seed,
        powers=powers,
        byzantine={i: ByzSpec((half_a, half_b)) for i in byz},
        gst=3.0,
        delay=(0.001, 0.05),
        partition=(half_a | byzset, half_b | byzset),
        heights_after_gst=1,
        window=2.0,
        engine=engine,
    )
