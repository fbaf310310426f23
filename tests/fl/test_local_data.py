"""A participant's own training data (``fl.data.load_local_data``): IDX files written by
``write_idx`` read back exactly, and every malformed directory is refused with an error
that names the file and, for a missing or empty one, says how to get data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fl.data import (
    MANIFEST,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DataError,
    IdxFormatError,
    LocalDataError,
    NoTrainingDataError,
    encode_idx,
    load_local_data,
    load_test_set,
    parse_idx,
    write_idx,
)


@st.composite
def examples(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 12))
    images = draw(arrays(np.uint8, (n, 28, 28)))
    labels = draw(arrays(np.uint8, (n,), elements=st.integers(0, 9)))
    return images, labels


def _write(directory: Path, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    suffix = ".gz" if gz else ""
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / f"{TRAIN_IMAGES}{suffix}", images)
    write_idx(directory / f"{TRAIN_LABELS}{suffix}", labels)


@settings(max_examples=40)
@given(data=examples(), gz=st.booleans(), limit=st.none() | st.integers(0, 15))
def test_written_idx_files_read_back_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    data: tuple[np.ndarray, np.ndarray],
    gz: bool,
    limit: int | None,
) -> None:
    images, labels = data
    d = tmp_path_factory.mktemp("local")
    _write(d, images, labels, gz)
    local = load_local_data(d, limit=limit)
    keep = len(labels) if limit is None else min(limit, len(labels))
    assert np.array_equal(local.images.numpy(), images[:keep])
    assert np.array_equal(local.labels.numpy(), labels[:keep].astype(np.int64))
    assert str(local.labels.dtype) == "torch.int64"


@given(arrays(np.uint8, st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)))
def test_encode_idx_round_trips_through_parse_idx(a: np.ndarray) -> None:
    assert np.array_equal(parse_idx(encode_idx(a)), a)


def test_missing_or_empty_directory_says_how_to_get_data(tmp_path: Path) -> None:
    with pytest.raises(NoTrainingDataError, match=r"does not exist.*fedchain data split"):
        load_local_data(tmp_path / "nope")
    with pytest.raises(NoTrainingDataError, match=rf"no training data in {tmp_path}.*own IDX"):
        load_local_data(tmp_path)


# (what to write into the directory, the file the error must name, what it must say)
_BAD_IMAGE = np.zeros((3, 28, 28), np.uint8)
_BAD_LABELS = np.array([1, 2, 3], np.uint8)


def _case(kind: str, d: Path) -> tuple[Path, str]:
    img, lab = d / f"{TRAIN_IMAGES}.gz", d / TRAIN_LABELS
    if kind == "labels_missing":
        write_idx(img, _BAD_IMAGE)
        return d / TRAIN_LABELS, "missing"
    if kind == "label_not_a_digit":
        write_idx(img, _BAD_IMAGE)
        write_idx(lab, np.array([1, 12, 3], np.uint8))
        return lab, "label 12 at row 1 is not a digit"
    if kind == "wrong_image_shape":
        write_idx(img, np.zeros((3, 28, 27), np.uint8))
        write_idx(lab, _BAD_LABELS)
        return img, r"shape \(N, 28, 28\)"
    if kind == "count_mismatch":
        write_idx(img, np.zeros((4, 28, 28), np.uint8))
        write_idx(lab, _BAD_LABELS)
        return img, "4 images for 3 labels"
    if kind == "labels_two_axes":
        write_idx(img, _BAD_IMAGE)
        write_idx(lab, np.zeros((3, 1), np.uint8))
        return lab, "one axis"
    if kind == "truncated":
        write_idx(lab, _BAD_LABELS)
        img.write_bytes(gzip.compress(encode_idx(_BAD_IMAGE)[:-5]))
        return img, "payload shorter"
    if kind == "trailing_bytes":
        write_idx(img, _BAD_IMAGE)
        lab.write_bytes(encode_idx(_BAD_LABELS) + b"x")
        return lab, "bytes after the payload"
    if kind == "not_gzip":
        write_idx(lab, _BAD_LABELS)
        img.write_bytes(b"this is not gzip")
        return img, "not a valid gzip"
    if kind == "bad_magic":
        write_idx(img, _BAD_IMAGE)
        lab.write_bytes(b"\x01\x02" + encode_idx(_BAD_LABELS)[2:])
        return lab, "magic"
    if kind == "huge_header":  # declares 2**31 images in a few bytes: refused, not allocated
        write_idx(lab, _BAD_LABELS)
        header = bytes([0, 0, 8, 3]) + (1 << 31).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
        img.write_bytes(gzip.compress(header))
        return img, "2147483648 images"
    if kind == "zero_examples":
        write_idx(img, np.zeros((0, 28, 28), np.uint8))
        write_idx(lab, np.zeros((0,), np.uint8))
        return lab, "holds 0 labels"
    raise AssertionError(kind)


_KINDS = [
    "labels_missing",
    "label_not_a_digit",
    "wrong_image_shape",
    "count_mismatch",
    "labels_two_axes",
    "truncated",
    "trailing_bytes",
    "not_gzip",
    "bad_magic",
    "huge_header",
    "zero_examples",
]


@settings(max_examples=len(_KINDS) * 2)
@given(kind=st.sampled_from(_KINDS))
def test_each_malformed_directory_is_refused_naming_the_file(
    tmp_path_factory: pytest.TempPathFactory, kind: str
) -> None:
    d = tmp_path_factory.mktemp(kind)
    path, says = _case(kind, d)
    with pytest.raises(DataError) as info:
        load_local_data(d)
    assert isinstance(info.value, LocalDataError | IdxFormatError)
    assert str(path) in str(info.value)
    assert info.match(says)


def test_a_shard_changed_after_its_manifest_is_refused(tmp_path: Path) -> None:
    images, labels = np.zeros((3, 28, 28), np.uint8), np.array([0, 1, 1], np.uint8)
    _write(tmp_path, images, labels, gz=True)
    digests = {
        TRAIN_IMAGES: write_idx(tmp_path / f"{TRAIN_IMAGES}.gz", images),
        TRAIN_LABELS: write_idx(tmp_path / f"{TRAIN_LABELS}.gz", labels),
    }
    counts = [1, 2] + [0] * 8
    doc = {"samples": 3, "class_counts": counts, "sha256": digests}
    (tmp_path / MANIFEST).write_text(json.dumps(doc))
    assert load_local_data(tmp_path).labels.tolist() == [0, 1, 1]
    write_idx(tmp_path / f"{TRAIN_LABELS}.gz", np.array([0, 1, 2], np.uint8))
    with pytest.raises(LocalDataError, match=f"{TRAIN_LABELS}: SHA-256 differs"):
        load_local_data(tmp_path)
    (tmp_path / MANIFEST).write_text("{")
    with pytest.raises(LocalDataError, match=f"{MANIFEST}: not a readable shard manifest"):
        load_local_data(tmp_path)


def test_the_test_set_comes_from_the_directory_or_the_public_copy(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDCHAIN_DATA_DIR", str(mnist_dir))
    images, labels = load_test_set(tmp_path, 7)  # no test files here: the public copy
    assert images.shape == (7, 28, 28)
    assert labels.tolist() == [7, 2, 1, 0, 4, 1, 4]
    assert load_test_set(mnist_dir, 0)[1].shape == (0,)
