"""Genesis: the JSON file every node starts from, and its typed, validated record.

The JSON form is for people (hex for byte strings, objects for engine and aggregation
parameters); the typed ``Genesis`` record is what the code uses and what is hashed, so two
nodes agree on the chain's starting point iff their genesis hashes agree, whatever the
file's whitespace or key order. Loading goes JSON -> plain values -> the codec's own field
checks (types, bounds, lengths) -> cross-field validation, and every failure is a
``GenesisError`` naming the offending field.

Parameters left open to other layers (the consensus engine's parameters, the aggregation
rule's parameters) are opaque maps of ints and strings, encoded canonically as sorted
``Param`` lists. Both are still checked on load: the aggregation rule against the
declarations in the rule's class (``fl.rules``, which imports no torch), the engine and
its options against the schema the engine declares in ``consensus.registry``, so a typo
fails here, naming the parameter, rather than when the node starts or a round closes.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any

from consensus.registry import OptionError, UnknownEngineError, check_options
from consensus.types import MAX_VALIDATORS, ChainId
from fl.rules.base import AggregationError
from fl.rules.config import AggregationConfig
from node.core.codec import (
    I64,
    U8,
    U32,
    U64,
    Bytes20,
    Bytes32,
    CodecError,
    Record,
    Seq,
    Str,
)
from node.core.crypto import address_of

__all__ = [
    "FLParams",
    "FeeParams",
    "Genesis",
    "GenesisAccount",
    "GenesisError",
    "GenesisValidator",
    "Param",
    "RewardParams",
    "StakingParams",
    "load_genesis",
    "params_dict",
    "params_of",
]

PPM = 1_000_000  # slash fractions are in parts per million
Name = Annotated[str, Str(64, "abcdefghijklmnopqrstuvwxyz0123456789-_.")]


class GenesisError(ValueError):
    """The genesis file is unreadable or describes an impossible chain."""


class Param(Record):
    """One entry of an opaque parameter map: exactly one of int_value / str_value is set."""

    key: Name
    int_value: I64 | None
    str_value: Annotated[str | None, Str(256)]

    def _check(self, path: str) -> None:
        if (self.int_value is None) == (self.str_value is None):
            raise CodecError("a parameter has exactly one of an int or a string value", path)

    @property
    def value(self) -> int | str:
        return self.int_value if self.int_value is not None else str(self.str_value)


Params = Annotated[tuple[Param, ...], Seq(64)]


def params_of(d: dict[str, int | str]) -> tuple[Param, ...]:
    """The canonical (key-sorted) parameter list of a mapping."""
    out = []
    for k in sorted(d):
        v = d[k]
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise GenesisError(f"parameter {k!r} must be an integer or a string")
        out.append(Param(k, v, None) if isinstance(v, int) else Param(k, None, v))
    return tuple(out)


def params_dict(params: tuple[Param, ...]) -> dict[str, int | str]:
    return {p.key: p.value for p in params}


class GenesisAccount(Record):
    address: Bytes20
    balance: U64


class GenesisValidator(Record):
    public_key: Bytes32
    stake: U64

    @property
    def address(self) -> bytes:
        return address_of(self.public_key)


class FeeParams(Record):
    """Minimum fee = base + per_byte * encoded tx length."""

    base: U64
    per_byte: U64


class StakingParams(Record):
    unbonding_blocks: U32
    min_validator_stake: U64
    min_trainer_stake: U64
    slash_fraction_ppm: U32
    # Validator-set changes decided in block H take effect at H + valset_delay (>= 1), so
    # the engine always knows the set of the next height before it starts it (CometBFT: 2).
    valset_delay: U8


class RewardParams(Record):
    block_reward: U64  # minted to the proposer of every block
    update_reward: U64  # minted to the trainer of every included model update


class FLParams(Record):
    model: Name  # model architecture name, interpreted by fl/
    init_seed: U64
    # Hash of the round-0 global model; all zeros when the FL layer derives it from the seed.
    initial_model_hash: Bytes32
    aggregation: Name
    aggregation_params: Params
    min_updates: U32
    round_timeout_blocks: U32  # after this many blocks a round may close with fewer updates
    partition: Annotated[str, Str(128)]
    max_update_bytes: U32


class Genesis(Record):
    chain_id: ChainId
    genesis_time_ms: U64
    accounts: Annotated[tuple[GenesisAccount, ...], Seq(100_000)]
    validators: Annotated[tuple[GenesisValidator, ...], Seq(MAX_VALIDATORS)]
    trainers: Annotated[tuple[Bytes20, ...], Seq(100_000)]
    consensus_engine: Name
    consensus_params: Params
    fees: FeeParams
    staking: StakingParams
    rewards: RewardParams
    fl: FLParams

    # ----------------------------------------------------------------- validation

    def validate(self) -> None:
        """Cross-field checks; raises GenesisError naming the offending field."""
        if not self.chain_id:
            raise GenesisError("chain_id: must not be empty")
        addrs = [a.address for a in self.accounts]
        if len(set(addrs)) != len(addrs):
            raise GenesisError("accounts: duplicate address")
        if sum(a.balance for a in self.accounts) >= 1 << 64:
            raise GenesisError("accounts: total supply overflows 64 bits")
        if not self.validators:
            raise GenesisError("validators: at least one validator is required")
        keys = [v.public_key for v in self.validators]
        if len(set(keys)) != len(keys):
            raise GenesisError("validators: duplicate public key")
        st = self.staking
        for i, v in enumerate(self.validators):
            if v.stake < max(st.min_validator_stake, 1):
                raise GenesisError(
                    f"validators[{i}].stake: {v.stake} below min_validator_stake "
                    f"{st.min_validator_stake}"
                )
        if len(set(self.trainers)) != len(self.trainers):
            raise GenesisError("trainers: duplicate address")
        if st.slash_fraction_ppm > PPM:
            raise GenesisError(f"staking.slash_fraction_ppm: at most {PPM}")
        if st.valset_delay < 1:
            raise GenesisError("staking.valset_delay: must be at least 1")
        if st.unbonding_blocks < 1:
            raise GenesisError("staking.unbonding_blocks: must be at least 1")
        if self.fl.min_updates < 1:
            raise GenesisError("fl.min_updates: must be at least 1")
        if self.fl.max_update_bytes < 1:
            raise GenesisError("fl.max_update_bytes: must be at least 1")
        try:
            check_options(self.consensus_engine, self.consensus_params_dict)
        except UnknownEngineError as e:
            raise GenesisError(f"consensus_engine: {e}") from e
        except OptionError as e:
            raise GenesisError(f"consensus_params.{e}") from e
        self._check_aggregation()

    def _check_aggregation(self) -> None:
        fl = self.fl
        try:
            AggregationConfig.from_genesis(fl.aggregation, params_dict(fl.aggregation_params))
        except AggregationError as e:
            where = f"fl.aggregation_params.{e.param}" if e.param else "fl.aggregation"
            raise GenesisError(f"{where}: {e}") from e

    # ----------------------------------------------------------------- JSON

    def to_json(self) -> dict[str, Any]:
        out = _to_json(self, Genesis)
        assert isinstance(out, dict)
        return out

    @classmethod
    def from_json(cls, doc: Any) -> Genesis:
        try:
            obj = _from_json(doc, Genesis, "")
            g = cls._from_obj(obj)
        except CodecError as e:
            raise GenesisError(str(e)) from e
        g.validate()
        return g

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def save(self, path: Path) -> None:
        Path(path).write_text(self.dumps())

    @property
    def consensus_params_dict(self) -> dict[str, int | str]:
        return params_dict(self.consensus_params)


def load_genesis(path: Path) -> Genesis:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise GenesisError(f"no genesis file at {path}") from e
    except (OSError, ValueError) as e:
        raise GenesisError(f"cannot read genesis file {path}: {e}") from e
    return Genesis.from_json(doc)


# --------------------------------------------------------------------------- JSON mapping
# The JSON shape mirrors the record: byte strings as lowercase hex, tuples as arrays,
# Param lists as objects. Conversion is driven by the same annotations the codec uses.


def _strip(tp: Any) -> Any:
    if typing.get_origin(tp) is Annotated:
        return typing.get_args(tp)[0]
    return tp


def _is_params(tp: Any) -> bool:
    inner = _strip(tp)
    return typing.get_origin(inner) is tuple and typing.get_args(inner)[0] is Param


def _to_json(v: Any, tp: Any) -> Any:
    if _is_params(tp):
        return params_dict(v)
    base = _strip(tp)
    if isinstance(v, Record):
        hints = typing.get_type_hints(type(v), include_extras=True)
        return {name: _to_json(getattr(v, name), hints[name]) for name, _, _ in v._fields()}
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, tuple):
        (elem,) = typing.get_args(base)[:1]
        return [_to_json(x, elem) for x in v]
    return v


def _from_json(v: Any, tp: Any, path: str) -> Any:
    """JSON value -> the plain value the codec's field converters check."""
    if _is_params(tp):
        if not isinstance(v, dict):
            raise GenesisError(f"{path}: expected an object of parameters")
        return [p._to_obj() for p in params_of(v)]
    base = _strip(tp)
    origin = typing.get_origin(base)
    if origin in (typing.Union, types.UnionType):
        if v is None:
            return None
        members = [m for m in typing.get_args(base) if m is not type(None)]
        return _from_json(v, members[0], path)
    if isinstance(base, type) and issubclass(base, Record):
        if not isinstance(v, dict):
            raise GenesisError(f"{path or 'genesis'}: expected an object")
        hints = typing.get_type_hints(base, include_extras=True)
        out = {}
        for k, x in v.items():
            if k not in hints or k.startswith("_") or k in ("TAG", "MAX_SIZE"):
                raise GenesisError(f"{path or 'genesis'}: unknown field {k!r}")
            out[k] = _from_json(x, hints[k], f"{path}.{k}" if path else k)
        return out
    if base is bytes:
        if not isinstance(v, str):
            raise GenesisError(f"{path}: expected a hex string")
        try:
            return bytes.fromhex(v.removeprefix("0x"))
        except ValueError as e:
            raise GenesisError(f"{path}: not valid hex") from e
    if origin is tuple:
        if not isinstance(v, list):
            raise GenesisError(f"{path}: expected an array")
        elem = typing.get_args(base)[0]
        return [_from_json(x, elem, f"{path}[{i}]") for i, x in enumerate(v)]
    return v
