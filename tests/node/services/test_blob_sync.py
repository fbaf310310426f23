"""Blob sync on its own: requests that are not a hash or name no blob fail, blobs already
held are not fetched again, and a global model is kept only when its bytes are a model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fl.models import canonical_bytes, init_params, model_hash
from node.core.crypto import PrivateKey
from node.p2p.host import Host
from node.p2p.reqresp import RequestError, RequestResponse
from node.services.blob_sync import BLOB_PROTOCOL, BlobSync, BlobUnavailable
from node.store.blobs import BlobStore
from node.store.models import ModelStore
from tests.node.daemon.chainkit import connect, genesis_for

GENESIS = genesis_for([PrivateKey.from_secret("blob-sync")])


async def test_requests_that_name_no_blob_fail(tmp_path: Path, hosts: list[Host]) -> None:
    BlobSync(hosts[0], BlobStore(tmp_path / "server"))
    client = RequestResponse(hosts[1], BLOB_PROTOCOL)
    await connect(hosts[1], hosts[0])
    with pytest.raises(RequestError):
        await client.request(hosts[0].peer_id, b"short")  # not a SHA-256
    with pytest.raises(RequestError):
        await client.request(hosts[0].peer_id, b"\x05" * 32)  # nobody stored it


async def test_blobs_already_held_are_not_fetched(tmp_path: Path, hosts: list[Host]) -> None:
    mine = BlobStore(tmp_path / "mine")
    held = mine.put(b"a payload this node has")
    asked: list[object] = []
    sync = BlobSync(hosts[0], mine, peers=lambda: asked.append(1) or [])  # type: ignore[func-returns-value]
    await sync.fetch_into_store([held], round=0)
    assert asked == []  # no peer was even looked up
    with pytest.raises(BlobUnavailable):
        await sync.fetch_into_store([held, b"\x06" * 32], round=0)
    assert asked == [1]


async def test_a_global_model_is_kept_only_if_its_bytes_are_a_model(
    tmp_path: Path, hosts: list[Host]
) -> None:
    params = init_params(GENESIS.fl.model, 5)
    model = canonical_bytes(params)
    not_a_model = b"bytes that hash right but are no model" * 10
    server = BlobStore(tmp_path / "server")
    assert server.put(model) == model_hash(params)
    fake = server.put(not_a_model)
    BlobSync(hosts[0], server)
    mine = BlobStore(tmp_path / "mine")
    models = ModelStore(mine, GENESIS.fl)
    sync = BlobSync(hosts[1], mine)
    await connect(hosts[1], hosts[0])
    assert not await sync.fetch_model(models, fake, 1, tries=2, pause=0)
    assert not models.has(fake) and sync.counters["blob_fetched"] == 2  # fetched, refused
    assert await sync.fetch_model(models, model_hash(params), 1, pause=0)
    assert models.has(model_hash(params))
    assert hashlib.sha256(mine.get(model_hash(params))).digest() == model_hash(params)
    # Nobody has it: bounded by the tries, then False.
    assert not await sync.fetch_model(models, b"\x07" * 32, 1, tries=3, pause=0)
