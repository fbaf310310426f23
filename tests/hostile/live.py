"""A live 4-node testnet for the hostile-peer suite, an attacker process to aim at it, and
the checks every attack is held to (issue 15).

``LiveNet`` runs real ``fedchain start`` processes (``node.testnet.runner``) with short FL
rounds on small shards, as ``test_hostile_trainer`` does, and a genesis whose empty blocks
come every ``EMPTY_BLOCKS`` seconds, so that "the chain keeps committing" is visible within
seconds whatever the FL round is doing. ``AttackerProc`` runs ``tests.hostile.toolkit`` as
a process of its own (its CPU and sockets are not the test's) and reads its JSON lines.

``LiveNet.under_attack`` asserts, while the attack is in force: the attacked node and the
others commit at least ``blocks`` new blocks and ``rounds`` new FL rounds; a fresh honest
identity connects to the attacked node and is served a ping within ``HONEST_DIAL_SECONDS``;
the attacked node's RSS stays below ``RSS_LIMIT_MB``; and afterwards, that every block
committed before the attack still has the hash it had (nothing committed was lost or
rewritten) and that no node exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from node.home import Home
from node.home import testnet_init as make_testnet_homes
from node.ledger.genesis import load_genesis, params_dict, params_of
from node.p2p import ping
from node.p2p.host import Host
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import IdentityKey
from node.testnet.runner import NodeProc, Testnet
from tests.helpers import free_base_port, wait_until

__all__ = [
    "HONEST_DIAL_SECONDS",
    "RSS_LIMIT_MB",
    "AttackerProc",
    "LiveNet",
    "Progress",
]

ROOT = Path(__file__).resolve().parents[2]
NODES = 4
SAMPLES = 200  # images per shard: an FL round takes seconds, not minutes
EVAL = 500
EMPTY_BLOCKS = 1  # seconds a height with nothing to do waits before its empty block
RSS_LIMIT_MB = 400.0
HONEST_DIAL_SECONDS = 2.0
HONEST_DIAL_TRIES = 3  # a dial may fail on a loaded machine; three in a row may not
RECHECKED = 16  # the newest blocks before an attack whose hashes are compared after it


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


async def _honest_dial(addr: Multiaddr, timeout: float) -> float:
    """Seconds for a fresh identity to connect to ``addr`` and get a ping answered."""
    host = Host(IdentityKey.generate())
    await host.start()
    try:
        t0 = time.monotonic()
        async with asyncio.timeout(timeout):
            peer = await host.connect(addr)
            await ping.ping(host, peer, count=1, timeout=timeout)
        return time.monotonic() - t0
    finally:
        await host.close()


@dataclass
class Progress:
    """What the network did while one attack was in force."""

    blocks: list[int]  # new blocks per node
    rounds: int  # new FL rounds on the attacked node
    dial_seconds: list[float]  # honest dials that succeeded, in order
    dial_failures: list[str]
    rss_mb: float  # the attacked node's largest RSS seen


class AttackerProc:
    """``python -m tests.hostile.toolkit ATTACK ...`` and its JSON lines."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._err = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.hostile.toolkit", *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.docs: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(raw))

    def expect(self, key: str, timeout: float) -> dict[str, Any]:
        """The first line with ``key`` (the attacker must still be running to send it)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                doc = self.lines.get(timeout=max(0.05, min(0.5, deadline - time.monotonic())))
            except queue.Empty:
                doc = None
            if doc is not None:
                self.docs.append(doc)
                if key in doc:
                    return doc
                continue
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"attacker gave no {key!r} line (rc {self.proc.poll()}): "
                    + self.log.read_text()[-3000:]
                )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> dict[str, Any]:
        """SIGTERM, wait for it to close its host, and return its final counts."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        self._err.close()
        while not self.lines.empty():
            self.docs.append(self.lines.get())
        done = [d for d in self.docs if "done" in d]
        return dict(done[-1]["counts"]) if done else {}


@dataclass
class LiveNet:
    directory: Path
    net: Testnet
    homes: list[Home]
    chain_id: str
    peer_ids: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, directory: Path, mnist_dir: Path) -> LiveNet:
        homes = make_testnet_homes(
            directory, NODES, base_port=free_base_port(2 * NODES), fl_data_dir=str(mnist_dir),
            eval_samples=EVAL,
        )  # fmt: skip
        shared = directory / "genesis.json"
        genesis = load_genesis(shared)
        opts = {**params_dict(genesis.consensus_params), "timeout_empty_blocks": EMPTY_BLOCKS}
        genesis = genesis.replace(consensus_params=params_of(opts))
        genesis.validate()
        for path in [shared, *sorted(directory.glob("node*/genesis.json"))]:
            genesis.save(path)
        net = Testnet.from_homes(directory, ("--max-train-samples", str(SAMPLES)))
        net.start()
        live = cls(directory, net, homes, genesis.chain_id)
        try:
            wait_until(
                lambda: all(s is not None for s in net.statuses()), 120, "every node's RPC",
                interval=0.5,
            )  # fmt: skip
            live.peer_ids = [str(s["node_id"]) for s in net.statuses() if s is not None]
            assert len(live.peer_ids) == NODES
            wait_until(lambda: live.min_height() >= 2, 120, "height 2 on every node", interval=0.5)
        except BaseException:
            net.stop()
            raise
        return live

    def stop(self) -> dict[int, int]:
        return self.net.stop()

    # ------------------------------------------------------------------ reading the nodes

    def node(self, i: int) -> NodeProc:
        return self.net.nodes[i]

    def status(self, i: int) -> dict[str, Any] | None:
        return self.node(i).status(timeout=5.0)

    def heights(self) -> list[int]:
        out = []
        for i in range(NODES):
            s = self.status(i)
            out.append(int(s["latest_height"]) if s is not None else -1)
        return out

    def min_height(self) -> int:
        return min(self.heights())

    def fl_round(self, i: int) -> int:
        s = self.status(i)
        return int(s["fl_round"]) if s is not None else -1

    def block_hashes(self, i: int, upto: int) -> dict[int, str]:
        """Hashes of block 1 and of the ``RECHECKED`` blocks up to ``upto``."""
        out = {}
        for h in sorted({1, *range(max(1, upto - RECHECKED + 1), upto + 1)}):
            b = self.node(i).get(f"/blocks/{h}", timeout=5.0)
            assert b is not None, f"node{i} lost block {h}"
            out[h] = str(b["hash"])
        return out

    def p2p_addr(self, i: int) -> Multiaddr:
        listen = Multiaddr.parse(self.homes[i].config().p2p.listen)
        host, port = listen.tcp_endpoint()
        return Multiaddr.parse(f"/ip4/{host}/tcp/{port}/p2p/{self.peer_ids[i]}")

    def standing(self, i: int, peer_id: str) -> dict[str, Any]:
        doc = self.node(i).get(f"/peers/{peer_id}", timeout=5.0)
        assert doc is not None, f"node{i} has no /peers/{{peer_id}} answer"
        return doc

    def events(self, i: int, layer: str) -> dict[str, float]:
        """``fedchain_events_total{layer=...}`` of node ``i``, by reason."""
        import urllib.request

        with urllib.request.urlopen(self.node(i).rpc_url + "/metrics", timeout=5.0) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name.endswith("events_total") and s.labels.get("layer") == layer:
                    out[s.labels["reason"]] = s.value
        return out

    def rss(self, i: int) -> float:
        proc = self.node(i).proc
        assert proc is not None
        return rss_mb(proc.pid)

    def honest_dial(self, i: int) -> float:
        return asyncio.run(_honest_dial(self.p2p_addr(i), HONEST_DIAL_SECONDS))

    # ------------------------------------------------------------------ attacks

    def attacker(self, attack: str, victim: int, log: Path, *, seconds: float = 90.0,
                 home: int | None = None) -> AttackerProc:  # fmt: skip
        args = [
            attack,
            "--target",
            str(self.p2p_addr(victim)),
            "--chain-id",
            self.chain_id,
            "--seconds",
            str(seconds),
            "--rpc",
            self.node(victim).rpc_url,
        ]
        if home is not None:
            args += ["--home", str(self.homes[home].path)]
        return AttackerProc(args, log)

    def assert_alive(self) -> None:
        assert not self.net.exited(), f"a node exited: {self.net.exited()}"

    def _dial_honestly(self, victim: int, failures: list[str]) -> float:
        for _ in range(HONEST_DIAL_TRIES):
            try:
                return self.honest_dial(victim)
            except Exception as e:  # any failure of the honest dial is a finding
                failures.append(repr(e))
        raise AssertionError(
            f"a fresh honest peer could not connect to node{victim} within "
            f"{HONEST_DIAL_SECONDS} s, {HONEST_DIAL_TRIES} times: {failures}"
        )

    def under_attack(
        self,
        attacker: AttackerProc,
        victim: int,
        *,
        blocks: int = 3,
        rounds: int = 1,
        timeout: float = 45.0,
        engage_timeout: float = 30.0,
    ) -> Progress:
        """Wait for the attack to be in force, then hold the network to the checks of the
        module docstring while it lasts; the attacker must still be attacking at the end."""
        self.assert_alive()
        before = self.min_height()
        committed = self.block_hashes(victim, before)
        attacker.expect("engaged", engage_timeout)
        h0 = self.heights()
        r0 = self.fl_round(victim)
        peak = [self.rss(victim)]
        dials: list[float] = []
        failures: list[str] = []
        seen: dict[str, Any] = {}

        def held() -> bool:
            self.assert_alive()
            peak[0] = max(peak[0], self.rss(victim))
            assert peak[0] < RSS_LIMIT_MB, f"node{victim} RSS {peak[0]:.0f} MB under attack"
            if len(dials) < 2:
                dials.append(self._dial_honestly(victim, failures))
            seen["new"] = [h - b for h, b in zip(self.heights(), h0, strict=True)]
            seen["rounds"] = self.fl_round(victim) - r0
            return min(seen["new"]) >= blocks and seen["rounds"] >= rounds and len(dials) >= 2

        wait_until(
            held,
            timeout,
            f"{blocks} new blocks on every node and {rounds} new FL rounds on node{victim} "
            f"under attack (got {seen})",
            interval=0.5,
        )
        assert attacker.alive(), "the attack ended before the checks did"
        after = self.block_hashes(victim, before)
        assert after == committed, "blocks committed before the attack changed"
        for i in range(NODES):
            if i != victim:
                assert self.block_hashes(i, before) == committed, f"node{i} disagrees"
        return Progress(seen["new"], seen["rounds"], dials, failures, peak[0])
