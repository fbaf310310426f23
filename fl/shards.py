"""Shard directories for test networks: a genesis partition recipe applied to a full MNIST copy.

In a real federation every participant brings its own data. A test network has no such
participants, so ``write_shards`` plays them: it splits the public training set with
``fl.partition.partition(spec, labels, n, seed)`` and writes participant ``i``'s rows, in
the partition's order, as the two training IDX files of its own directory. A node then
reads only that directory (``fl.data.load_local_data``). Because a shard holds exactly the
rows the partition gives trainer ``i`` of ``n``, a testnet whose genesis names the same
partition and ``init_seed`` trains each node on the same examples as the in-process
simulation, and its global models stay bit-identical to it.

Each directory also gets a copy of the public test files (evaluation needs no private
data and a node on its own host need not download them) and ``manifest.json``: the
recipe, the sample count, the count per class and the SHA-256 of each training file's IDX
bytes, which ``load_local_data`` checks.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fl.data import (
    MANIFEST,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DataError,
    load_mnist,
    write_idx,
)
from fl.partition import PartitionSpec, parse_partition, partition
from node.core.atomic_file import write_atomic

__all__ = ["MANIFEST_FORMAT", "ShardManifest", "write_shards"]

MANIFEST_FORMAT = "fedchain-shard/1"


@dataclass(frozen=True)
class ShardManifest:
    """What ``manifest.json`` records about one shard directory."""

    format: str
    partition: str
    seed: int
    nodes: int
    index: int
    samples: int
    class_counts: list[int]
    sha256: dict[str, str]  # training file name (without .gz) -> SHA-256 of its IDX bytes


def _copy_test_files(source: Path, dest: Path) -> None:
    for name in (TEST_IMAGES, TEST_LABELS):
        for candidate in (source / name, source / f"{name}.gz"):
            if candidate.is_file():
                shutil.copyfile(candidate, dest / candidate.name)
                break


def write_shards(
    source: str | os.PathLike[str],
    dests: Sequence[Path],
    spec: PartitionSpec | str,
    seed: int,
) -> list[ShardManifest]:
    """Split the training set of the MNIST copy in ``source`` across ``dests`` (one
    directory per participant, created if needed) and return their manifests.

    ``source`` is checksum-verified in full. A destination that already holds training
    files is refused (``DataError``) before anything is written, so an existing shard is
    never replaced by one of another recipe.
    """
    spec = parse_partition(spec) if isinstance(spec, str) else spec
    dests = [Path(d) for d in dests]
    for d in dests:
        taken = [p.name for p in (d.glob("train-*")) if p.is_file()]
        if taken or (d / MANIFEST).exists():
            raise DataError(f"{d} already holds training data ({', '.join(taken) or MANIFEST})")
    mnist = load_mnist(source, download=False, test_limit=0)
    labels = mnist.train_labels.numpy()
    images = mnist.train_images.numpy()
    parts = partition(spec, labels, len(dests), seed)
    out = []
    for i, (dest, rows) in enumerate(zip(dests, parts, strict=True)):
        dest.mkdir(parents=True, exist_ok=True)
        mine = labels[rows]
        digests = {
            TRAIN_IMAGES: write_idx(dest / f"{TRAIN_IMAGES}.gz", images[rows]),
            TRAIN_LABELS: write_idx(dest / f"{TRAIN_LABELS}.gz", mine.astype(np.uint8)),
        }
        _copy_test_files(Path(source), dest)
        manifest = ShardManifest(
            format=MANIFEST_FORMAT,
            partition=str(spec),
            seed=seed,
            nodes=len(dests),
            index=i,
            samples=len(rows),
            class_counts=np.bincount(mine, minlength=10).tolist(),
            sha256=digests,
        )
        write_atomic(dest / MANIFEST, (json.dumps(asdict(manifest), indent=2) + "\n").encode())
        out.append(manifest)
    return out
