from __future__ import annotations

import gzip
import http.server
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from fl.data import (
    DATA_DIR_ENV,
    FILES,
    DataError,
    IdxFormatError,
    Mnist,
    MnistChecksumError,
    MnistDownloadError,
    MnistNotFoundError,
    load_mnist,
    parse_idx,
)


def test_full_dataset_shapes_and_labels(mnist: Mnist) -> None:
    assert mnist.train_images.shape == (60000, 28, 28)
    assert mnist.test_images.shape == (10000, 28, 28)
    assert str(mnist.train_images.dtype) == "torch.uint8"
    assert str(mnist.train_labels.dtype) == "torch.int64"
    assert mnist.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert np.bincount(mnist.test_labels.numpy()).tolist()[:3] == [980, 1135, 1032]


def test_parse_idx_rejects_malformed() -> None:
    good = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + b"abc"
    assert parse_idx(good).tolist() == [97, 98, 99]
    with pytest.raises(IdxFormatError, match="magic"):
        parse_idx(b"\x01" + good[1:])
    with pytest.raises(IdxFormatError, match="element type"):
        parse_idx(bytes([0, 0, 0x0D, 1]) + good[4:])
    with pytest.raises(IdxFormatError, match="payload"):
        parse_idx(good[:-1])
    with pytest.raises(IdxFormatError, match="header"):
        parse_idx(bytes([0, 0, 8, 3, 0]))


def test_env_var_and_missing_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_dir: Path
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(MnistNotFoundError, match=DATA_DIR_ENV):
        load_mnist()
    for name in FILES:
        (tmp_path / f"{name}.gz").symlink_to((mnist_dir / f"{name}.gz").resolve())
    assert load_mnist().train_labels.shape == (60000,)


def test_a_selection_keeps_only_the_chosen_rows_in_order(mnist: Mnist, mnist_dir: Path) -> None:
    """A node's shard: exactly the rows ``select_train`` picks from the labels, in order."""
    seen: list[np.ndarray] = []

    def pick(labels: np.ndarray) -> np.ndarray:
        seen.append(labels)
        return np.flatnonzero(labels == 7)[::-50]

    part = load_mnist(mnist_dir, select_train=pick, test_limit=123)
    rows = torch.from_numpy(pick(mnist.train_labels.numpy()).copy())
    assert np.array_equal(seen[0], mnist.train_labels.numpy()) and seen[0].dtype == np.int64
    assert torch.equal(part.train_images, mnist.train_images[rows])
    assert torch.equal(part.train_labels, mnist.train_labels[rows])
    assert set(part.train_labels.tolist()) == {7}
    assert torch.equal(part.test_images, mnist.test_images[:123])
    assert torch.equal(part.test_labels, mnist.test_labels[:123])
    with pytest.raises(DataError, match="row indices"):
        load_mnist(mnist_dir, select_train=lambda labels: np.array([60000]))


def test_a_truncated_file_fails_its_checksum(tmp_path: Path, mnist_dir: Path) -> None:
    for name in FILES:
        (tmp_path / f"{name}.gz").symlink_to((mnist_dir / f"{name}.gz").resolve())
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    bad.unlink()
    images = gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    bad.write_bytes(gzip.compress(images[:-784], compresslevel=1))
    with pytest.raises(MnistChecksumError, match="SHA-256"):
        load_mnist(tmp_path, test_limit=10)
    bad.write_bytes(images[:1000])  # not gzip at all
    with pytest.raises(MnistChecksumError, match="gzip"):
        load_mnist(tmp_path)


def test_corrupt_local_file_is_rejected(tmp_path: Path, mnist_dir: Path) -> None:
    for name in FILES:
        (tmp_path / f"{name}.gz").symlink_to((mnist_dir / f"{name}.gz").resolve())
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.unlink()
    labels = gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    bad.write_bytes(gzip.compress(labels[:-1] + bytes([(labels[-1] + 1) % 10])))
    with pytest.raises(MnistChecksumError, match="SHA-256"):
        load_mnist(tmp_path)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirrors(tmp_path: Path, mnist_dir: Path) -> Iterator[tuple[str, str]]:
    """Two local mirrors: ``bad/`` serves a tampered train-labels file, ``good/`` the real one."""
    root = tmp_path / "www"
    for sub in ("good", "bad"):
        (root / sub).mkdir(parents=True)
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(mnist_dir / f"{name}.gz", root / "good" / f"{name}.gz")
    labels = gzip.decompress((root / "good" / "train-labels-idx1-ubyte.gz").read_bytes())
    tampered = labels[:100] + bytes([(labels[100] + 1) % 10]) + labels[101:]
    (root / "bad" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(tampered))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield f"{base}/bad/", f"{base}/good/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _cache_with_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_dir: Path) -> Path:
    """A cache dir holding the two big image files, so only the label files download."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "fedchain" / "mnist"
    cache.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        (cache / f"{name}.gz").symlink_to((mnist_dir / f"{name}.gz").resolve())
    return cache


def test_download_skips_corrupt_mirror(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mirrors: tuple[str, str],
    mnist_dir: Path,
) -> None:
    cache = _cache_with_images(tmp_path, monkeypatch, mnist_dir)
    data = load_mnist(mirrors=mirrors, timeout=10)
    assert data.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    # Stored decompressed, verified, and no temporary files left behind.
    assert (cache / "train-labels-idx1-ubyte").stat().st_size == 60008
    assert not list(cache.glob(".*tmp"))


def test_download_rejects_corrupt_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mirrors: tuple[str, str],
    mnist_dir: Path,
) -> None:
    cache = _cache_with_images(tmp_path, monkeypatch, mnist_dir)
    with pytest.raises(MnistDownloadError, match="SHA-256 mismatch"):
        load_mnist(mirrors=[mirrors[0]], timeout=10)
    assert not (cache / "train-labels-idx1-ubyte").exists()


def test_offline_error_says_how_to_use_local_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_dir: Path
) -> None:
    _cache_with_images(tmp_path, monkeypatch, mnist_dir)
    with pytest.raises(MnistDownloadError) as info:
        load_mnist(mirrors=["http://127.0.0.1:9/"], timeout=2)
    assert DATA_DIR_ENV in str(info.value) and "--data-dir" in str(info.value)
    with pytest.raises(MnistNotFoundError, match=DATA_DIR_ENV):
        load_mnist(download=False)


@pytest.fixture
def image_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_dir: Path) -> Path:
    return _cache_with_images(tmp_path, monkeypatch, mnist_dir)


def test_download_reports_its_progress(
    image_cache: Path, mirrors: tuple[str, str], mnist_dir: Path
) -> None:
    """What `testnet up` and `data split` draw their progress bar from."""
    from fl.data import fetch_mnist

    cache = image_cache
    heard: list[tuple[str, int, int | None]] = []
    got = fetch_mnist(mirrors=[mirrors[1]], timeout=10, progress=lambda *a: heard.append(a))
    assert got == cache
    names = {n for n, _, _ in heard}
    assert names == {"train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"}
    for name in names:
        mine = [(done, total) for n, done, total in heard if n == name]
        size = (mnist_dir / f"{name}.gz").stat().st_size
        assert mine[-1] == (size, size)
        assert [d for d, _ in mine] == sorted(d for d, _ in mine)
