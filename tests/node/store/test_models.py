"""Global models by hash: canonical bytes round-trip, hostile bytes are typed errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fl.models import canonical_bytes, init_params, model_hash
from node.core.crypto import PrivateKey
from node.store.blobs import BlobStore
from node.store.models import ZERO_HASH, ModelBytesError, ModelStore, params_from_canonical
from tests.node.daemon.chainkit import genesis_for

PARAMS = init_params("cnn", 3)
DATA = canonical_bytes(PARAMS)


def test_roundtrip_and_hash_identity() -> None:
    back = params_from_canonical(DATA, "cnn")
    assert list(back) == list(PARAMS)
    assert all(np.array_equal(back[k], PARAMS[k]) for k in PARAMS)
    # The blob name (sha256 of the bytes) is the on-chain model hash.
    assert hashlib.sha256(DATA).digest() == model_hash(PARAMS)


@pytest.mark.parametrize(
    "data",
    [
        DATA[:-1],
        DATA + b"\x00",
        b"",
        b"x" * 64,
        canonical_bytes(init_params("fedavg_cnn", 0)),
    ],
    ids=["truncated", "trailing", "empty", "junk", "other-architecture"],
)
def test_bad_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(ModelBytesError):
        params_from_canonical(data, "cnn")


def test_non_finite_model_is_refused() -> None:
    bad = dict(PARAMS)
    first = next(iter(bad))
    arr = bad[first].copy()
    arr.flat[0] = np.nan
    bad[first] = arr
    with pytest.raises(ModelBytesError):
        params_from_canonical(canonical_bytes(bad), "cnn")


@given(st.integers(0, len(DATA) - 1), st.integers(1, 255))
def test_any_flipped_byte_is_a_typed_error_or_a_valid_model(pos: int, flip: int) -> None:
    data = bytearray(DATA)
    data[pos] ^= flip
    try:
        params = params_from_canonical(bytes(data), "cnn")
    except ModelBytesError:
        return
    assert canonical_bytes(params) == bytes(data)  # only a value byte changed


def test_store_resolves_genesis_placeholder_and_verifies_fetched(tmp_path: Path) -> None:
    g = genesis_for([PrivateKey.from_secret("m")])
    store = ModelStore(BlobStore(tmp_path), g.fl)
    assert store.has(ZERO_HASH)
    init = store.resolve(ZERO_HASH)
    assert store.fl_hash(ZERO_HASH) == model_hash(init)
    digest = model_hash(PARAMS)
    assert not store.has(digest)
    with pytest.raises(KeyError):
        store.resolve(digest)
    with pytest.raises(ModelBytesError):
        store.put_bytes(DATA, b"\x00" * 32)
    store.put_bytes(DATA, digest, round=1)
    assert store.has(digest) and model_hash(store.resolve(digest)) == digest
    assert store.put(PARAMS, round=1) == digest


def test_the_last_resolved_model_is_kept_and_a_stored_one_resolves_at_once(
    tmp_path: Path,
) -> None:
    g = genesis_for([PrivateKey.from_secret("m")])
    blobs = BlobStore(tmp_path)
    store = ModelStore(blobs, g.fl)
    digest = store.put(PARAMS, round=2)
    assert store.resolve(digest) is PARAMS  # the model just stored: no parse
    assert store.fl_hash(digest) == digest  # past genesis, the ledger hash is the fl hash
    initial = store.resolve(ZERO_HASH)
    assert store.resolve(ZERO_HASH) is initial  # cached while it stays the current model
    assert all(np.array_equal(initial[k], v) for k, v in store.initial().items())
    again = store.resolve(digest)  # parsed back from the blob this time
    assert again is not PARAMS and all(np.array_equal(again[k], PARAMS[k]) for k in PARAMS)


def test_bytes_from_a_peer_are_stored_only_if_they_are_the_model_asked_for(
    tmp_path: Path,
) -> None:
    g = genesis_for([PrivateKey.from_secret("m")])
    store = ModelStore(BlobStore(tmp_path, max_blob_bytes=len(DATA) - 1), g.fl)
    other = canonical_bytes(init_params("fedavg_cnn", 0))
    with pytest.raises(ModelBytesError):  # hashes right, but not a model of this chain
        store.put_bytes(other, hashlib.sha256(other).digest())
    assert not store.has(hashlib.sha256(other).digest())
    with pytest.raises(ModelBytesError, match="cannot store"):  # the store refuses it
        store.put_bytes(DATA, model_hash(PARAMS))
    assert not store.has(model_hash(PARAMS))
