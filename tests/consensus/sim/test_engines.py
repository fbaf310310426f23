"""The simulator runs any registered engine, by name, under the same checks.

``tests/consensus/sim/test_sim.py`` holds Tendermint's many-seed claims; here every
registered engine gets the mixed-fault scenarios at the validator counts its adapter
names, and an engine registered only for this test shows that a fork is caught whatever
engine produced it (the checkers know nothing of Tendermint)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from consensus import registry
from consensus.registry import engine_names, engine_spec
from consensus.sim.network import Scenario, run
from consensus.sim.scenarios import mixed
from tests.consensus.sim import selfish

SEEDS = range(25)


@pytest.mark.parametrize("name", engine_names())
def test_every_registered_engine_is_safe_and_live_under_mixed_faults(name: str) -> None:
    bad = []
    for n in engine_spec(name).sim.sizes:
        for seed in SEEDS:
            sc = mixed(seed, n, engine=name)
            r = run(sc)
            if not r.ok:
                bad.append((n, seed, r.agreement_violations, r.validity_violations))
            elif r.max_height < sc.heights_after_gst:
                bad.append((n, seed, "committed too little", r.max_height))
    assert bad == []


def test_solo_runs_through_crashes_in_the_simulator() -> None:
    crashed = [s for s in SEEDS if mixed(s, 1).crashes]
    assert len(crashed) > 5  # the scenarios do restart the lone validator
    for seed in crashed:
        r = run(mixed(seed, 1, engine="solo"))
        assert r.ok and r.commits[0] and min(r.commits[0]) == 1


@pytest.fixture
def with_selfish() -> Iterator[None]:
    """Register the broken engine next to the real ones for one test."""
    saved = registry.ENGINE_MODULES
    registry.ENGINE_MODULES = (*saved, selfish.MODULE)
    registry._specs.cache_clear()
    try:
        yield
    finally:
        registry.ENGINE_MODULES = saved
        registry._specs.cache_clear()


@pytest.mark.usefixtures("with_selfish")
def test_a_registered_engine_that_forks_is_caught_by_the_checkers() -> None:
    assert "selfish" in engine_names()
    r = run(Scenario(seed=1, powers=(1, 1, 1, 1), engine="selfish", heights_after_gst=3))
    assert r.terminated and not r.validity_violations
    assert r.agreement_violations[:3] == [1, 2, 3] and not r.safe
    # The same seeds that the real engines pass fail for it.
    assert all(not run(replace(mixed(s, 4), engine="selfish")).safe for s in range(5))


def test_an_unknown_engine_is_refused_by_name() -> None:
    with pytest.raises(registry.UnknownEngineError, match="'pow'"):
        run(Scenario(seed=1, powers=(1,), engine="pow"))
