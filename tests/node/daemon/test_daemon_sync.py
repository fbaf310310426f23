"""Block sync and blob fetch between real Hosts on 127.0.0.1, including lying peers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from consensus.types import Commit
from node.app.application import NodeApp
from node.app.mempool import Mempool
from node.ledger.block import Block
from node.ledger.tx import Transfer, sign_tx
from node.p2p.host import Host
from node.p2p.peer_id import PeerID
from node.p2p.reqresp import RequestResponse
from node.services.blob_sync import BLOB_PROTOCOL, BlobSync, BlobUnavailable
from node.services.block_sync import BLOCKS_PROTOCOL, BlocksResponse, BlockSync, SyncedBlock
from node.store.blobs import BlobStore
from node.store.commits import CommitStore
from node.store.ledger import Ledger
from node.store.models import ModelStore
from tests.node.daemon.chainkit import Chain, connect


def _fresh_app(chain: Chain, tmp: Path) -> NodeApp:
    ledger = Ledger.open(tmp / "chain.sqlite", chain.genesis, fsync=False)
    models = ModelStore(BlobStore(tmp / "blobs"), chain.genesis.fl)
    return NodeApp(ledger, Mempool(ledger.state), models, CommitStore(tmp / "commits.sqlite"))


def _source_chain(tmp_path: Path, blocks: int) -> Chain:
    chain = Chain.build(tmp_path / "src")
    g, a, b = chain.genesis, chain.keys[0], chain.keys[1]
    chain.add_tx(sign_tx(a, g.chain_id, 0, g.fees, Transfer(b.address, 7)))
    chain.run_until(lambda: min(chain.heights()) >= blocks)
    return chain


async def test_late_node_syncs_verified_blocks(tmp_path: Path, hosts: list[Host]) -> None:
    chain = _source_chain(tmp_path, 5)
    src = chain.nodes[0]
    assert src.app.commits is not None
    BlockSync(
        hosts[0], src.ledger, src.app.commits, src.app.apply_committed, checkpoint=lambda: None
    )
    joiner = _fresh_app(chain, tmp_path / "joiner")
    assert joiner.commits is not None
    sync = BlockSync(
        hosts[1], joiner.ledger, joiner.commits, joiner.apply_committed, checkpoint=lambda: None
    )
    await connect(hosts[1], hosts[0])
    applied = await sync.sync()
    assert applied == src.ledger.height >= 5
    assert joiner.ledger.app_hash() == src.ledger.app_hash()
    tip = src.ledger.height
    assert joiner.ledger.store.block(tip).hash == src.ledger.store.block(tip).hash  # type: ignore[union-attr]
    # The tip's certificate was stored, so the joiner can serve the tip in turn.
    assert sync.commit_for(tip) is not None


async def test_forged_certificate_is_refused(tmp_path: Path, hosts: list[Host]) -> None:
    chain = _source_chain(tmp_path, 2)
    src = chain.nodes[0]
    block1 = src.ledger.store.block(1)
    assert block1 is not None and src.app.commits is not None
    real = src.app.commits.commit(1)
    assert real is not None
    # A liar serves block 1 with a certificate stripped to a single signature.
    forged = Commit(real.height, real.round, real.block_hash, real.signatures[:1])

    async def lie(peer: PeerID, request: bytes) -> bytes:
        return BlocksResponse(1, (SyncedBlock(block1, forged),)).encode()

    RequestResponse(hosts[0], BLOCKS_PROTOCOL, lie)
    joiner = _fresh_app(chain, tmp_path / "joiner")
    assert joiner.commits is not None
    sync = BlockSync(
        hosts[1], joiner.ledger, joiner.commits, joiner.apply_committed, checkpoint=lambda: None
    )
    await connect(hosts[1], hosts[0])
    assert await sync.sync() == 0
    assert joiner.ledger.height == 0
    assert sync.counters["sync_bad_peer"] == 1


async def test_wrong_block_for_certificate_is_refused(tmp_path: Path, hosts: list[Host]) -> None:
    chain = _source_chain(tmp_path, 2)
    src = chain.nodes[0]
    b1, b2 = src.ledger.store.block(1), src.ledger.store.block(2)
    assert b1 is not None and b2 is not None and src.app.commits is not None
    c2 = src.app.commits.commit(2)
    assert c2 is not None

    async def lie(peer: PeerID, request: bytes) -> bytes:
        # Block 1 paired with block 2's (valid) certificate.
        return BlocksResponse(2, (SyncedBlock(b1, c2),)).encode()

    RequestResponse(hosts[0], BLOCKS_PROTOCOL, lie)
    joiner = _fresh_app(chain, tmp_path / "joiner")
    assert joiner.commits is not None
    sync = BlockSync(
        hosts[1], joiner.ledger, joiner.commits, joiner.apply_committed, checkpoint=lambda: None
    )
    await connect(hosts[1], hosts[0])
    assert await sync.sync() == 0 and joiner.ledger.height == 0


async def test_blob_fetch_verifies_and_skips_liars(tmp_path: Path, hosts: list[Host]) -> None:
    honest = BlobStore(tmp_path / "honest")
    data = b"global model bytes" * 1000
    digest = honest.put(data)
    BlobSync(hosts[0], honest)

    async def lie(peer: PeerID, request: bytes) -> bytes:
        return b"something else"

    RequestResponse(hosts[2], BLOB_PROTOCOL, lie)
    mine = BlobStore(tmp_path / "mine")
    fetcher = BlobSync(hosts[1], mine)
    await connect(hosts[1], hosts[2])
    with pytest.raises(BlobUnavailable):
        await fetcher.fetch(digest)
    assert fetcher.counters["blob_wrong_bytes"] == 1
    await connect(hosts[1], hosts[0])
    await fetcher.fetch_into_store([digest])
    assert mine.get(digest) == data
    assert hashlib.sha256(mine.get(digest)).digest() == digest
    with pytest.raises(BlobUnavailable):
        await fetcher.fetch(b"\x01" * 32)  # nobody has it


def test_synced_block_codec_roundtrip(tmp_path: Path) -> None:
    chain = _source_chain(tmp_path, 2)
    src = chain.nodes[0]
    b = src.ledger.store.block(2)
    c = src.app.commits.commit(2)  # type: ignore[union-attr]
    assert b is not None and c is not None
    item = SyncedBlock(b, c)
    resp = BlocksResponse(2, (item,))
    assert BlocksResponse.decode(resp.encode()) == resp
    assert isinstance(resp.blocks[0].block, Block)
