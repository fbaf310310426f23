"""``fl.shards.write_shards`` (behind ``fedchain data split``): the shard directories of a
test network are disjoint, cover the partition, match their manifests, and hold exactly
the rows, in the same order, that the genesis partition gives each trainer, so a testnet
still trains bit-identically to the in-process simulation."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from fl.data import (
    MANIFEST,
    TEST_IMAGES,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DataError,
    Mnist,
    load_local_data,
    load_test_set,
)
from fl.partition import partition
from fl.shards import MANIFEST_FORMAT, write_shards


@pytest.mark.parametrize("spec", ["iid", "shards:2", "dirichlet:0.5"])
def test_shards_are_the_partition_row_for_row(
    tmp_path: Path, mnist: Mnist, mnist_dir: Path, spec: str
) -> None:
    n, seed = 4, 3
    dests = [tmp_path / f"node{i}" for i in range(n)]
    manifests = write_shards(mnist_dir, dests, spec, seed)
    parts = partition(spec, mnist.train_labels.numpy(), n, seed)
    seen: set[int] = set()
    for i, (d, rows, m) in enumerate(zip(dests, parts, manifests, strict=True)):
        local = load_local_data(d)  # also checks the files against the manifest
        assert np.array_equal(local.images.numpy(), mnist.train_images.numpy()[rows])
        assert np.array_equal(local.labels.numpy(), mnist.train_labels.numpy()[rows])
        assert not seen & set(rows.tolist())  # disjoint
        seen |= set(rows.tolist())
        doc = json.loads((d / MANIFEST).read_text())
        assert doc == {**m.__dict__, "class_counts": m.class_counts, "sha256": m.sha256}
        assert (doc["format"], doc["index"], doc["nodes"], doc["seed"]) == (
            MANIFEST_FORMAT,
            i,
            n,
            seed,
        )
        assert doc["samples"] == len(rows)
        assert doc["class_counts"] == np.bincount(local.labels.numpy(), minlength=10).tolist()
        for name in (TRAIN_IMAGES, TRAIN_LABELS):
            raw = gzip.decompress((d / f"{name}.gz").read_bytes())
            assert hashlib.sha256(raw).hexdigest() == doc["sha256"][name]
        images, labels = load_test_set(d, 50, download=False)  # its own checked copy
        assert np.array_equal(images.numpy(), mnist.test_images.numpy()[:50])
        assert np.array_equal(labels.numpy(), mnist.test_labels.numpy()[:50])
        assert (d / f"{TEST_IMAGES}.gz").is_file()
    assert seen == set(np.concatenate(parts).tolist())  # covers the partition


def test_an_existing_shard_is_never_replaced(tmp_path: Path, mnist_dir: Path) -> None:
    (tmp_path / "node1").mkdir()
    (tmp_path / "node1" / f"{TRAIN_LABELS}.gz").write_bytes(b"mine")
    with pytest.raises(DataError, match="node1 already holds training data"):
        write_shards(mnist_dir, [tmp_path / "node0", tmp_path / "node1"], "iid", 0)
    assert not (tmp_path / "node0").exists()
    assert (tmp_path / "node1" / f"{TRAIN_LABELS}.gz").read_bytes() == b"mine"
