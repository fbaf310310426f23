"""``bulyan`` (fl/rules/bulyan.py): the rule that proves a rule is one module plus this test.

Checks the spec against a plain re-implementation, the incremental iterated Krum against
re-scoring from scratch, robustness to a sign-flip attack that breaks fedavg, parameter
checks, and bit-exactness across processes, thread counts and input order.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fl.aggregate import AggregationConfig, AggregationError, aggregate, parse_rule
from fl.fixedpoint import SCALE_BITS
from fl.rules.bulyan import iterated_krum
from fl.rules.krum import krum_scores
from fl.rules.registry import rule_class, rule_names
from fl.update import DecodedUpdate
from node.ledger.genesis import Genesis, GenesisError
from tests.kits.genesis import make_genesis
from tests.kits.updates import (
    ARCH,
    BASE,
    RES,
    delta_of,
    flat,
    hashes_in_fresh_process,
    honest_distance,
    make_updates,
    rule_hashes,
)


def test_bulyan_is_registered_by_its_module_alone() -> None:
    assert "bulyan" in rule_names()
    assert rule_class("bulyan").__module__ == "fl.rules.bulyan"


@st.composite
def distance_problems(draw: st.DrawFn) -> tuple[list[list[int]], int, int]:
    n = draw(st.integers(1, 12))
    f = draw(st.integers(0, 3))
    count = draw(st.integers(1, n))
    dist = [[0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            dist[i][j] = dist[j][i] = draw(st.integers(0, 6))  # small: many ties
    return dist, f, count


@given(distance_problems())
def test_iterated_krum_matches_rescoring_from_scratch(
    problem: tuple[list[list[int]], int, int],
) -> None:
    dist, f, count = problem
    remaining, expected = list(range(len(dist))), []
    for _ in range(count):
        best = krum_scores(dist, remaining, f)[0][1]
        expected.append(best)
        remaining.remove(best)
    assert iterated_krum(dist, f, count) == expected


def _reference(ups: list[tuple[bytes, DecodedUpdate]], f: int) -> tuple[list[bytes], np.ndarray]:
    """The paper's steps written plainly: exact int64 distances, naive iterated Krum, then
    numpy's median and mean over the beta values nearest it (theta odd: an exact median)."""
    ordered = sorted(ups, key=lambda p: p[0])
    q = np.stack([np.rint(flat(u.delta) * 2.0**SCALE_BITS) for _, u in ordered]).astype(np.int64)
    n = len(q)
    d = [[int(((q[i] - q[j]) ** 2).sum()) for j in range(n)] for i in range(n)]
    remaining, picked = list(range(n)), []
    for _ in range(n - 2 * f):
        k = max(len(remaining) - f - 2, 0)
        score = {i: sum(sorted(d[i][j] for j in remaining if j != i)[:k]) for i in remaining}
        best = min(remaining, key=lambda i: (score[i], i))
        picked.append(best)
        remaining.remove(best)
    chosen = np.sort(q[sorted(picked)].astype(np.float64), axis=0)
    beta = len(picked) - 2 * f
    assert len(picked) % 2 == 1
    near = np.argsort(np.abs(chosen - np.median(chosen, axis=0)), axis=0, kind="stable")
    mean = np.take_along_axis(chosen, near[:beta], axis=0).mean(axis=0) * 2.0**-SCALE_BITS
    return [ordered[i][0] for i in sorted(picked)], mean


@pytest.mark.parametrize(("n", "attackers", "f"), [(11, 2, 2), (9, 1, 1), (7, 0, 1)])
def test_bulyan_matches_a_plain_reference(n: int, attackers: int, f: int) -> None:
    ups = make_updates(n=n, attackers=attackers, seed=n)
    res = aggregate(BASE, ups, parse_rule(f"bulyan:{f}"), arch=ARCH)
    included, mean = _reference(ups, f)
    assert list(res.included) == included and len(included) == n - 2 * f
    assert np.abs(delta_of(res.params) - mean).max() <= 2 * RES + 1e-6


def test_bulyan_resists_a_sign_flip_that_breaks_fedavg() -> None:
    ups = make_updates(n=11, attackers=2)
    attacker_txs = {tx for tx, _ in ups[:2]}

    def dist(rule: str) -> float:
        return honest_distance(rule, ups, attackers=2)

    assert dist("fedavg") > 1.0  # farther from the honest mean than not moving at all
    assert dist("bulyan:2") < 0.5
    assert not set(aggregate(BASE, ups, parse_rule("bulyan:2"), arch=ARCH).included) & attacker_txs
    # Norm bounding shrinks the attackers to honest size, and two colluders close to each
    # other can win a late Krum pick among few rows: Bulyan's guarantee is that at most f
    # picks are Byzantine, and the trimmed coordinate-wise step still holds them off.
    clipped = aggregate(BASE, ups, parse_rule("bulyan:2,clip=median"), arch=ARCH)
    assert len(clipped.included) == 7 and len(set(clipped.included) & attacker_txs) <= 2
    assert dist("bulyan:2,clip=median") < 0.5


def test_bulyan_parameter_is_checked_and_named() -> None:
    cfg = parse_rule("bulyan:2")
    assert cfg.bulyan_f == 2 and cfg.to_text() == "bulyan:2"
    assert cfg.genesis_params() == {"bulyan_f": 2}
    assert AggregationConfig.from_genesis("bulyan", {"bulyan_f": "2"}) == cfg
    assert parse_rule("bulyan") == AggregationConfig("bulyan", bulyan_f=0)
    for bad in ("bulyan:-1", "bulyan:x", "bulyan:1.5", "bulyan,bulyan_f=-2"):
        with pytest.raises(AggregationError, match="bulyan_f") as e:
            parse_rule(bad)
        assert e.value.param == "bulyan_f", bad
    with pytest.raises(AggregationError, match="takes at most 1"):
        parse_rule("bulyan:1:2")
    with pytest.raises(AggregationError, match="bulyan_f"):
        AggregationConfig("bulyan", bulyan_f=1.5)
    doc = make_genesis(1)[0].to_json()
    doc["fl"] |= {"aggregation": "bulyan", "aggregation_params": {"bulyan_f": -1}}
    with pytest.raises(GenesisError, match=r"fl\.aggregation_params\.bulyan_f"):
        Genesis.from_json(doc)
    doc["fl"]["aggregation_params"] = {"bulyan_f": 1}
    assert Genesis.from_json(doc).fl.aggregation == "bulyan"


def test_bulyan_needs_4f_plus_3_updates() -> None:
    ups = make_updates(n=10)
    with pytest.raises(AggregationError, match="bulyan with f=2 needs at least 11 updates, got 10"):
        aggregate(BASE, ups, parse_rule("bulyan:2"), arch=ARCH)
    assert len(aggregate(BASE, ups[:7], parse_rule("bulyan:1"), arch=ARCH).included) == 5


BULYAN_RULES = ["bulyan", "bulyan:1", "bulyan:2", "bulyan:2,clip=median", "bulyan:1,clip=0.05"]


def test_bulyan_ignores_input_order() -> None:
    ups = make_updates(n=11, attackers=2)
    expected = rule_hashes(BULYAN_RULES, ups)
    rng = np.random.default_rng(3)
    for _ in range(3):
        assert rule_hashes(BULYAN_RULES, [ups[i] for i in rng.permutation(len(ups))]) == expected


@pytest.mark.slow
def test_bulyan_bit_exact_across_processes_threads_and_order() -> None:
    expected = rule_hashes(BULYAN_RULES, make_updates(n=11, attackers=2))
    for threads, shuffle_seed in ((1, 11), (2, 22)):
        child = hashes_in_fresh_process(
            BULYAN_RULES, threads=threads, shuffle_seed=shuffle_seed, n=11, attackers=2
        )
        assert child == expected
