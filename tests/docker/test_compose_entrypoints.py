"""The compose entry scripts (docker/compose-*.sh) with a fake `fedchain` on PATH.

They decide whether a restarted compose project keeps its chain: `init` must generate
the testnet exactly once, and a node must take its home from the shared volume only on
first start, then exec the daemon with its own home.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[2] / "docker"

# Records its arguments; for `testnet init` it writes homes like the real command.
FAKE_FEDCHAIN = """#!/bin/sh
echo "$*" >> "$FAKE_LOG"
if [ "$1 $2" = "testnet init" ]; then
    dir=""; prev=""
    for a in "$@"; do [ "$prev" = "--dir" ] && dir="$a"; prev="$a"; done
    mkdir -p "$dir"
    echo '{"chain_id": "c"}' > "$dir/genesis.json"
    for n in node0 node1 node2 node3; do
        mkdir -p "$dir/$n/data"; echo "moniker = \\"$n\\"" > "$dir/$n/config.toml"
    done
fi
exit "${FAKE_RC:-0}"
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "fedchain"
    fake.write_text(FAKE_FEDCHAIN)
    fake.chmod(0o755)
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    (tmp_path / "home").mkdir()
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FEDCHAIN_TESTNET_DIR": str(tmp_path / "testnet"),
        "FEDCHAIN_HOME": str(tmp_path / "home"),
        "FEDCHAIN_DATA_DIR": str(tmp_path / "mnist"),
        "FEDCHAIN_NODES": "4",
    }


def run(script: str, env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(DOCKER / script)],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=30,
    )


def calls(env: dict[str, str]) -> list[str]:
    log = Path(env["FAKE_LOG"])
    return log.read_text().splitlines() if log.exists() else []


def test_init_generates_once_and_keeps_the_testnet(env: dict[str, str]) -> None:
    r = run(
        "compose-init.sh",
        env,
        FEDCHAIN_ENGINE="solo",
        FEDCHAIN_PARTITION="dirichlet:0.5",
        FEDCHAIN_MODEL="cnn",
    )
    assert r.returncode == 0, r.stderr
    testnet = Path(env["FEDCHAIN_TESTNET_DIR"])
    assert (testnet / "genesis.json").is_file()
    assert (testnet / "node3" / "config.toml").is_file()
    assert (testnet / ".compose-initialised").is_file()
    assert not (testnet / ".staging").exists()
    (cmd,) = calls(env)
    assert "--nodes 4" in cmd
    assert "--hostnames node0,node1,node2,node3" in cmd
    assert "--engine solo --partition dirichlet:0.5 --model cnn" in cmd
    genesis = (testnet / "genesis.json").stat().st_mtime_ns

    again = run("compose-init.sh", env)
    assert again.returncode == 0
    assert "already initialised" in again.stdout
    assert len(calls(env)) == 1  # no second `testnet init`: keys and genesis kept
    assert (testnet / "genesis.json").stat().st_mtime_ns == genesis


def test_failed_init_publishes_nothing_and_is_redone(env: dict[str, str]) -> None:
    assert run("compose-init.sh", env, FAKE_RC="1").returncode != 0
    assert not (Path(env["FEDCHAIN_TESTNET_DIR"]) / ".compose-initialised").exists()
    assert run("compose-init.sh", env).returncode == 0
    assert len(calls(env)) == 2


def test_node_copies_its_home_once_then_execs_the_daemon(env: dict[str, str]) -> None:
    assert run("compose-init.sh", env).returncode == 0
    r = run("compose-node.sh", env, FEDCHAIN_NODE_NAME="node2")
    assert r.returncode == 0, r.stderr
    home = Path(env["FEDCHAIN_HOME"])
    assert (home / "config.toml").read_text() == 'moniker = "node2"\n'
    assert (home / "data").is_dir()
    assert calls(env)[-1] == f"start --home {home}"

    (home / "config.toml").write_text("edited by the node\n")
    assert run("compose-node.sh", env, FEDCHAIN_NODE_NAME="node2").returncode == 0
    assert (home / "config.toml").read_text() == "edited by the node\n"


def test_init_fails_clearly_without_mnist(env: dict[str, str], tmp_path: Path) -> None:
    """Only the init service reads MNIST (it splits it into the homes' shards)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("compose-init.sh", env, FEDCHAIN_DATA_DIR=str(empty))
    assert r.returncode == 1
    assert "no MNIST" in r.stderr
    assert calls(env) == []
    assert not (Path(env["FEDCHAIN_TESTNET_DIR"]) / ".compose-initialised").exists()


def test_node_fails_clearly_without_init(env: dict[str, str]) -> None:
    r = run("compose-node.sh", env, FEDCHAIN_NODE_NAME="node0", FEDCHAIN_INIT_TIMEOUT="1")
    assert r.returncode == 1
    assert "no initialised testnet" in r.stderr

    assert run("compose-init.sh", env).returncode == 0
    r = run("compose-node.sh", env, FEDCHAIN_NODE_NAME="node9")
    assert r.returncode == 1
    assert "node9/config.toml does not exist" in r.stderr
    assert not any(c.startswith("start") for c in calls(env))


def test_compose_file_validates_with_loopback_only_ports(tmp_path: Path) -> None:
    """`docker-compose config` accepts the file; every published port is on 127.0.0.1."""
    exe = "docker-compose"
    if subprocess.run(["sh", "-c", f"command -v {exe}"], capture_output=True).returncode:
        pytest.skip("docker-compose is not installed")
    root = DOCKER.parent
    env = {**os.environ, "FEDCHAIN_MNIST_DIR": str(tmp_path)}
    services = subprocess.run(
        [exe, "-f", str(root / "docker-compose.yml"), "config", "--services"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert sorted(services) == ["init", "node0", "node1", "node2", "node3"]
    rendered = subprocess.run(
        [exe, "-f", str(root / "docker-compose.yml"), "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    published = [ln.strip() for ln in rendered.splitlines() if ln.strip().endswith(":26657/tcp")]
    assert len(published) == 4
    assert all(p.startswith("- 127.0.0.1:") for p in published), published
    for i in range(4):
        assert f"- node{i}:/home/fedchain/node:rw" in rendered  # a volume per node
    assert rendered.count("init: true") == 5
    assert f"- {tmp_path}:/data/mnist:ro" in rendered
    assert rendered.count(":/data/mnist:ro") == 1  # init's alone: nodes get their own shard
