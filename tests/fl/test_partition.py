from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fl.data import Mnist
from fl.partition import (
    PartitionError,
    PartitionSpec,
    parse_partition,
    partition,
    partition_indices,
    split_validation,
)


def test_parse_valid() -> None:
    assert parse_partition("iid") == PartitionSpec("iid")
    assert parse_partition("dirichlet:0.5") == PartitionSpec("dirichlet", alpha=0.5)
    assert parse_partition(" shards:2 ") == PartitionSpec("shards", shards=2)
    assert str(parse_partition("dirichlet:0.50")) == "dirichlet:0.5"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "iid:1",
        "dirichlet",
        "dirichlet:",
        "dirichlet:-1",
        "dirichlet:nan",
        "dirichlet:x",
        "shards:0",
        "shards:-2",
        "shards:1.5",
        "shards",
        "random",
    ],
)
def test_parse_invalid(text: str) -> None:
    with pytest.raises(PartitionError):
        parse_partition(text)


@given(st.text(max_size=20))
def test_parse_never_crashes(text: str) -> None:
    with contextlib.suppress(PartitionError):
        parse_partition(text)


def _check_cover(parts: list[np.ndarray], total: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == total and len(np.unique(joined)) == total


@pytest.mark.parametrize("spec", ["iid", "shards:2", "dirichlet:0.5"])
def test_partition_is_deterministic_disjoint_cover(mnist: Mnist, spec: str) -> None:
    labels = mnist.train_labels.numpy()
    parts = partition(spec, labels, 10, seed=7)
    _check_cover(parts, 60000)
    again = partition(spec, labels, 10, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition(spec, labels, 10, seed=8)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))
    assert np.array_equal(partition_indices(spec, labels, 10, 3, seed=7), parts[3])


def test_iid_is_balanced(mnist: Mnist) -> None:
    parts = partition("iid", mnist.train_labels.numpy(), 10, seed=0)
    assert {len(p) for p in parts} == {6000}
    counts = np.bincount(mnist.train_labels.numpy()[parts[0]], minlength=10)
    assert counts.min() > 450


def test_shards_give_few_classes_per_node(mnist: Mnist) -> None:
    labels = mnist.train_labels.numpy()
    parts = partition("shards:2", labels, 10, seed=0)
    classes = [len(np.unique(labels[p])) for p in parts]
    # Each node holds 2 class-sorted shards; a shard may straddle a class boundary.
    assert max(classes) <= 4 and np.median(classes) <= 3
    assert {len(p) for p in parts} == {6000}


def test_dirichlet_small_alpha_is_skewed(mnist: Mnist) -> None:
    labels = mnist.train_labels.numpy()
    skewed = partition("dirichlet:0.1", labels, 10, seed=0)
    flat = partition("dirichlet:100", labels, 10, seed=0)

    def top_share(parts: list[np.ndarray]) -> float:
        return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts]))

    assert top_share(skewed) > 0.5 > 0.2 > top_share(flat)


def test_bad_sizes() -> None:
    labels = np.arange(10) % 3
    with pytest.raises(PartitionError):
        partition("iid", labels, 0, seed=0)
    with pytest.raises(PartitionError):
        partition("shards:2", labels, 6, seed=0)
    with pytest.raises(PartitionError):
        partition_indices("iid", labels, 3, 3, seed=0)


def test_validation_split() -> None:
    idx = np.arange(100, 200)
    train, val = split_validation(idx, 0.2, seed=1)
    assert len(val) == 20 and len(train) == 80
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(idx)
    assert np.array_equal(split_validation(idx, 0.2, seed=1)[1], val)
    with pytest.raises(PartitionError):
        split_validation(idx, 1.0, seed=1)
