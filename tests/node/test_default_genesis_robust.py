"""Issue 15 item 8: the genesis `fedchain init`, `fedchain testnet init` and docker-compose
write survives one hostile trainer.

The attack from the issue: one trainer of ten adds +100 to every coordinate and claims 4M
samples. Under the old default (plain FedAvg, no norm bound, no sample cap) it took the
global model's max |w| from 0.3 to 100.3. The aggregation here is the node's own path:
the genesis a home gets, read back by ``NodeApp``'s ``aggregation_config``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fl.aggregate import DEFAULT_RULE, aggregate, parse_rule
from fl.models import Params
from fl.simulation import FederationConfig
from fl.update import DecodedUpdate
from node.app.application import aggregation_config
from node.home import Home, init_home
from node.home import testnet_init as make_testnet_homes
from node.ledger.genesis import FLParams
from tests.kits.updates import ARCH, BASE, BASE_HASH, delta_of, flat, make_updates


def _default_genesis_fl(tmp_path: Path) -> list[FLParams]:
    dev = init_home(tmp_path / "dev").genesis().fl
    testnet = make_testnet_homes(tmp_path / "tn", nodes=4)[0].genesis().fl
    return [dev, testnet, Home(tmp_path / "tn").genesis().fl]


def _hostile(samples: int = 4_000_000) -> DecodedUpdate:
    delta: Params = {k: np.full(v.shape, 100.0, np.float32) for k, v in BASE.items()}
    return DecodedUpdate(ARCH, BASE_HASH, 1, samples, delta)


def test_every_default_genesis_uses_the_robust_rule(tmp_path: Path) -> None:
    for fl in _default_genesis_fl(tmp_path):
        assert aggregation_config(fl) == parse_rule(DEFAULT_RULE)
    # The in-process simulation defaults to the same rule, so default testnets and
    # simulations derive the same models (scripts/bench_testnet.py compares them).
    assert FederationConfig().aggregation == parse_rule(DEFAULT_RULE)


def test_one_hostile_trainer_of_ten_barely_moves_the_default_aggregate(tmp_path: Path) -> None:
    (fl, *_) = _default_genesis_fl(tmp_path)
    cfg = aggregation_config(fl)
    honest = make_updates(n=10)[1:]  # nine honest trainers
    attacked = [(b"\xee" * 32, _hostile()), *honest]
    before = max(float(np.abs(v).max()) for v in BASE.values())
    after = aggregate(BASE, attacked, cfg, arch=ARCH)
    clean = aggregate(BASE, honest, cfg, arch=ARCH)
    moved = max(float(np.abs(v).max()) for v in after.params.values())
    assert moved < before + 0.05  # the old default: before + 100
    step = np.linalg.norm(delta_of(clean.params))
    off = np.linalg.norm(flat(after.params) - flat(clean.params))
    assert off < 0.25 * step  # within a quarter of an honest round's step of the clean model
    # The attack is not a weak one: without the genesis defences it wrecks the model.
    plain = aggregate(BASE, attacked, parse_rule("fedavg"), arch=ARCH)
    assert max(float(np.abs(v).max()) for v in plain.params.values()) > 90


@pytest.mark.parametrize("claimed", [1, 4_000_000])
def test_the_median_sample_cap_limits_an_inflated_claim(claimed: int) -> None:
    honest = make_updates(n=5)
    liar = [(honest[0][0], DecodedUpdate(ARCH, BASE_HASH, 1, claimed, honest[0][1].delta))]
    ups = liar + honest[1:]
    capped = aggregate(BASE, ups, parse_rule("fedavg,cap=median"), arch=ARCH)
    claims = sorted(u.num_samples for _, u in ups)
    median = claims[(len(claims) - 1) // 2]  # the lower median: an honest claim here
    fixed = aggregate(BASE, ups, parse_rule(f"fedavg,cap={median}"), arch=ARCH)
    assert capped.model_hash == fixed.model_hash
