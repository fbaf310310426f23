"""The simulator runs the real Tendermint engine under faults; these are the safety and
liveness claims of the consensus layer, checked over many seeds."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import pytest

from consensus.sim.network import Scenario, run
from consensus.sim.scenarios import mixed, split_brain
from consensus.tendermint.simulation import SIM_TIMEOUTS
from consensus.types import DuplicateProposalEvidence, DuplicateVoteEvidence
from node.core.crypto import PrivateKey


def _failures(n: int, seeds: range) -> list[tuple[int, str]]:
    bad = []
    for seed in seeds:
        r = run(mixed(seed, n))
        if r.agreement_violations:
            bad.append((seed, f"agreement at heights {r.agreement_violations}"))
        if r.validity_violations:
            bad.append((seed, f"invalid blocks committed {r.validity_violations}"))
        if not r.terminated:
            bad.append((seed, f"no termination after GST (height {r.max_height})"))
    return bad


# 500 seeds in CI: 350 with 4 validators, 150 with 7 (unequal stakes, mixed faults).
@pytest.mark.slow
@pytest.mark.parametrize(
    ("n", "seeds"),
    [(4, range(0, 175)), (4, range(175, 350)), (7, range(0, 75)), (7, range(75, 150))],
)
def test_mixed_faults_are_safe_and_live(n: int, seeds: range) -> None:
    assert _failures(n, seeds) == []


def test_mixed_scenarios_really_are_mixed() -> None:
    scs = [mixed(s, 4) for s in range(60)] + [mixed(s, 7) for s in range(60)]
    assert all(sc.byzantine_power * 3 < sum(sc.powers) for sc in scs)
    assert sum(bool(sc.byzantine) for sc in scs) > 60
    assert sum(bool(sc.partition) for sc in scs) > 20
    assert sum(bool(sc.crashes) for sc in scs) > 20
    assert sum(any(b.equivocate for b in sc.byzantine.values()) for sc in scs) > 20
    assert sum(any(b.invalid_blocks for b in sc.byzantine.values()) for sc in scs) > 10
    assert sum(any(b.audiences for b in sc.byzantine.values()) for sc in scs) > 20
    assert len({sc.powers for sc in scs}) > 100


def test_more_than_a_third_byzantine_breaks_agreement_in_a_bounded_search() -> None:
    """Non-vacuity: the checkers do catch a fork when the fault threshold is exceeded."""
    for n in (4, 7):
        assert any(run(split_brain(s, n)).agreement_violations for s in range(10))


def test_partition_heals_and_heights_commit_within_the_timeouts() -> None:
    t = SIM_TIMEOUTS
    for seed in range(5):
        sc = Scenario(
            seed=seed,
            powers=(3, 4, 5, 6),
            gst=12.0,
            partition=(frozenset({0, 1}), frozenset({2, 3})),  # no side has > 2/3
            heights_after_gst=3,
            window=60.0,
        )
        r = run(sc)
        assert r.safe and r.terminated
        # Nothing can commit while the network is split (neither side has > 2/3) ...
        assert all(t_ >= sc.gst for ct in r.commit_times.values() for t_ in ct.values())
        # Heal -> the round in progress ends by its timeouts; the next rounds (each with
        # a new proposer) decide. Allow that round plus three more, at their lengths.
        rounds = range(r.round_at_gst, r.round_at_gst + 4)
        bound = (
            sum(
                t.propose
                + r_ * t.propose_delta
                + t.prevote
                + r_ * t.prevote_delta
                + t.precommit
                + r_ * t.precommit_delta
                for r_ in rounds
            )
            + 3 * 4 * sc.post_gst_delay
        )
        first = min(ct[h] for ct in r.commit_times.values() for h in ct)
        assert first - sc.gst <= bound
        last_needed = max(max(ct.values()) for ct in r.commit_times.values())
        assert last_needed - sc.gst <= bound + 3 * 4 * sc.post_gst_delay


def test_equivocation_in_the_simulator_yields_verifiable_evidence() -> None:
    from consensus.sim.network import ByzSpec

    sc = Scenario(
        seed=3,
        powers=(5, 5, 5, 2),
        byzantine={3: ByzSpec(equivocate=True)},
        heights_after_gst=6,
    )
    r = run(sc)
    assert r.ok and r.evidence
    key = PrivateKey.from_secret("sim-validator-3")
    for ev in r.evidence:
        assert isinstance(ev, DuplicateVoteEvidence | DuplicateProposalEvidence)
        assert ev.validator == key.address
        assert ev.verify("sim", key.public_key)


def test_same_seed_same_run() -> None:
    a, b = run(mixed(11, 4)), run(mixed(11, 4))
    assert a.commits == b.commits and a.sim_time == b.sim_time


def test_waiting_for_transactions_is_safe_live_and_paced() -> None:
    """With ``timeout_empty_blocks`` and no transactions at all, every height waits out the
    interval before its block (no block storm while an FL round trains), and the mixed
    faults (crashes, partitions, equivocation, invalid blocks) still cannot fork or stall
    the chain."""
    wait = replace(SIM_TIMEOUTS, empty_blocks=2.0)
    bad = []
    for seed in range(40):
        r = run(replace(mixed(seed, 4), options=wait.options()))
        if not r.ok:
            bad.append((seed, r.agreement_violations, r.validity_violations, r.terminated))
    assert bad == []
    calm = run(Scenario(seed=1, powers=(1, 1, 1, 1), heights_after_gst=4, options=wait.options()))
    assert calm.ok
    times = sorted(calm.commit_times[0].items())
    gaps = [b - a for (_, a), (_, b) in pairwise(times)]
    assert len(gaps) >= 3 and all(2.0 <= g < 3.0 for g in gaps)
