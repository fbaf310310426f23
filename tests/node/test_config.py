"""config.toml: the template round-trips, and every bad value is refused naming its key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.config import (
    Config,
    ConfigError,
    FLConfig,
    P2PConfig,
    RPCConfig,
    load_config,
    parse_config,
    render_config,
)

PEER = "/ip4/10.0.0.2/tcp/26656/p2p/12D3KooWJQcexYkFfCr85nDXPnTHZPRsEA7iHSf3byeMKTj2U6FX"


def test_defaults_round_trip_through_the_template() -> None:
    cfg = Config()
    text = render_config(cfg)
    assert "# " in text  # the written file documents itself
    assert parse_config(text) == cfg
    assert cfg.p2p.listen == "/ip4/0.0.0.0/tcp/26656"
    assert cfg.rpc.listen == "127.0.0.1:26657"
    assert cfg.rpc_url() == "http://127.0.0.1:26657"


def test_empty_file_means_defaults() -> None:
    assert parse_config("") == Config()


@given(
    moniker=st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF), min_size=1, max_size=64),
    port=st.integers(0, 65535),
    peers=st.lists(st.just(PEER), max_size=3),
    trainer=st.booleans(),
    threads=st.integers(1, 256),
)
def test_any_valid_config_round_trips(
    moniker: str, port: int, peers: list[str], trainer: bool, threads: int
) -> None:
    cfg = Config(
        moniker=moniker,
        p2p=P2PConfig(listen=f"/ip4/127.0.0.1/tcp/{port}", persistent_peers=tuple(peers)),
        rpc=RPCConfig(listen=f"127.0.0.1:{port}"),
        fl=FLConfig(trainer=trainer, torch_threads=threads, data_dir='/data/mnist "x"'),
    )
    if not moniker.isprintable():
        with pytest.raises(ConfigError, match="moniker"):
            render_config(cfg)
        return
    assert parse_config(render_config(cfg)) == cfg


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("monikr = 'x'", "monikr: unknown key"),
        ("[p2p]\npersistent_peer = []", "p2p.persistent_peer: unknown key"),
        ("moniker = 3", "moniker: expected a string"),
        ("[p2p]\nmax_peers = 'ten'", "p2p.max_peers: expected an integer"),
        ("[p2p]\nmax_peers = true", "p2p.max_peers: expected an integer"),
        ("[p2p]\nmax_peers = 0", "p2p.max_peers"),
        ("[p2p]\nfirst_byte_timeout = 0", "p2p.first_byte_timeout"),
        ("[p2p]\nmax_pending_upgrades_per_ip = 65", "p2p.max_pending_upgrades_per_ip"),
        ("[p2p]\nmax_connections_per_peer = 0", "p2p.max_connections_per_peer"),
        ("[p2p]\nmax_inbound_streams = 513", "p2p.max_inbound_streams"),
        ("[p2p]\nconnection_buffer_bytes = 1024", "p2p.connection_buffer_bytes"),
        ("[fl]\ntrainer = 1", "fl.trainer: expected true or false"),
        ("[fl]\ntorch_threads = 0", "fl.torch_threads"),
        ("[fl]\neval_samples = 10001", "fl.eval_samples"),
        ("[fl]\ntrain_slots = 2", "fl.train_slots_dir"),
        ("[fl]\ndevice = 'tpu'", "fl.device"),
        ("p2p = 1", "p2p: expected a table"),
        ("log_level = 'loud'", "log_level"),
        ("db_check_seconds = -1", "db_check_seconds"),
        ("[p2p]\nlisten = '/ip4/1.2.3.4/udp/1'", "p2p.listen"),
        ("[p2p]\nlisten = 'localhost:26656'", "p2p.listen"),
        ("[p2p]\nbootstrap = ['/ip4/1.2.3.4/tcp/1']", r"p2p.bootstrap\[0\]: .* lacks the /p2p/"),
        (f"[p2p]\npersistent_peers = ['{PEER}', '/ip4/1.2.3.4/tcp/x']", r"persistent_peers\[1\]"),
        ("[p2p]\npersistent_peers = 'a'", "p2p.persistent_peers: expected an array of strings"),
        (f"[p2p]\nexternal = '{PEER}'", "p2p.external: .*no /p2p/"),
        ("[rpc]\nlisten = '127.0.0.1'", "rpc.listen"),
        ("[rpc]\nlisten = '127.0.0.1:70000'", "rpc.listen"),
        ("[rpc]\nmax_body_bytes = 10", "rpc.max_body_bytes"),
        ("[rpc]\nheader_timeout = 0", "rpc.header_timeout"),
        ("[rpc]\nidle_timeout = 3601", "rpc.idle_timeout"),
        ("[rpc]\nbody_timeout = 0", "rpc.body_timeout"),
        ("[rpc]\nmax_connections = 0", "rpc.max_connections"),
        ("[rpc]\nmax_connections = 8\nmax_connections_per_ip = 9", "rpc.max_connections_per_ip"),
        ("[rpc]\nallowed_hosts = ['a b']", r"rpc.allowed_hosts\[0\]"),
        ("moniker = ", "not valid TOML"),
    ],
)
def test_errors_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_config(text)


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no config file .*fedchain init"):
        load_config(tmp_path / "config.toml")
    p = tmp_path / "config.toml"
    p.write_text("[rpc]\nlisten = 'nope'\n")
    with pytest.raises(ConfigError, match=re.escape(f"{p}: rpc.listen")):
        load_config(p)


def test_rpc_url_maps_wildcard_to_loopback() -> None:
    cfg = dataclasses.replace(Config(), rpc=RPCConfig(listen="0.0.0.0:9000"))
    assert cfg.rpc_url() == "http://127.0.0.1:9000"
    cfg = dataclasses.replace(Config(), rpc=RPCConfig(listen="[::1]:9000"))
    assert cfg.rpc_url() == "http://[::1]:9000"
