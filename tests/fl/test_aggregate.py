from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fl.aggregate import (
    MAX_WEIGHT,
    AggregationConfig,
    AggregationError,
    aggregate,
    parse_rule,
)
from fl.models import architecture, init_params, model_hash
from fl.update import DecodedUpdate
from tests.kits.updates import (
    ARCH,
    BASE,
    BASE_HASH,
    RES,
    hashes_in_fresh_process,
    honest_distance,
    make_updates,
    rule_hashes,
)
from tests.kits.updates import delta_of as _delta_of
from tests.kits.updates import flat as _flat

RULES = [
    "fedavg",
    "fedavg,cap=500",
    "median",
    "trimmed_mean:0.2",
    "krum:2",
    "multi_krum:2",
    "multi_krum:2:4,clip=median",
    "fedavg,clip=median",
    "median,clip=0.05",
    "fedavg,momentum=0.9",
]


def test_fedavg_matches_weighted_mean() -> None:
    ups = make_updates()
    res = aggregate(BASE, ups, parse_rule("fedavg"), arch=ARCH)
    w = np.array([u.num_samples for _, u in ups], np.float64)
    expected = sum(wi * _flat(u.delta) for wi, (_, u) in zip(w, ups, strict=True)) / w.sum()
    err = np.abs(_delta_of(res.params) - expected).max()
    assert err <= 2 * RES + 1e-6  # fixed-point grid + float32 rounding of the base
    assert res.model_hash == model_hash(res.params)
    assert len(res.included) == len(ups) and res.momentum is None


def test_weight_cap_equalizes() -> None:
    ups = make_updates()
    capped = aggregate(BASE, ups, parse_rule("fedavg,cap=100"), arch=ARCH)
    mean = np.mean([_flat(u.delta) for _, u in ups], axis=0)
    assert np.abs(_delta_of(capped.params) - mean).max() <= 2 * RES + 1e-6


def test_median_and_trimmed_mean() -> None:
    ups = make_updates(n=10)
    stack = np.stack([_flat(u.delta) for _, u in ups])
    med = aggregate(BASE, ups, parse_rule("median"), arch=ARCH)
    assert np.abs(_delta_of(med.params) - np.median(stack, axis=0)).max() <= 2 * RES + 1e-6
    tm = aggregate(BASE, ups, parse_rule("trimmed_mean:0.2"), arch=ARCH)
    trimmed = np.sort(stack, axis=0)[2:8].mean(axis=0)
    assert np.abs(_delta_of(tm.params) - trimmed).max() <= 2 * RES + 1e-6


def test_robust_rules_resist_sign_flip() -> None:
    ups = make_updates(n=10, attackers=3)
    attacker_txs = {tx for tx, _ in ups[:3]}

    def dist(rule: str) -> float:
        return honest_distance(rule, ups, attackers=3)

    assert dist("fedavg") > 2.0
    for rule in ("median", "trimmed_mean:0.3", "krum:3", "multi_krum:3"):
        assert dist(rule) < 0.5, rule
    for rule in ("krum:3", "multi_krum:3"):
        included = set(aggregate(BASE, ups, parse_rule(rule), arch=ARCH).included)
        assert not included & attacker_txs
    clipped = aggregate(BASE, ups, parse_rule("fedavg,clip=median"), arch=ARCH)
    assert set(clipped.clipped) >= attacker_txs


def test_fixed_norm_bound() -> None:
    ups = make_updates(n=4)
    res = aggregate(BASE, ups, parse_rule("fedavg,clip=0.01"), arch=ARCH)
    assert len(res.clipped) == 4
    assert np.linalg.norm(_delta_of(res.params)) <= 0.01 * 1.001


def test_server_momentum_accumulates() -> None:
    ups = make_updates(n=3)
    cfg = parse_rule("fedavg,momentum=0.5")
    first = aggregate(BASE, ups, cfg, arch=ARCH)
    plain = aggregate(BASE, ups, parse_rule("fedavg"), arch=ARCH)
    assert first.model_hash == plain.model_hash and first.momentum is not None
    second = aggregate(BASE, ups, cfg, arch=ARCH, momentum=first.momentum)
    # Same delta again: step = 0.5 * m + delta = 1.5 delta.
    ratio = np.linalg.norm(_delta_of(second.params)) / np.linalg.norm(_delta_of(plain.params))
    assert ratio == pytest.approx(1.5, rel=1e-3)
    with pytest.raises(AggregationError, match="momentum"):
        aggregate(BASE, ups, cfg, arch=ARCH, momentum=np.zeros(3, np.int64))


def test_order_invariance_in_process() -> None:
    ups = make_updates(n=9, attackers=2)
    rng = np.random.default_rng(1)
    for rule in RULES:
        cfg = parse_rule(rule)
        ref = aggregate(BASE, ups, cfg, arch=ARCH).model_hash
        shuffled = [ups[i] for i in rng.permutation(len(ups))]
        assert aggregate(BASE, shuffled, cfg, arch=ARCH).model_hash == ref, rule


def test_rejects_bad_inputs() -> None:
    ups = make_updates(n=5)
    cfg = parse_rule("fedavg")
    with pytest.raises(AggregationError, match="no updates"):
        aggregate(BASE, [], cfg, arch=ARCH)
    with pytest.raises(AggregationError, match="distinct"):
        aggregate(BASE, [*ups, ups[0]], cfg, arch=ARCH)
    other = init_params(ARCH, 1)
    with pytest.raises(AggregationError, match="based"):
        aggregate(other, ups, cfg, arch=ARCH)
    with pytest.raises(AggregationError, match="krum"):
        aggregate(BASE, ups, parse_rule("krum:2"), arch=ARCH)
    zero = [(tx, DecodedUpdate(u.arch, u.base_hash, 1, 0, u.delta)) for tx, u in ups]
    with pytest.raises(AggregationError, match="zero weight"):
        aggregate(BASE, zero, cfg, arch=ARCH)


@pytest.mark.parametrize(
    "text",
    [
        "fedsgd",
        "median:1",
        "trimmed_mean:0.6",
        "krum:x",
        "krum:-1",
        "fedavg,clip=-1",
        "fedavg,momentum=1",
        "fedavg,cap=0",
        f"fedavg,cap={MAX_WEIGHT + 1}",
        "fedavg,foo=1",
        "multi_krum:1:0",
        "fedavg,clip=nan",
    ],
)
def test_parse_rule_rejects(text: str) -> None:
    with pytest.raises(AggregationError):
        parse_rule(text)


def test_parse_rule_accepts() -> None:
    assert parse_rule("multi_krum:2:5,clip=median,momentum=0.9,cap=600") == AggregationConfig(
        rule="multi_krum",
        krum_f=2,
        multi_krum_m=5,
        norm_bound="median",
        server_momentum=0.9,
        weight_cap=600,
    )


@pytest.mark.slow
def test_bit_exact_across_processes_threads_and_order() -> None:
    """Every rule gives identical bytes in fresh processes with other thread counts/orders."""
    ups = make_updates(n=9, attackers=2)
    expected = rule_hashes(RULES, ups)
    for threads, shuffle_seed in ((1, 11), (2, 22)):
        child = hashes_in_fresh_process(
            RULES, threads=threads, shuffle_seed=shuffle_seed, n=9, attackers=2
        )
        assert child == expected


def test_extreme_inputs_do_not_overflow() -> None:
    """The int64 bounds hold at the limits: 256 updates of +-MAX_ABS_DELTA, max weights."""
    from fl.aggregate import MAX_UPDATES
    from fl.update import MAX_ABS_DELTA

    ups = []
    for i in range(MAX_UPDATES):
        sign = 1.0 if i % 4 else -1.0
        d = {
            t.name: np.full(t.shape, sign * MAX_ABS_DELTA, np.float32)
            for t in architecture(ARCH).tensors
        }
        tx = hashlib.sha256(i.to_bytes(2, "big")).digest()
        ups.append((tx, DecodedUpdate(ARCH, BASE_HASH, 1, 2**40, d)))
    res = aggregate(BASE, ups, parse_rule("fedavg"), arch=ARCH)
    assert np.allclose(_delta_of(res.params), MAX_ABS_DELTA / 2, atol=1e-4)
    res = aggregate(BASE, ups, parse_rule("median"), arch=ARCH)
    assert np.allclose(_delta_of(res.params), MAX_ABS_DELTA, atol=1e-4)
    res = aggregate(BASE, ups, parse_rule("multi_krum:60:150,clip=median"), arch=ARCH)
    assert np.allclose(_delta_of(res.params), MAX_ABS_DELTA, atol=1e-4)
