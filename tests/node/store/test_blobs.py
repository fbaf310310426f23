"""Content-addressed blobs: layout, idempotence, corruption detection, pruning by round."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.store.blobs import BlobError, BlobNotFound, BlobStore, CorruptBlob


def test_put_get_layout_and_idempotence(tmp_path: Path) -> None:
    bs = BlobStore(tmp_path / "blobs")
    data = b"model weights" * 1000
    d = bs.put(data, round=3)
    h = hashlib.sha256(data).hexdigest()
    assert d.hex() == h
    assert (tmp_path / "blobs" / h[:2] / h[2:]).read_bytes() == data
    assert bs.put(data) == d  # idempotent
    assert bs.get(d) == data and bs.has(d)
    assert not list((tmp_path / "blobs" / h[:2]).glob(".*tmp"))  # no temp files left
    bs.close()


def test_missing_and_corrupt_blobs_raise_typed_errors(tmp_path: Path) -> None:
    bs = BlobStore(tmp_path)
    with pytest.raises(BlobNotFound):
        bs.get(bytes(32))
    d = bs.put(b"payload")
    bs.path_of(d).write_bytes(b"paylaod")
    with pytest.raises(CorruptBlob):
        bs.get(d)
    # A corrupt blob is removed, so it counts as missing and is fetched again.
    assert not bs.has(d)
    assert bs.put(b"payload", durable=False) == d and bs.get(d) == b"payload"
    bs.path_of(d).write_bytes(b"")  # a write torn by a power loss
    with pytest.raises(CorruptBlob):
        bs.get(d)
    assert not bs.has(d)
    with pytest.raises(BlobError):
        bs.path_of(b"short")
    small = BlobStore(tmp_path / "small", max_blob_bytes=10)
    with pytest.raises(BlobError, match="exceeds"):
        small.put(b"x" * 11)


def test_prune_old_rounds_keeps_pinned_and_untagged(tmp_path: Path) -> None:
    bs = BlobStore(tmp_path)
    by_round = {r: bs.put(f"update {r}".encode(), round=r) for r in range(10)}
    untagged = bs.put(b"untagged")
    pinned = by_round[1]
    # A blob used again in a later round is kept as long as that round is.
    reused = bs.put(b"update 2")
    assert reused == by_round[2]
    bs.put(b"update 2", round=8)
    n = bs.prune(current_round=10, keep_rounds=3, pinned=[pinned])
    kept = {r for r, d in by_round.items() if bs.has(d)}
    assert kept == {1, 2, 7, 8, 9}
    assert n == 5
    assert bs.has(untagged)
    assert bs.prune(current_round=10, keep_rounds=3, pinned=[pinned]) == 0


@settings(max_examples=50)
@given(st.binary(max_size=4096))
def test_any_bytes_roundtrip(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    bs = BlobStore(tmp_path_factory.mktemp("b"))
    assert bs.get(bs.put(data)) == data
    bs.close()
