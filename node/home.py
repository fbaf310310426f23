"""Node home directories: ``fedchain init`` for one node and ``fedchain testnet init`` for N.

A home holds ``config.toml`` (local settings), ``genesis.json`` (shared by the network),
``node_key.json`` (the libp2p identity: its peer ID is what other nodes put in their peer
lists), ``validator_key.json`` (the account that signs transactions, votes and model
updates) and ``data/``. Keys are written with mode 0600 and never overwritten.

The libp2p peer ID of a node key is derived in exactly one place, ``peer_id_of``, so the
transport layer's peer-ID rules are not duplicated here.

Testnet port scheme (documented in the README): node ``i`` listens for p2p on
``base_port + 2*i`` and serves RPC on ``base_port + 2*i + 1``, so the defaults give node0
26656/26657 (CometBFT's ports), node1 26658/26659, and so on. With ``hostnames`` (for
docker-compose) every node keeps the base ports inside its own container and peers are
addressed as ``/dns4/<hostname>/tcp/<base_port>/p2p/<peer id>``.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from fl.rules.base import AggregationError
from fl.rules.config import DEFAULT_RULE, parse_rule
from node.config import (
    FL_DATA_DIR,
    Config,
    ConfigError,
    P2PConfig,
    RPCConfig,
    load_config,
    render_config,
)
from node.core.crypto import KeyFileError, PrivateKey
from node.ledger.genesis import (
    FeeParams,
    FLParams,
    Genesis,
    GenesisAccount,
    GenesisError,
    GenesisValidator,
    RewardParams,
    StakingParams,
    load_genesis,
    params_of,
)
from node.p2p.multiaddr import Multiaddr, MultiaddrError
from node.p2p.peer_id import PeerID

__all__ = [
    "CONFIG_FILE",
    "GENESIS_FILE",
    "NODE_KEY",
    "VALIDATOR_KEY",
    "Home",
    "HomeError",
    "init_home",
    "make_genesis",
    "peer_id_of",
    "testnet_init",
]

CONFIG_FILE = "config.toml"
GENESIS_FILE = "genesis.json"
NODE_KEY = "node_key.json"
VALIDATOR_KEY = "validator_key.json"
DATA_DIR = "data"

DEFAULT_BALANCE = 10**12
DEFAULT_STAKE = 10**6
# Seconds; Tendermint option timeout_empty_blocks. Longer than a local testnet's round, so
# most rounds commit one block (the one that closes them): every height costs each
# validator a proposal, votes to sign and verify and an fsync, CPU that training needs.
EMPTY_BLOCKS_INTERVAL = 10


class HomeError(Exception):
    """A home directory cannot be created or is incomplete; the message says how to fix it."""


def peer_id_of(node_key: PrivateKey) -> str:
    """The base58 libp2p peer ID of a node key (an Ed25519 identity-multihash ID)."""
    return PeerID.from_pubkey(node_key.public_key).to_base58()


@dataclass(frozen=True)
class Home:
    """Paths inside one node's home directory, and loaders with clear errors."""

    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def genesis_path(self) -> Path:
        return self.path / GENESIS_FILE

    @property
    def node_key_path(self) -> Path:
        return self.path / NODE_KEY

    @property
    def validator_key_path(self) -> Path:
        return self.path / VALIDATOR_KEY

    def config(self) -> Config:
        return load_config(self.config_path)

    def genesis(self) -> Genesis:
        return load_genesis(self.genesis_path)

    def validator_key(self) -> PrivateKey:
        return PrivateKey.load(self.validator_key_path)

    def node_key(self) -> PrivateKey:
        return PrivateKey.load(self.node_key_path)

    def peer_id(self) -> str:
        return peer_id_of(self.node_key())


def make_genesis(
    chain_id: str,
    validators: list[bytes],
    *,
    trainers: list[bytes] | None = None,
    engine: str = "tendermint",
    model: str = "cnn",
    partition: str = "iid",
    aggregation: str = DEFAULT_RULE,
    min_updates: int | None = None,
    balance: int = DEFAULT_BALANCE,
    stake: int = DEFAULT_STAKE,
    genesis_time_ms: int | None = None,
) -> Genesis:
    """A network genesis: ``validators`` (raw public keys) with equal stake, every
    validator funded, ``trainers`` (addresses; default: the validators' addresses).

    ``min_updates`` defaults to two thirds of the trainers (rounded up), so a round still
    closes promptly when a third of the trainers is down; the round timeout covers the rest.
    ``aggregation`` is rule text (``fl.rules.config.parse_rule``); the default,
    ``DEFAULT_RULE``, survives one hostile trainer (see there).
    """
    from node.core.crypto import address_of

    addrs = [address_of(pk) for pk in validators]
    trainer_addrs = addrs if trainers is None else trainers
    if min_updates is None:
        min_updates = max(1, -(-2 * len(trainer_addrs) // 3))
    try:
        rule = parse_rule(aggregation)
    except AggregationError as e:
        raise HomeError(f"invalid aggregation {aggregation!r}: {e}") from e
    g = Genesis(
        chain_id=chain_id,
        genesis_time_ms=genesis_time_ms if genesis_time_ms is not None else int(time.time() * 1e3),
        accounts=tuple(
            sorted((GenesisAccount(a, balance) for a in addrs), key=lambda a: a.address)
        ),
        validators=tuple(GenesisValidator(pk, stake) for pk in validators),
        trainers=tuple(trainer_addrs),
        consensus_engine=engine,
        # A height with nothing to commit waits up to this long for work before its
        # (empty) block: blocks while an FL round trains would only cost CPU.
        consensus_params=params_of(
            {"timeout_empty_blocks": EMPTY_BLOCKS_INTERVAL} if engine == "tendermint" else {}
        ),
        fees=FeeParams(base=10, per_byte=1),
        staking=StakingParams(
            unbonding_blocks=100,
            min_validator_stake=1000,
            min_trainer_stake=100,
            slash_fraction_ppm=50_000,
            valset_delay=2,
        ),
        rewards=RewardParams(block_reward=100, update_reward=10),
        fl=FLParams(
            model=model,
            init_seed=0,
            initial_model_hash=bytes(32),
            aggregation=rule.rule,
            aggregation_params=params_of(rule.genesis_params()),
            min_updates=min_updates,
            # An idle chain cuts a block every EMPTY_BLOCKS_INTERVAL seconds (sooner with
            # txs): 60 blocks is 1-10 minutes, well beyond a local epoch on a shared CPU.
            round_timeout_blocks=60,
            partition=partition,
            max_update_bytes=4 << 20,
        ),
    )
    try:
        g._check("")
        g.validate()
    except Exception as e:  # CodecError or GenesisError: the caller passed bad options
        raise HomeError(f"invalid genesis: {e}") from e
    return g


def _check_fl_options(model: str, partition: str) -> None:
    # Imported here: torch is heavy and only these checks need the FL registry.
    from fl.models import ARCHITECTURES
    from fl.partition import PartitionError, parse_partition

    if model not in ARCHITECTURES:
        raise HomeError(f"unknown model {model!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    try:
        parse_partition(partition)
    except PartitionError as e:
        raise HomeError(str(e)) from e


def _check_mnist(source: Path) -> None:
    """The shards' source must hold the full MNIST copy (content is checked on split)."""
    from fl.data import DataError, fetch_mnist

    try:
        fetch_mnist(source, download=False)
    except DataError as e:
        raise HomeError(str(e)) from e


def _write_shards(source: Path, dests: list[Path], genesis: Genesis) -> None:
    from fl.data import DataError
    from fl.shards import write_shards

    try:
        write_shards(source, dests, genesis.fl.partition, genesis.fl.init_seed)
    except (DataError, OSError) as e:
        raise HomeError(f"cannot write the training shards: {e}") from e


def _check_engine(engine: str) -> None:
    from consensus.registry import UnknownEngineError, engine_spec

    try:
        engine_spec(engine)
    except UnknownEngineError as e:
        raise HomeError(str(e)) from e


def _check_hosts(host: str, hostnames: list[str] | None) -> None:
    """Refuse unusable addresses before any file is written."""
    if hostnames is None:
        try:
            ipaddress.IPv4Address(host)
        except ValueError as e:
            raise HomeError(f"--host {host!r} is not an IPv4 address") from e
        return
    for name in hostnames:
        try:
            Multiaddr.parse(f"/dns4/{name}/tcp/1")
        except MultiaddrError as e:
            raise HomeError(f"--hostnames: {name!r} is not a usable hostname: {e}") from e
    if len(set(hostnames)) != len(hostnames):
        raise HomeError("--hostnames: names must be distinct")


def _create_keys(home: Home) -> tuple[PrivateKey, PrivateKey]:
    """Create both keys, refusing to touch a home that already has any key or config."""
    for p in (home.config_path, home.validator_key_path, home.node_key_path):
        if p.exists():
            raise HomeError(f"{p} already exists; {home.path} is already initialised")
    home.path.mkdir(parents=True, exist_ok=True)
    vkey, nkey = PrivateKey.generate(), PrivateKey.generate()
    try:
        vkey.save(home.validator_key_path)
        nkey.save(home.node_key_path)
    except (KeyFileError, OSError) as e:
        raise HomeError(f"cannot write keys in {home.path}: {e}") from e
    (home.path / DATA_DIR).mkdir(exist_ok=True)
    return vkey, nkey


def init_home(
    path: Path,
    *,
    moniker: str | None = None,
    genesis_file: Path | None = None,
    chain_id: str | None = None,
    config: Config | None = None,
) -> Home:
    """Initialise one node's home.

    With ``genesis_file`` the node joins that network: the file is validated and copied.
    Without it the node gets its own single-validator development chain (solo engine) in
    which it is the only validator and trainer.
    """
    home = Home(Path(path))
    genesis: Genesis | None = None
    if genesis_file is not None:
        try:
            genesis = load_genesis(genesis_file)
        except GenesisError as e:
            raise HomeError(f"{genesis_file}: {e}") from e
        if chain_id is not None and chain_id != genesis.chain_id:
            raise HomeError(
                f"--chain-id {chain_id!r} differs from the genesis chain id {genesis.chain_id!r}"
            )
    cfg = config or Config()
    if moniker is not None:
        cfg = replace(cfg, moniker=moniker)
    try:
        cfg.validate()
    except ConfigError as e:
        raise HomeError(str(e)) from e
    vkey, _ = _create_keys(home)
    try:
        if genesis is None:
            genesis = make_genesis(chain_id or "fedchain-dev", [vkey.public_key], engine="solo")
            genesis.save(home.genesis_path)
        else:
            assert genesis_file is not None
            # The file may already be in place (copied into the new home by hand).
            if not (home.genesis_path.exists() and home.genesis_path.samefile(genesis_file)):
                shutil.copyfile(genesis_file, home.genesis_path)
        home.config_path.write_text(render_config(cfg))
    except OSError as e:
        raise HomeError(f"cannot write {home.path}: {e}") from e
    return home


TRAIN_SLOTS_DIR = "train-slots"


def testnet_init(
    directory: Path,
    nodes: int,
    *,
    engine: str = "tendermint",
    partition: str = "iid",
    model: str = "cnn",
    chain_id: str = "fedchain-testnet",
    base_port: int = 26656,
    host: str = "127.0.0.1",
    hostnames: list[str] | None = None,
    fl_data_dir: str = "",
    eval_samples: int = 10_000,
    peer_eval_samples: int | None = None,
) -> list[Home]:
    """Create homes ``DIR/node0 .. DIR/node{N-1}`` sharing one genesis in which every node
    is a validator (equal stake) and a trainer, each peered with all the others.

    ``fl_data_dir`` names a full MNIST copy: each home then gets only its own shard of it,
    in ``<home>/train_data`` (its ``fl.data_dir``), split by the genesis partition and
    seed (``fl.shards``), so the nodes train as the in-process simulation's clients do.
    Without it the homes hold no training data (nodes that train need some put there).

    node0 evaluates each global model on ``eval_samples`` test images and the others on
    ``peer_eval_samples``. By default the others do not evaluate when every node runs on
    this machine: all nodes hold the same global model, so their evaluations would only
    repeat node0's number with CPU taken from training. Nodes on their own hosts
    (``hostnames``) evaluate on ``eval_samples`` like node0. On one machine the nodes also
    take turns to train, as many at once as the machine has cores (``node.testnet.train_slots``)."""
    if not 1 <= nodes <= 100:
        raise HomeError("--nodes must be between 1 and 100")
    if hostnames is not None and len(hostnames) != nodes:
        raise HomeError(f"--hostnames lists {len(hostnames)} names for {nodes} nodes")
    top = base_port if hostnames is not None else base_port + 2 * nodes - 1
    if base_port < 1 or top > 65535:
        raise HomeError(f"--base-port {base_port} leaves no room for {nodes} nodes' ports")
    _check_engine(engine)
    _check_fl_options(model, partition)
    _check_hosts(host, hostnames)
    if peer_eval_samples is None:
        peers_eval = eval_samples if hostnames is not None else 0
    elif 0 <= peer_eval_samples <= 10_000:
        peers_eval = peer_eval_samples
    else:
        raise HomeError("--peer-eval-samples must be between 0 and 10000")
    directory = Path(directory)
    homes = [Home(directory / f"node{i}") for i in range(nodes)]
    for h in homes:
        if h.path.exists() and any(h.path.iterdir()):
            raise HomeError(f"{h.path} exists and is not empty; choose another --dir")
    if fl_data_dir:
        _check_mnist(Path(fl_data_dir))
    keys = [_create_keys(h) for h in homes]
    genesis = make_genesis(
        chain_id,
        [v.public_key for v, _ in keys],
        engine=engine,
        model=model,
        partition=partition,
    )
    if fl_data_dir:
        _write_shards(Path(fl_data_dir), [h.path / FL_DATA_DIR for h in homes], genesis)
    peers: list[str] = []
    for i, (_, nkey) in enumerate(keys):
        if hostnames is not None:
            addr = f"/dns4/{hostnames[i]}/tcp/{base_port}"
        else:
            addr = f"/ip4/{host}/tcp/{base_port + 2 * i}"
        peers.append(f"{addr}/p2p/{peer_id_of(nkey)}")
    for i, h in enumerate(homes):
        if hostnames is not None:
            p2p_port, rpc_host, rpc_port = base_port, "0.0.0.0", base_port + 1
            external = f"/dns4/{hostnames[i]}/tcp/{base_port}"
        else:
            p2p_port, rpc_host, rpc_port = base_port + 2 * i, "127.0.0.1", base_port + 2 * i + 1
            external = ""
        listen_ip = "0.0.0.0" if hostnames is not None else host
        cfg = Config(
            moniker=f"node{i}",
            p2p=P2PConfig(
                listen=f"/ip4/{listen_ip}/tcp/{p2p_port}",
                external=external,
                persistent_peers=tuple(p for j, p in enumerate(peers) if j != i),
                max_peers=max(50, 2 * nodes),
            ),
            rpc=RPCConfig(listen=f"{rpc_host}:{rpc_port}"),
        )
        n_eval = eval_samples if i == 0 else min(eval_samples, peers_eval)
        fl = replace(cfg.fl, data_dir=FL_DATA_DIR, eval_samples=n_eval)
        if hostnames is None:  # every node on this machine: take turns for its cores
            slots_dir = str((directory / TRAIN_SLOTS_DIR).resolve())
            fl = replace(fl, train_slots=os.cpu_count() or 1, train_slots_dir=slots_dir)
        cfg = replace(cfg, fl=fl)
        try:
            h.config_path.write_text(render_config(cfg))
        except ConfigError as e:
            raise HomeError(f"node{i}: {e}") from e
        genesis.save(h.genesis_path)
    genesis.save(directory / GENESIS_FILE)
    return homes
