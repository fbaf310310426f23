"""The rule registry: names, declared parameters, and the written forms (rule text, genesis
JSON) that every registered rule must survive. A new rule module is covered here without
editing this file."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl.aggregate import RULES, AggregationConfig, AggregationError, aggregate, parse_rule
from fl.models import model_hash
from fl.rules.base import ParamSpec, Value
from fl.rules.config import Options, rules_help
from fl.rules.registry import rule_class, rule_names
from node.app.application import aggregation_config
from node.ledger.genesis import Genesis, GenesisError
from tests.kits.genesis import make_genesis
from tests.kits.updates import ARCH, BASE, make_updates

ALL = rule_names()
SHARED = Options.specs()
_DOC = make_genesis(1)[0].to_json()


def _genesis_doc(rule: str, params: dict[str, Any]) -> dict[str, Any]:
    """A valid genesis document with this aggregation, through JSON text and back."""
    doc = json.loads(json.dumps(_DOC))
    doc["fl"]["aggregation"] = rule
    doc["fl"]["aggregation_params"] = params
    loaded: dict[str, Any] = json.loads(json.dumps(doc))
    return loaded


def test_the_registry_lists_the_rules_sorted() -> None:
    assert {"fedavg", "median", "trimmed_mean", "krum", "multi_krum"} <= set(ALL)
    assert sorted(ALL) == ALL and tuple(ALL) == RULES
    for name in ALL:
        assert rule_class(name).name == name


def test_unknown_rule_errors_list_the_known_rules() -> None:
    attempts = {
        "text": lambda: parse_rule("fedsgd:1"),
        "keywords": lambda: AggregationConfig("fedsgd"),
        "genesis": lambda: AggregationConfig.from_genesis("fedsgd", {}),
    }
    for form, attempt in attempts.items():
        with pytest.raises(AggregationError, match="unknown rule 'fedsgd'") as e:
            attempt()
        assert all(name in str(e.value) for name in ALL), form
    with pytest.raises(GenesisError, match=r"^fl\.aggregation: unknown rule 'fedsgd'"):
        Genesis.from_json(_genesis_doc("fedsgd", {}))


def test_help_lists_every_rule_parameter_and_option() -> None:
    text = rules_help()
    for name in ALL:
        cls = rule_class(name)
        usage = name + "".join(f"[:{s.name}" for s in cls.specs()) + "]" * len(cls.specs())
        assert f"  {usage} " in text and cls.summary() in text
        for s in cls.specs():
            assert f"{s.name}: {s.describe()}" in text
    for s in SHARED:
        assert f"{s.alias} ({s.name}): {s.describe()}" in text


def test_rule_parameters_do_not_shadow_the_shared_options() -> None:
    shared = {s.name for s in SHARED} | {s.alias for s in SHARED}
    for name in ALL:
        assert not shared & {s.name for s in rule_class(name).specs()}, name


@pytest.mark.parametrize("name", ALL)
def test_unknown_parameter_names_are_refused_naming_them(name: str) -> None:
    attempts = {
        "keywords": lambda: AggregationConfig(name, bogus=1),
        "genesis": lambda: AggregationConfig.from_genesis(name, {"bogus": 1}),
        "text": lambda: parse_rule(f"{name},bogus=1"),
    }
    for form, attempt in attempts.items():
        with pytest.raises(AggregationError, match="'bogus'") as e:
            attempt()
        assert e.value.param == "bogus", form
    with pytest.raises(GenesisError, match=r"fl\.aggregation_params\.bogus"):
        Genesis.from_json(_genesis_doc(name, {"bogus": 1}))
    others = {s.name for n in ALL for s in rule_class(n).specs()}
    for other in sorted(others - {s.name for s in rule_class(name).specs()}):
        with pytest.raises(AggregationError, match=repr(other)):
            AggregationConfig(name, **{other: 1})
    too_many = ":".join([name, *["1"] * (len(rule_class(name).specs()) + 1)])
    with pytest.raises(AggregationError, match="takes"):
        parse_rule(too_many)


def _invalid(spec: ParamSpec) -> list[object]:
    bad: list[object] = ["abc", True, math.nan, math.inf]
    if spec.kind is int:
        bad.append(1.5)
    if not spec.optional:
        bad.append(None)
    if spec.lo is not None:
        bad.append(spec.lo if spec.lo_open else spec.lo - 1)
    if spec.hi is not None:
        bad.append(spec.hi if spec.hi_open else spec.hi + 1)
    return bad


DECLARED = [(n, s) for n in ALL for s in rule_class(n).specs()] + [("fedavg", s) for s in SHARED]


@pytest.mark.parametrize(("name", "spec"), DECLARED, ids=[f"{n}.{s.name}" for n, s in DECLARED])
def test_bad_values_are_refused_naming_the_parameter(name: str, spec: ParamSpec) -> None:
    for value in _invalid(spec):
        with pytest.raises(AggregationError) as e:
            AggregationConfig(name, **{spec.name: value})
        assert e.value.param == spec.name and spec.name in str(e.value), value
    for raw in ("abc", "1e999", str(_invalid(spec)[-1])):
        with pytest.raises(AggregationError) as e:
            AggregationConfig.from_genesis(name, {spec.name: raw})
        assert e.value.param == spec.name, raw
    with pytest.raises(GenesisError, match=rf"^fl\.aggregation_params\.{spec.name}: "):
        Genesis.from_json(_genesis_doc(name, {spec.name: "abc"}))
    with pytest.raises(AggregationError, match=spec.name):
        parse_rule(f"{name},{spec.alias or spec.name}=abc")


def _values(spec: ParamSpec) -> st.SearchStrategy[Value]:
    if spec.kind is int:
        lo = 0 if spec.lo is None else int(spec.lo) + spec.lo_open
        hi = lo + 1000 if spec.hi is None else int(spec.hi) - spec.hi_open
        values: st.SearchStrategy[Value] = st.integers(lo, hi)
    else:
        values = st.floats(
            min_value=spec.lo,
            max_value=1e6 if spec.hi is None else spec.hi,
            exclude_min=spec.lo_open,
            exclude_max=spec.hi_open,
            allow_nan=False,
        )
    extra = [*spec.words, *([None] if spec.optional else [])]
    return st.one_of(values, st.sampled_from(extra)) if extra else values


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=40)
@given(data=st.data())
def test_every_rule_round_trips_through_text_and_genesis_json(name: str, data: Any) -> None:
    specs = rule_class(name).specs() + SHARED
    values = data.draw(st.fixed_dictionaries({}, optional={s.name: _values(s) for s in specs}))
    cfg = AggregationConfig(name, **values)
    assert parse_rule(cfg.to_text()) == cfg
    assert AggregationConfig.from_genesis(name, cfg.genesis_params()) == cfg
    genesis = Genesis.from_json(_genesis_doc(name, cfg.genesis_params()))
    assert genesis.fl.aggregation == name
    if cfg.server_momentum == 0:
        assert aggregation_config(genesis.fl) == cfg  # what the node runs
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # simulation workers receive it
    for s in rule_class(name).specs():
        assert getattr(cfg, s.name) == getattr(cfg.strategy, s.name)


@pytest.mark.parametrize("name", ALL)
def test_every_rule_aggregates_with_its_defaults_deterministically(name: str) -> None:
    ups = make_updates(n=9, attackers=2)
    cfg = AggregationConfig(name)
    res = aggregate(BASE, ups, cfg, arch=ARCH)
    order = np.random.default_rng(5).permutation(len(ups))
    again = aggregate(BASE, [ups[i] for i in order], cfg, arch=ARCH)
    assert again.model_hash == res.model_hash == model_hash(res.params)
    assert again.included == res.included and set(res.included) <= {tx for tx, _ in ups}
    assert res.included == tuple(sorted(res.included))


def test_genesis_validation_does_not_import_torch() -> None:
    """``fedchain tx`` and other light processes load genesis; torch takes seconds."""
    code = (
        "import sys\n"
        "from tests.kits.genesis import make_genesis\n"
        "from node.ledger.genesis import Genesis\n"
        "g = make_genesis(1, fl=make_genesis(1)[0].fl.replace(aggregation='multi_krum'))[0]\n"
        "Genesis.from_json(g.to_json())\n"
        "print('torch' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
