"""Four `fedchain start` processes: one is paused (SIGSTOP) while the other three commit
more heights than the consensus engine's own catch-up reaches; resumed, it notices, block
syncs, restarts consensus at the chain's height and agrees with the others. A peer that
then claims a far greater height without certificates does not make it pause again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from consensus.tendermint.engine import KEEP_DECISIONS
from node.home import Home
from node.home import testnet_init as make_testnet_homes
from node.ledger.genesis import load_genesis, params_of
from node.p2p.host import Host
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import IdentityKey, PeerID
from node.p2p.reqresp import HandlerError, RequestResponse
from node.services.blob_sync import BLOB_PROTOCOL
from node.services.block_sync import (
    BLOCKS_PROTOCOL,
    CHECKPOINT_PROTOCOL,
    BlocksResponse,
    CheckpointResponse,
)
from tests.helpers import free_base_port
from tests.node.daemon.test_daemon_testnet import LocalTestnet

pytestmark = pytest.mark.slow

N = 4
LIE = 2**62  # the height a lying peer claims


@pytest.fixture
def fast_testnet(tmp_path: Path, mnist_dir: Path) -> Iterator[LocalTestnet]:
    base = free_base_port(2 * N)
    make_testnet_homes(tmp_path, N, base_port=base, fl_data_dir=str(mnist_dir))
    # No wait between heights, and a short wait for the paused proposer: the others get
    # far ahead of the paused node in seconds.
    genesis = load_genesis(tmp_path / "genesis.json")
    genesis = genesis.replace(
        consensus_params=params_of({"timeout_commit": 0, "timeout_propose": 1})
    )
    for path in [
        tmp_path / "genesis.json",
        *(tmp_path / f"node{i}" / "genesis.json" for i in range(N)),
    ]:
        genesis.save(path)
    net = LocalTestnet(tmp_path, base)
    try:
        yield net
    finally:
        net.kill_all()


class LyingPeer(threading.Thread):
    """A peer in this process (its own event loop) that dials ``target`` and answers every
    blocks or checkpoint request with a height of 2**62 and nothing to prove it. It speaks
    the blob protocol too, holding nothing, as a real node missing a blob would."""

    def __init__(self, target: str) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.served = 0
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        host = Host(IdentityKey.generate(), listen=[Multiaddr.parse("/ip4/127.0.0.1/tcp/0")])
        await host.start()

        async def blocks(peer: PeerID, request: bytes) -> bytes:
            self.served += 1
            return BlocksResponse(LIE, ()).encode()

        async def checkpoint(peer: PeerID, request: bytes) -> bytes:
            return CheckpointResponse(LIE, b"not a checkpoint").encode()

        async def blob(peer: PeerID, request: bytes) -> bytes:
            raise HandlerError("blob not found")

        RequestResponse(host, BLOCKS_PROTOCOL, blocks)
        RequestResponse(host, BLOB_PROTOCOL, blob)
        RequestResponse(host, CHECKPOINT_PROTOCOL, checkpoint)
        try:
            await host.connect(Multiaddr.parse(self.target))
            self._loop, self._done = asyncio.get_running_loop(), asyncio.Event()
            self.ready.set()
            await self._done.wait()
        finally:
            await host.close()

    def stop(self) -> None:
        if self._loop is not None and self._done is not None:
            self._loop.call_soon_threadsafe(self._done.set)
        self.join(timeout=10)


def _height(net: LocalTestnet, i: int) -> int:
    s = net.status(i)
    return -1 if s is None else int(s["latest_height"])


def test_paused_node_block_syncs_back_into_consensus(fast_testnet: LocalTestnet) -> None:
    net = fast_testnet
    for i in range(N):
        net.start(i)
    net.wait("every node at height 2", lambda: min(_height(net, i) for i in range(N)) >= 2, 90)
    victim = net.procs[N - 1]
    paused_at = _height(net, N - 1)
    os.kill(victim.pid, signal.SIGSTOP)
    try:
        # Three of four equal validators are a quorum: the chain goes on without it, past
        # the oldest decision the others still keep for peers that lag.
        target = paused_at + KEEP_DECISIONS + 2
        net.wait(
            f"the others past height {target}",
            lambda: min(_height(net, i) for i in range(N - 1)) >= target,
            150,
        )
    finally:
        os.kill(victim.pid, signal.SIGCONT)
    # From now on a liar is among its peers: it claims a far greater height (and a
    # checkpoint there) without certificates, and must change nothing.
    port = net.base + 2 * (N - 1)
    liar = LyingPeer(f"/ip4/127.0.0.1/tcp/{port}/p2p/{Home(net.root / f'node{N - 1}').peer_id()}")
    liar.start()
    try:
        assert liar.ready.wait(15), "the lying peer could not connect"

        def caught_up() -> bool:
            s = net.status(N - 1)
            return (
                s is not None
                and not s["catching_up"]
                and int(s["latest_height"]) >= max(_height(net, i) for i in range(N - 1)) - 1
            )

        net.wait("the paused node to catch up", caught_up, 60)
        net.wait("the liar to be probed", lambda: liar.served >= 1, 30)
        log = (net.root / f"node{N - 1}.log").read_text()
        assert "pausing consensus to sync" in log, net.tail(N - 1)
        # Back in consensus (not one lucky sync).
        h = _height(net, N - 1)
        net.wait("the resumed node to commit on", lambda: _height(net, N - 1) >= h + 3, 30)
    finally:
        liar.stop()
    status = net.status(N - 1)
    assert status is not None and not status["catching_up"]
    # ... and /metrics says so too: it paused at least once and applied synced blocks (the
    # last few heights may come through the engine's own catch-up instead).
    with urllib.request.urlopen(f"http://127.0.0.1:{net.rpc_ports[N - 1]}/metrics") as r:
        text = r.read().decode()
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["fedchain_catching_up"] == 0
    assert samples["fedchain_catchups_total"] >= 1
    assert samples["fedchain_blocks_synced_total"] >= 1
    log = (net.root / f"node{N - 1}.log").read_text()
    # Every pause names the probe that caused it: never the liar's claim.
    pauses = [line for line in log.splitlines() if "pausing consensus" in line]
    assert pauses and not any(f"claims {LIE}" in line for line in pauses), pauses
    common = min(_height(net, i) for i in range(N))
    blocks = [net.get(i, f"/blocks/{common}") for i in range(N)]
    assert all(b is not None for b in blocks)
    assert len({json.dumps(b, sort_keys=True) for b in blocks}) == 1
    codes = net.stop_all()
    assert codes == dict.fromkeys(range(N), 0), codes
