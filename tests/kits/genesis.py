"""A deterministic genesis for tests, simulators and benchmarks (never for a real network).

Keys come from fixed secrets, so every run and every process derives the same accounts.
"""

from __future__ import annotations

from typing import Any

from node.core.crypto import PrivateKey
from node.ledger.genesis import (
    FeeParams,
    FLParams,
    Genesis,
    GenesisAccount,
    GenesisValidator,
    RewardParams,
    StakingParams,
    params_of,
)

__all__ = ["make_genesis", "make_keys"]


def make_keys(n: int, prefix: str = "validator") -> list[PrivateKey]:
    """Deterministic keys ``PrivateKey.from_secret(f"{prefix}-{i}")`` for i in range(n)."""
    return [PrivateKey.from_secret(f"{prefix}-{i}") for i in range(n)]


def make_genesis(
    n_validators: int,
    *,
    chain_id: str = "fedchain-test",
    n_trainers: int = 0,
    balance: int = 10**12,
    stake: int = 10**6,
    engine: str = "tendermint",
    engine_params: dict[str, int | str] | None = None,
    genesis_time_ms: int = 1_700_000_000_000,
    **overrides: Any,
) -> tuple[Genesis, list[PrivateKey], list[PrivateKey]]:
    """A deterministic genesis for testnets, simulators and tests.

    Validator i uses ``PrivateKey.from_secret(f"validator-{i}")`` and trainer j
    ``PrivateKey.from_secret(f"trainer-{j}")``; every key gets ``balance`` tokens, trainers
    are listed in genesis. Returns (genesis, validator keys, trainer keys). Keyword
    ``overrides`` replace whole top-level fields (e.g. ``fees=FeeParams(0, 0)``).
    """
    vkeys = make_keys(n_validators, "validator")
    tkeys = make_keys(n_trainers, "trainer")
    accounts = tuple(
        sorted(
            (GenesisAccount(k.address, balance) for k in vkeys + tkeys),
            key=lambda a: a.address,
        )
    )
    g = Genesis(
        chain_id=chain_id,
        genesis_time_ms=genesis_time_ms,
        accounts=accounts,
        validators=tuple(GenesisValidator(k.public_key, stake) for k in vkeys),
        trainers=tuple(k.address for k in tkeys),
        consensus_engine=engine,
        consensus_params=params_of(engine_params or {}),
        fees=FeeParams(base=10, per_byte=1),
        staking=StakingParams(
            unbonding_blocks=10,
            min_validator_stake=1000,
            min_trainer_stake=100,
            slash_fraction_ppm=50_000,
            valset_delay=2,
        ),
        rewards=RewardParams(block_reward=100, update_reward=10),
        fl=FLParams(
            model="cnn",
            init_seed=0,
            initial_model_hash=b"\x00" * 32,
            aggregation="fedavg",
            aggregation_params=(),
            min_updates=max(1, n_trainers // 2),
            round_timeout_blocks=20,
            partition="iid",
            max_update_bytes=4 << 20,
        ),
    )
    if overrides:
        g = g.replace(**overrides)
    g._check("")
    g.validate()
    return g, vkeys, tkeys
