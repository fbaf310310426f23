"""The engine registry is the one way in: names, genesis option schemas, construction."""

from __future__ import annotations

import pytest

from consensus import registry
from consensus.engine import Engine
from consensus.options import OptionError, OptionSchema, Seconds
from consensus.privval import GuardedSigner, MemoryStateStore
from consensus.registry import (
    EngineConfig,
    UnknownEngineError,
    check_options,
    create_engine,
    engine_names,
    engine_spec,
)
from consensus.solo import SoloEngine
from consensus.tendermint.engine import TendermintEngine, Timeouts
from consensus.types import Validator, ValidatorSet
from node.core.crypto import PrivateKey

KEY = PrivateKey.from_secret("registry")
VSET = ValidatorSet.of([Validator(KEY.public_key, 10)])


def config(**options: object) -> EngineConfig:
    return EngineConfig("dev", GuardedSigner(KEY, MemoryStateStore()), VSET, options=options)


def test_registry_names_and_unknown_engine() -> None:
    assert engine_names() == ["solo", "tendermint"]
    assert isinstance(create_engine("solo", config()), SoloEngine)
    assert isinstance(create_engine("tendermint", config()), TendermintEngine)
    with pytest.raises(UnknownEngineError, match="tendermint"):
        create_engine("pow", config())


def test_every_registered_engine_declares_its_name_and_builds_with_defaults() -> None:
    for name in engine_names():
        spec = engine_spec(name)
        assert spec.name == name
        engine = create_engine(name, config())
        assert isinstance(engine, Engine) and engine.height == 1


def test_options_are_checked_against_the_engine_schema_by_name() -> None:
    check_options("tendermint", {"timeout_propose": 2, "timeout_prevote": "0.5"})
    check_options("solo", {"heartbeat": "0.25"})
    with pytest.raises(OptionError, match=r"^timeout_propse: unknown option; known: timeout_com"):
        check_options("tendermint", {"timeout_propse": 2})
    with pytest.raises(OptionError, match=r"^heartbeat: must be a positive number") as e:
        check_options("solo", {"heartbeat": 0})
    assert e.value.option == "heartbeat"
    with pytest.raises(OptionError, match=r"^timeout_empty_blocks: unknown option; known: heart"):
        check_options("solo", {"timeout_empty_blocks": 5})
    with pytest.raises(UnknownEngineError, match="'pow'"):
        check_options("pow", {})


def test_an_engine_built_directly_is_held_to_its_schema() -> None:
    with pytest.raises(OptionError, match=r"^timeout_bogus"):
        TendermintEngine(config(timeout_bogus=1))
    with pytest.raises(OptionError, match=r"^timeout_commit: must be a non-negative"):
        TendermintEngine(config(timeout_commit=-1))
    with pytest.raises(OptionError, match=r"^heartbeat"):
        SoloEngine(config(heartbeat=-1.0))
    assert SoloEngine(config(heartbeat="0.5")).heartbeat == 0.5


def test_seconds_take_numbers_and_decimal_strings_only() -> None:
    s = Seconds("wait", 1.0)
    assert [s.parse(v) for v in (0, 2, 0.25, "3", "0.5")] == [0.0, 2.0, 0.25, 3.0, 0.5]
    for bad in (True, -1, "-1", "1e3", "nan", " 1", float("nan"), float("inf"), None, [1]):
        with pytest.raises(OptionError, match=r"^wait: must be a"):
            s.parse(bad)
    assert s.read({}) == 1.0 and s.read({"wait": "2"}) == 2.0
    with pytest.raises(ValueError, match="distinct"):
        OptionSchema(s, Seconds("wait", 2.0))


def test_tendermint_timeouts_are_its_options() -> None:
    t = Timeouts(propose=0.75, empty_blocks=4.0)
    assert Timeouts.from_options(t.options()) == t
    assert Timeouts.from_options({}) == Timeouts()
    assert engine_spec("tendermint").options.names() == sorted(Timeouts().options())


def test_a_module_without_a_spec_or_with_a_taken_name_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = engine_names()
    cases = {
        ("consensus.types",): "declares no ENGINE",
        ("consensus.solo", "consensus.solo"): "'solo' is already registered",
    }
    try:
        for modules, error in cases.items():
            monkeypatch.setattr(registry, "ENGINE_MODULES", modules)
            registry._specs.cache_clear()
            with pytest.raises(TypeError, match=error):
                engine_names()
    finally:
        monkeypatch.undo()
        registry._specs.cache_clear()
    assert engine_names() == before
