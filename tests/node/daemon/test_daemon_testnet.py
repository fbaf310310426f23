"""Four `fedchain start` processes on 127.0.0.1: blocks commit and agree, FL rounds close
end to end, a SIGKILLed node restarts and catches up, and SIGTERM stops every node cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node.config import Config, FLConfig, P2PConfig, RPCConfig
from node.home import Home, init_home
from node.home import testnet_init as make_testnet_homes
from tests.helpers import free_base_port, wait_until

pytestmark = pytest.mark.slow

N = 4


class NodeExited(AssertionError):
    """A node process ended while the test waited for something."""


class LocalTestnet:
    def __init__(self, root: Path, base: int) -> None:
        self.root = root
        self.base = base
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.rpc_ports = {i: base + 2 * i + 1 for i in range(N)}

    def start(self, i: int, *extra: str) -> None:
        log = open(self.root / f"node{i}.log", "ab")  # noqa: SIM115 (owned by the process)
        self.procs[i] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "node.cli",
                "start",
                "--home",
                str(self.root / f"node{i}"),
                "--max-train-samples",
                "200",
                "--eval-samples",
                "500",
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()

    def status(self, i: int) -> dict[str, Any] | None:
        return self.get(i, "/status")

    def get(self, i: int, path: str) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.rpc_ports[i]}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                data: dict[str, Any] = json.loads(r.read())
                return data
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def wait(self, what: str, pred: Callable[[], bool], timeout: float) -> None:
        """Wait for ``pred``; fail at once when a node exits, with node0's log on timeout."""
        t0 = time.monotonic()

        def ready() -> bool:
            for i, p in self.procs.items():
                if p.poll() is not None:
                    raise NodeExited(f"node{i} exited with {p.returncode}: {self.tail(i)}")
            return pred()

        try:
            wait_until(ready, timeout, what, interval=0.5)
        except NodeExited:
            raise
        except AssertionError as e:
            raise AssertionError(f"{e}; node0: {self.tail(0)}") from None
        print(f"{what}: {time.monotonic() - t0:.1f}s", file=sys.stderr)

    def tail(self, i: int) -> str:
        path = self.root / f"node{i}.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def stop_all(self) -> dict[int, int]:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = {}
        for i, p in self.procs.items():
            try:
                codes[i] = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[i] = p.wait()
        return codes

    def kill_all(self) -> None:
        """Test teardown: SIGKILL every node still running (resumed first, in case a test
        left one SIGSTOPped)."""
        for p in self.procs.values():
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait()


@pytest.fixture
def testnet(tmp_path: Path, mnist_dir: Path) -> Iterator[LocalTestnet]:
    base = free_base_port(2 * N)
    make_testnet_homes(tmp_path, N, base_port=base, fl_data_dir=str(mnist_dir))
    net = LocalTestnet(tmp_path, base)
    try:
        yield net
    finally:
        net.kill_all()


def _heights(net: LocalTestnet) -> list[int]:
    out = []
    for i in range(N):
        s = net.status(i)
        out.append(-1 if s is None else int(s["latest_height"]))
    return out


def test_four_processes_agree_train_and_recover(testnet: LocalTestnet) -> None:
    for i in range(N):
        testnet.start(i)
    testnet.wait("every node past an FL round", lambda: _rounds_min(testnet) >= 2, 150)
    common = min(_heights(testnet))
    blocks = [testnet.get(i, f"/blocks/{common}") for i in range(N)]
    assert all(b is not None for b in blocks)
    assert len({json.dumps(b, sort_keys=True) for b in blocks}) == 1

    # A node killed mid-run restarts, syncs the blocks it missed and agrees.
    victim = testnet.procs.pop(N - 1)
    victim.kill()
    victim.wait()
    before = max(_heights(testnet)[: N - 1])
    testnet.wait("the others to move on", lambda: min(_heights(testnet)[: N - 1]) > before + 2, 60)
    testnet.start(N - 1)
    testnet.wait(
        "the restarted node to catch up",
        lambda: _heights(testnet)[N - 1] >= max(_heights(testnet)[: N - 1]) - 1,
        90,
    )
    h = min(_heights(testnet))
    hashes = {json.dumps(testnet.get(i, f"/blocks/{h}"), sort_keys=True) for i in range(N)}
    assert len(hashes) == 1

    def holds_the_current_model(i: int) -> bool:
        info = testnet.get(i, "/model/info")
        return (
            info is not None
            and info["available"] is True
            and info["model_hash"] == info["chain_model_hash"]
        )

    testnet.wait(
        "every node to hold the current global model",
        lambda: all(map(holds_the_current_model, range(N))),
        30,
    )

    # A fifth node joins late through --bootstrap: it syncs the chain and fetches the
    # current global model by hash instead of replaying the rounds.
    rpc = free_base_port(2 * N)
    init_home(
        testnet.root / f"node{N}",
        genesis_file=testnet.root / "genesis.json",
        config=Config(
            moniker="late",
            p2p=P2PConfig(listen="/ip4/127.0.0.1/tcp/0"),
            rpc=RPCConfig(listen=f"127.0.0.1:{rpc}"),
            fl=FLConfig(trainer=False),
        ),
    )
    testnet.rpc_ports[N] = rpc
    boot = f"/ip4/127.0.0.1/tcp/{testnet.base}/p2p/{Home(testnet.root / 'node0').peer_id()}"
    testnet.start(N, "--bootstrap", boot)

    def joined() -> bool:
        late, first = testnet.status(N), testnet.status(0)
        return (
            late is not None
            and first is not None
            and not late["catching_up"]
            and late["latest_height"] >= first["latest_height"] - 1
        )

    testnet.wait("the late node to join", joined, 90)
    late_status = testnet.status(N)
    assert late_status is not None
    h = min(*_heights(testnet), int(late_status["latest_height"]))
    late_block = testnet.get(N, f"/blocks/{h}")
    assert late_block is not None
    assert json.dumps(late_block, sort_keys=True) == json.dumps(
        testnet.get(0, f"/blocks/{h}"), sort_keys=True
    )

    def has_current_model() -> bool:
        info = testnet.get(N, "/model/info")
        return info is not None and info["model_hash"] == info["chain_model_hash"]

    testnet.wait("the late node to hold the current model", has_current_model, 30)

    codes = testnet.stop_all()
    assert codes == dict.fromkeys(range(N + 1), 0), codes
    for i in range(N + 1):
        assert "node stopped" in testnet.tail(i)


def _rounds_min(net: LocalTestnet) -> int:
    rounds = []
    for i in range(N):
        s = net.status(i)
        rounds.append(-1 if s is None else int(s["fl_round"]))
    return min(rounds)
