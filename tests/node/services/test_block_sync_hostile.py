"""Hostile sync peers (issue 15, item 9): a lag probe reply of many MiB, a batch of big
blocks, and certificates that do not verify. The probing node's event loop keeps turning,
and the liar is reported and disconnected."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from consensus.types import Commit
from node.ledger.block import Block, Header, txs_root
from node.ledger.tx import Transfer, sign_tx
from node.p2p.host import Host
from node.p2p.peer_id import PeerID
from node.p2p.reqresp import RequestResponse
from node.services.block_sync import (
    BLOCKS_PROTOCOL,
    PROBE_MAX_BYTES,
    PROBE_PROTOCOL,
    BadSyncPeer,
    BlocksResponse,
    BlockSync,
    CertifiedHeader,
    InvalidSyncData,
    ProbeResponse,
    SyncedBlock,
)
from tests.helpers import wait_for
from tests.kits.genesis import make_genesis
from tests.node.daemon.chainkit import Chain, connect


def _big_block(txs_per_block: int) -> Block:
    """A block of height 1 that decodes (it is not on any chain): many copies of one tx."""
    g, vk, tk = make_genesis(2, n_trainers=1, chain_id="liar")
    tx = sign_tx(tk[0], g.chain_id, 0, g.fees, Transfer(vk[0].address, 1))
    txs = (tx,) * txs_per_block
    header = Header(
        chain_id="liar",
        height=1,
        time_ms=1,
        prev_hash=bytes(32),
        proposer=bytes(20),
        txs_root=txs_root(txs),
        last_commit_hash=bytes(32),
        app_hash=bytes(32),
        validators_hash=bytes(32),
        fl_round=0,
        global_model_hash=bytes(32),
    )
    return Block(header, txs, None)


def _unsigned(block_hash: bytes) -> Commit:
    """A certificate for height 1 without a single signature."""
    return Commit(1, 0, block_hash, ())


def _huge_reply() -> bytes:
    """A reply of about 12 MB that decodes as BlocksResponse and takes seconds to."""
    block = _big_block(8000)
    items = tuple(SyncedBlock(block, _unsigned(block.hash)) for _ in range(8))
    return BlocksResponse(2**40, items).encode()


class LoopWatch:
    """The longest the event loop went without running a 5 ms ticker."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            last = now

    async def __aenter__(self) -> LoopWatch:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0.02)
        self.longest = 0.0
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        await asyncio.sleep(0.05)  # the ticker measures a stall only once it runs again
        self._task.cancel()


Serve = Callable[[PeerID, bytes], Awaitable[bytes]]


@pytest.fixture
async def prober(tmp_path: Path, hosts: list[Host]) -> AsyncIterator[BlockSync]:
    """hosts[1] runs a fresh node's block sync, connected to hosts[0] (the liar)."""
    node = Chain.build(tmp_path / "fresh").nodes[0]
    assert node.app.commits is not None
    sync = BlockSync(
        hosts[1], node.ledger, node.app.commits, node.app.apply_committed, checkpoint=lambda: None
    )
    await connect(hosts[1], hosts[0])
    yield sync


def _liar(host: Host, reply: bytes) -> None:
    async def serve(peer: PeerID, request: bytes) -> bytes:
        return reply

    for protocol in (BLOCKS_PROTOCOL, PROBE_PROTOCOL):
        RequestResponse(host, protocol, serve)


async def test_a_probe_reply_of_many_mib_is_refused_without_stalling_the_loop(
    prober: BlockSync, hosts: list[Host]
) -> None:
    _liar(hosts[0], _huge_reply())
    async with LoopWatch() as watch:
        started = time.monotonic()
        with pytest.raises(BadSyncPeer):
            await prober.probe(hosts[0].peer_id)
        took = time.monotonic() - started
    # Refused at its length prefix: nothing of it was decoded on (or off) the loop.
    assert watch.longest < 0.5, f"the event loop stalled for {watch.longest:.2f} s"
    assert took < 2.0


async def test_a_batch_of_big_blocks_is_decoded_off_the_event_loop(
    prober: BlockSync, hosts: list[Host]
) -> None:
    _liar(hosts[0], _huge_reply())
    async with LoopWatch() as watch:
        started = time.monotonic()
        assert await prober.sync() == 0
        took = time.monotonic() - started
    # Decoding takes most of the time; on the loop it would be one pause that long.
    # Off the loop, only the C parser's single call holds the interpreter at a stretch.
    assert watch.longest < 0.5 * took, f"loop stalled {watch.longest:.2f} s of {took:.2f} s"
    assert prober.counters["sync_bad_peer"] == 1


@pytest.mark.parametrize("what", ["probe", "sync"])
async def test_a_peer_whose_certificates_do_not_verify_is_reported_and_disconnected(
    prober: BlockSync, hosts: list[Host], what: str
) -> None:
    block = _big_block(1)
    replies = {
        PROBE_PROTOCOL: ProbeResponse(5, (CertifiedHeader(block.header, _unsigned(block.hash)),)),
        BLOCKS_PROTOCOL: BlocksResponse(5, (SyncedBlock(block, _unsigned(block.hash)),)),
    }
    for protocol, reply in replies.items():
        data = reply.encode()

        async def serve(peer: PeerID, request: bytes, data: bytes = data) -> bytes:
            return data

        RequestResponse(hosts[0], protocol, serve)
    reports: list[tuple[PeerID, str]] = []
    hosts[1].add_misbehaviour_hook(lambda p, r: reports.append((p, r)))
    liar = hosts[0].peer_id
    if what == "probe":
        with pytest.raises(InvalidSyncData):
            await prober.probe(liar)
    else:
        assert await prober.sync() == 0
    assert reports == [(liar, "sync_invalid_data")]
    await wait_for(lambda: not hosts[1].is_connected(liar), 5, "the liar disconnected")
    assert prober.ledger.height == 0


async def test_an_undecodable_probe_reply_is_blamed_on_the_peer(
    prober: BlockSync, hosts: list[Host]
) -> None:
    _liar(hosts[0], b"\x93\x00")
    reports: list[tuple[PeerID, str]] = []
    hosts[1].add_misbehaviour_hook(lambda p, r: reports.append((p, r)))
    with pytest.raises(InvalidSyncData):
        await prober.probe(hosts[0].peer_id)
    assert reports == [(hosts[0].peer_id, "sync_invalid_data")]


async def test_a_slow_peer_is_not_blamed(prober: BlockSync, hosts: list[Host]) -> None:
    """Timing out is no misbehaviour: the peer may be loaded or far away."""
    never = asyncio.Event()

    async def stall(peer: PeerID, request: bytes) -> bytes:
        await never.wait()
        return b""

    RequestResponse(hosts[0], PROBE_PROTOCOL, stall)
    reports: list[tuple[PeerID, str]] = []
    hosts[1].add_misbehaviour_hook(lambda p, r: reports.append((p, r)))
    with pytest.raises(BadSyncPeer) as info:
        await prober.probe(hosts[0].peer_id, timeout=0.3)
    assert not isinstance(info.value, InvalidSyncData)
    assert reports == [] and hosts[1].is_connected(hosts[0].peer_id)


def test_the_largest_honest_probe_reply_fits_the_budget() -> None:
    from consensus.types import MAX_VALIDATORS, CommitSig

    sigs = tuple(CommitSig(i.to_bytes(20, "big"), b"\xff" * 64) for i in range(MAX_VALIDATORS))
    header = _big_block(1).header.replace(chain_id="c" * 64, height=2**64 - 1)
    item = CertifiedHeader(header, Commit(2**64 - 1, 2**32 - 1, b"\xff" * 32, sigs))
    assert len(ProbeResponse(2**64 - 1, (item, item)).encode()) <= PROBE_MAX_BYTES
