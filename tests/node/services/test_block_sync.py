"""Block sync on its own: what it serves (bounded ranges, certificates from either store,
checkpoints), how far it syncs, and that a block which does not apply is the node's
failure, not a peer's (the daemon tests run it inside whole nodes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.types import Commit
from node.ledger.block import Block
from node.p2p.host import Host
from node.p2p.reqresp import RequestError, RequestResponse
from node.services.block_sync import (
    BLOCKS_PROTOCOL,
    CHECKPOINT_PROTOCOL,
    BlocksRequest,
    BlocksResponse,
    BlockSync,
)
from node.store.commits import CommitStore
from tests.node.daemon.chainkit import Chain, SimNode, connect


def _serving(host: Host, node: SimNode, commits: CommitStore | None = None) -> BlockSync:
    store = commits or node.app.commits
    assert store is not None
    return BlockSync(host, node.ledger, store, node.app.apply_committed, checkpoint=lambda: None)


def _chain(tmp_path: Path, height: int) -> Chain:
    chain = Chain.build(tmp_path / "src")
    chain.run_until(lambda: min(chain.heights()) >= height)
    return chain


async def _ask(client: RequestResponse, server: Host, start: int, count: int) -> BlocksResponse:
    raw = await client.request(server.peer_id, BlocksRequest(start, count).encode())
    return BlocksResponse.decode(raw)


async def test_serves_the_asked_range_clamped_to_the_tip(tmp_path: Path, hosts: list[Host]) -> None:
    chain = _chain(tmp_path, 5)
    src = chain.nodes[0]
    tip = src.ledger.height
    _serving(hosts[0], src)
    client = RequestResponse(hosts[1], BLOCKS_PROTOCOL)
    await connect(hosts[1], hosts[0])
    resp = await _ask(client, hosts[0], 1, 3)
    assert resp.tip == tip and [b.block.height for b in resp.blocks] == [1, 2, 3]
    resp = await _ask(client, hosts[0], 0, 3)  # heights 0..2, of which only 1 and 2 exist
    assert [b.block.height for b in resp.blocks] == [1, 2]
    resp = await _ask(client, hosts[0], tip - 1, 100)
    assert [b.block.height for b in resp.blocks] == [tip - 1, tip]
    assert (await _ask(client, hosts[0], tip + 1, 5)).blocks == ()
    for item in resp.blocks:  # every block travels with the certificate that decided it
        assert item.commit.height == item.block.height
        assert item.commit.block_hash == item.block.hash
    with pytest.raises(RequestError):
        await client.request(hosts[0].peer_id, b"\x00junk")


async def test_a_certificate_missing_from_the_commit_store_comes_from_the_next_block(
    tmp_path: Path, hosts: list[Host]
) -> None:
    """A node restored without its commit store still proves every block but its tip:
    block h+1 carries h's certificate as its last_commit."""
    chain = _chain(tmp_path, 4)
    src = chain.nodes[0]
    empty = CommitStore(tmp_path / "empty.sqlite")
    sync = _serving(hosts[0], src, empty)
    nxt = src.ledger.store.block(3)
    assert nxt is not None and nxt.last_commit is not None
    assert sync.commit_for(2) == nxt.last_commit
    assert sync.commit_for(src.ledger.height) is None
    empty.close()


async def test_sync_stops_at_the_height_asked_for(tmp_path: Path, hosts: list[Host]) -> None:
    chain = _chain(tmp_path, 6)
    src = chain.nodes[0]
    _serving(hosts[0], src)
    joiner = Chain.build(tmp_path / "joiner").nodes[0]
    sync = _serving(hosts[1], joiner)
    await connect(hosts[1], hosts[0])
    assert await sync.sync(until=2) == 2 and joiner.ledger.height == 2
    assert await sync.sync_from(hosts[0].peer_id, until=5) == 3
    assert joiner.ledger.height == 5
    assert await sync.sync() == src.ledger.height - 5  # no bound: up to the peer's tip
    assert joiner.ledger.app_hash() == src.ledger.app_hash()


async def test_a_block_that_does_not_apply_is_raised_not_blamed_on_the_peer(
    tmp_path: Path, hosts: list[Host]
) -> None:
    """Certified blocks that this node's ledger cannot apply mean this node is broken:
    sync raises (the catch-up supervisor stops the node) instead of trying other peers."""
    chain = _chain(tmp_path, 3)
    _serving(hosts[0], chain.nodes[0])
    joiner = Chain.build(tmp_path / "joiner").nodes[0]
    assert joiner.app.commits is not None

    def broken_apply(block: Block, commit: Commit) -> None:
        raise OSError("disk full")

    sync = BlockSync(
        hosts[1], joiner.ledger, joiner.app.commits, broken_apply, checkpoint=lambda: None
    )
    await connect(hosts[1], hosts[0])
    with pytest.raises(OSError, match="disk full"):
        await sync.sync()
    assert "sync_bad_peer" not in sync.counters


async def test_checkpoints_are_served_and_filtered_by_height(
    tmp_path: Path, hosts: list[Host]
) -> None:
    chain = _chain(tmp_path, 2)
    src = chain.nodes[0]
    assert src.app.commits is not None
    own: list[tuple[int, bytes]] = []
    BlockSync(
        hosts[0],
        src.ledger,
        src.app.commits,
        src.app.apply_committed,
        checkpoint=lambda: own[-1] if own else None,
    )
    asker = _serving(hosts[1], Chain.build(tmp_path / "asker").nodes[0])
    await connect(hosts[1], hosts[0])
    with pytest.raises(RequestError):  # no checkpoint yet: the request fails
        await RequestResponse(hosts[1], CHECKPOINT_PROTOCOL).request(hosts[0].peer_id, b"?")
    assert await asker.fetch_checkpoint(0) is None
    own.append((7, b"engine state"))
    cp = await asker.fetch_checkpoint(7)
    assert cp is not None and (cp.peer, cp.height, cp.data) == (
        hosts[0].peer_id,
        7,
        b"engine state",
    )
    assert await asker.fetch_checkpoint(8) is None  # older than asked for
    assert await asker.fetch_checkpoint(0, exclude={hosts[0].peer_id}) is None
