"""``config.toml``: one node's local settings, parsed into a typed, validated ``Config``.

Everything that must be the same on every node lives in ``genesis.json``; this file holds
only what may differ between nodes (addresses, peers, the trainer's data and threads).
The file is read with the standard library's ``tomllib`` and written from ``TEMPLATE``,
a commented template, so a freshly initialised home documents itself. Unknown keys are
errors rather than ignored: a misspelt ``persistent_peer`` would otherwise silently leave
a node isolated. Every error is a ``ConfigError`` naming the offending key.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.p2p.hostconfig import HostConfig
from node.p2p.multiaddr import Multiaddr, MultiaddrError
from node.p2p.yamux import YamuxConfig

__all__ = [
    "DEFAULT_P2P_PORT",
    "DEFAULT_RPC_PORT",
    "FL_DATA_DIR",
    "TEMPLATE",
    "Config",
    "ConfigError",
    "FLConfig",
    "P2PConfig",
    "RPCConfig",
    "load_config",
    "parse_config",
    "parse_host_port",
    "render_config",
]

DEFAULT_P2P_PORT = 26656
DEFAULT_RPC_PORT = 26657
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """config.toml is unreadable or a value is invalid; the message names the key."""


@dataclass(frozen=True)
class P2PConfig:
    listen: str = f"/ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}"
    # The address other nodes should dial (behind NAT or in docker); empty: the listen addr.
    external: str = ""
    bootstrap: tuple[str, ...] = ()
    persistent_peers: tuple[str, ...] = ()
    max_peers: int = 50
    # Inbound handshake budget (node.p2p.hostconfig.HostConfig): seconds to the first
    # byte and to a finished upgrade; connections in their upgrade in all and per IP.
    first_byte_timeout: int = int(HostConfig.first_byte_timeout)
    handshake_timeout: int = int(HostConfig.handshake_timeout)
    max_pending_upgrades: int = HostConfig.max_pending_upgrades
    max_pending_upgrades_per_ip: int = HostConfig.max_pending_upgrades_per_ip
    # Per peer and per connection (node.p2p.yamux.YamuxConfig): connections one peer ID
    # keeps, streams it may open on one, and the bytes all of a connection's stream
    # windows may add up to.
    max_connections_per_peer: int = HostConfig.max_connections_per_peer
    max_inbound_streams: int = YamuxConfig.max_inbound_streams
    connection_buffer_bytes: int = YamuxConfig.max_buffered


@dataclass(frozen=True)
class RPCConfig:
    listen: str = f"127.0.0.1:{DEFAULT_RPC_PORT}"
    max_body_bytes: int = 1 << 20  # POST /txs bodies larger than this get 413
    # Connection budget (node.rpc.connections): seconds to complete a request head (from
    # connecting or the first byte after a response), to sit idle between requests, and
    # to send a POST body; connections per client IP and in all.
    header_timeout: int = 10
    idle_timeout: int = 60
    body_timeout: int = 30
    max_connections: int = 256
    max_connections_per_ip: int = 64
    # Host header names answered besides IP literals, localhost and the listen host
    # (node.rpc.hosts: DNS rebinding); "*" answers any.
    allowed_hosts: tuple[str, ...] = ()


# Where a home keeps its participant's training data when ``fl.data_dir`` is empty.
FL_DATA_DIR = "train_data"


@dataclass(frozen=True)
class FLConfig:
    trainer: bool = True  # train and publish model updates when listed as a trainer
    # This participant's own training IDX files; relative to the home; empty: FL_DATA_DIR.
    data_dir: str = ""
    torch_threads: int = 1
    device: str = "auto"
    eval_samples: int = 10_000  # test images this node reports its accuracy on; 0: none
    train_slots: int = 0  # at most this many nodes sharing train_slots_dir train at once
    train_slots_dir: str = ""


@dataclass(frozen=True)
class Config:
    moniker: str = "node"
    log_level: str = "info"
    data_dir: str = "data"  # relative paths are relative to the home directory
    # Seconds the start-up integrity check of the databases may take (node.store.database);
    # 0 skips it.
    db_check_seconds: int = 10
    p2p: P2PConfig = field(default_factory=P2PConfig)
    rpc: RPCConfig = field(default_factory=RPCConfig)
    fl: FLConfig = field(default_factory=FLConfig)

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid key."""
        if not self.moniker or len(self.moniker) > 64 or not self.moniker.isprintable():
            raise ConfigError("moniker: must be 1 to 64 printable characters")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level: {self.log_level!r} is not one of {LOG_LEVELS}")
        if not self.data_dir:
            raise ConfigError("data_dir: must not be empty")
        if not 0 <= self.db_check_seconds <= 3600:
            raise ConfigError("db_check_seconds: must be between 0 (no check) and 3600")
        p = self.p2p
        _tcp_multiaddr("p2p.listen", p.listen, peer=False)
        if p.external:
            _tcp_multiaddr("p2p.external", p.external, peer=False)
        for key in ("bootstrap", "persistent_peers"):
            for i, a in enumerate(getattr(p, key)):
                _tcp_multiaddr(f"p2p.{key}[{i}]", a, peer=True)
        if not 1 <= p.max_peers <= 10_000:
            raise ConfigError("p2p.max_peers: must be between 1 and 10000")
        for key in ("first_byte_timeout", "handshake_timeout"):
            if not 1 <= getattr(p, key) <= 300:
                raise ConfigError(f"p2p.{key}: must be between 1 and 300 seconds")
        if not 1 <= p.max_pending_upgrades <= 65536:
            raise ConfigError("p2p.max_pending_upgrades: must be between 1 and 65536")
        if not 1 <= p.max_pending_upgrades_per_ip <= p.max_pending_upgrades:
            raise ConfigError(
                "p2p.max_pending_upgrades_per_ip: must be between 1 and max_pending_upgrades"
            )
        if not 1 <= p.max_connections_per_peer <= 64:
            raise ConfigError("p2p.max_connections_per_peer: must be between 1 and 64")
        if not 1 <= p.max_inbound_streams <= YamuxConfig.max_streams:
            raise ConfigError(
                f"p2p.max_inbound_streams: must be between 1 and {YamuxConfig.max_streams}"
            )
        if not 256 << 10 <= p.connection_buffer_bytes <= 1 << 30:
            raise ConfigError(
                "p2p.connection_buffer_bytes: must be between 262144 (256 KiB) and 1073741824"
            )
        parse_host_port(self.rpc.listen, key="rpc.listen")
        r = self.rpc
        if not 1024 <= r.max_body_bytes <= 64 << 20:
            raise ConfigError("rpc.max_body_bytes: must be between 1024 and 67108864")
        for key in ("header_timeout", "idle_timeout", "body_timeout"):
            if not 1 <= getattr(r, key) <= 3600:
                raise ConfigError(f"rpc.{key}: must be between 1 and 3600 seconds")
        if not 1 <= r.max_connections <= 65536:
            raise ConfigError("rpc.max_connections: must be between 1 and 65536")
        if not 1 <= r.max_connections_per_ip <= r.max_connections:
            raise ConfigError("rpc.max_connections_per_ip: must be between 1 and max_connections")
        for i, name in enumerate(r.allowed_hosts):
            if not name or len(name) > 253 or not name.isprintable() or " " in name:
                raise ConfigError(f"rpc.allowed_hosts[{i}]: {name!r} is not a host name")
        if not 1 <= self.fl.torch_threads <= 256:
            raise ConfigError("fl.torch_threads: must be between 1 and 256")
        if not 0 <= self.fl.eval_samples <= 10_000:
            raise ConfigError("fl.eval_samples: must be between 0 (no evaluation) and 10000")
        if not 0 <= self.fl.train_slots <= 1024:
            raise ConfigError("fl.train_slots: must be between 0 (no limit) and 1024")
        if self.fl.train_slots and not self.fl.train_slots_dir:
            raise ConfigError("fl.train_slots_dir: must be set when fl.train_slots is")
        dev = self.fl.device
        if dev not in ("auto", "cpu", "mps", "cuda") and not (
            dev.startswith("cuda:") and dev[5:].isdigit()
        ):
            raise ConfigError(f"fl.device: {dev!r} is not auto, cpu, mps, cuda or cuda:N")

    def data_path(self, home: Path) -> Path:
        return Path(home) / self.data_dir

    def fl_data_path(self, home: Path) -> Path:
        """This node's training data directory (``fl.data_dir``, relative to the home)."""
        return Path(home) / (self.fl.data_dir or FL_DATA_DIR)

    def rpc_url(self) -> str:
        """The URL a local client uses to reach this node's RPC (0.0.0.0 -> loopback)."""
        host, port = parse_host_port(self.rpc.listen)
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"


def _tcp_multiaddr(key: str, text: str, *, peer: bool) -> Multiaddr:
    try:
        ma = Multiaddr.parse(text)
        ma.tcp_endpoint()
    except MultiaddrError as e:
        raise ConfigError(f"{key}: {e}") from e
    if peer and ma.peer_id is None:
        raise ConfigError(f"{key}: {text!r} lacks the /p2p/<peer id> suffix")
    if not peer and ma.peer_id is not None:
        raise ConfigError(f"{key}: a listen or external address takes no /p2p/ suffix")
    return ma


def parse_host_port(text: str, *, key: str = "address") -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) -> (host, port); ConfigError naming ``key``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: {text!r} is not host:port with a port from 0 to 65535")
    return host.removeprefix("[").removesuffix("]"), int(port)


# --------------------------------------------------------------------------- parsing


def _build(cls: type[Any], doc: dict[str, Any], prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        f = fields.get(key)
        if f is None:
            raise ConfigError(f"{path}: unknown key (known: {', '.join(sorted(fields))})")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a table [{path}]")
            kwargs[key] = _build(type(default), value, f"{path}.")
        elif isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise ConfigError(f"{path}: expected an array of strings")
            kwargs[key] = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: expected true or false")
            kwargs[key] = value
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{path}: expected an integer")
            kwargs[key] = value
        else:
            if not isinstance(value, str):
                raise ConfigError(f"{path}: expected a string")
            kwargs[key] = value
    return cls(**kwargs)


def parse_config(text: str, *, source: str = "config.toml") -> Config:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from e
    cfg = _build(Config, doc, "")
    assert isinstance(cfg, Config)
    try:
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from e
    return cfg


def load_config(path: Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise ConfigError(f"no config file at {path} (run `fedchain init`)") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    try:
        return parse_config(text, source=str(path))
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from e


# --------------------------------------------------------------------------- writing

TEMPLATE = """\
# fedchain node configuration. Settings shared by the whole network live in genesis.json.

# A human-readable name for this node (shown by `fedchain status` and the RPC).
moniker = {moniker}
# debug | info | warning | error
log_level = {log_level}
# Block store, state and blobs; relative to the home directory.
data_dir = {data_dir}
# At start the databases are checked for damaged pages (SQLite quick_check) for at most
# this many seconds; what is left is checked as it is read. 0: no check.
db_check_seconds = {db_check_seconds}

[p2p]
# The multiaddr to listen on for libp2p connections.
listen = {p2p_listen}
# The address other nodes should dial (e.g. behind NAT); empty: the listen address.
external = {p2p_external}
# Peers dialled once at start to discover the network: /ip4/HOST/tcp/PORT/p2p/PEERID.
bootstrap = {p2p_bootstrap}
# Peers this node keeps connected to, redialling with backoff.
persistent_peers = {p2p_persistent_peers}
max_peers = {p2p_max_peers}
# Seconds an inbound connection has to send its first byte, and to finish its handshake.
first_byte_timeout = {p2p_first_byte_timeout}
handshake_timeout = {p2p_handshake_timeout}
# Inbound connections in their handshake, in all and from one IP; past a cap the one
# that made the least progress (idle first) is dropped for the newcomer.
max_pending_upgrades = {p2p_max_pending_upgrades}
max_pending_upgrades_per_ip = {p2p_max_pending_upgrades_per_ip}
# Connections kept per peer ID (the newest and the ones this node dialled), streams a
# peer may open on one connection, and the bytes all of a connection's stream windows
# may add up to (what a peer can make this node buffer; unread streams stay at 256 KiB).
max_connections_per_peer = {p2p_max_connections_per_peer}
max_inbound_streams = {p2p_max_inbound_streams}
connection_buffer_bytes = {p2p_connection_buffer_bytes}

[rpc]
# host:port of the HTTP RPC; keep it on 127.0.0.1 unless a proxy guards it.
listen = {rpc_listen}
# Largest accepted POST body in bytes.
max_body_bytes = {rpc_max_body_bytes}
# Seconds a connection has to send a complete request head (after connecting, or from
# the first byte after a response), to sit idle between requests, and to send a body.
header_timeout = {rpc_header_timeout}
idle_timeout = {rpc_idle_timeout}
body_timeout = {rpc_body_timeout}
# Open connections in all and per client IP; past a cap the one waiting longest for a
# request goes, or the newcomer gets 503 when every one is busy.
max_connections = {rpc_max_connections}
max_connections_per_ip = {rpc_max_connections_per_ip}
# Host header names answered besides IP literals, localhost and the listen host (a
# defence against DNS rebinding); add a reverse proxy's name here, or "*" for any.
allowed_hosts = {rpc_allowed_hosts}

[fl]
# Train and publish model updates when this node is a trainer in genesis or by stake.
trainer = {fl_trainer}
# This participant's own training data: train-images-idx3-ubyte and train-labels-idx1-ubyte
# (raw or .gz, MNIST's IDX format), e.g. one directory of `fedchain data split`. Relative
# to this home; empty: train_data. A trainer without it does not start. The public test
# set is read from t10k-* files there, else from $FEDCHAIN_DATA_DIR or the user cache.
data_dir = {fl_data_dir}
torch_threads = {fl_torch_threads}
# auto | cpu | cuda | cuda:N | mps
device = {fl_device}
# Test images (the first N of the 10,000) this node evaluates each global model on for
# /status and /fl/history.
eval_samples = {fl_eval_samples}
# Nodes sharing one machine (a local testnet) take turns: at most train_slots of the nodes
# that name the same train_slots_dir train at once. 0: no limit (one node per machine).
train_slots = {fl_train_slots}
train_slots_dir = {fl_train_slots_dir}
"""


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    # A JSON string literal is a valid TOML basic string for printable text.
    return json.dumps(str(v))


def render_config(cfg: Config) -> str:
    """The documented TOML for ``cfg``; ``parse_config(render_config(c)) == c``."""
    cfg.validate()
    values: dict[str, str] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            for sf in dataclasses.fields(v):
                values[f"{f.name}_{sf.name}"] = _toml(getattr(v, sf.name))
        else:
            values[f.name] = _toml(v)
    return TEMPLATE.format(**values)
