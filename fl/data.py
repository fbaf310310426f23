"""MNIST-format IDX data: the public MNIST files, and a participant's own training data.

Two kinds of directory are read here. The public MNIST copy (a shared directory, the user
cache or a verified download) is what test networks split into shards and what every node
evaluates on (the test set is public). A node's *local* training data (``fl.data_dir``,
``load_local_data``) holds only that participant's examples, as the two training IDX files
(raw or gzip) in MNIST's format; it is checked on load (IDX structure, 28x28 images, as many
labels as images, every label a digit, a bounded count) and every error names the file.

Every node trains on MNIST, so the data must be exactly the published files: whatever the
source (a shared directory, the cache, a mirror), each decompressed file is checked against
its SHA-256 before use. Images stay ``uint8`` tensors (47 MB for the training set instead
of 188 MB as float32); training normalizes each batch on the fly, which is cheaper than
converting the whole set up front.

Files are streamed, not read whole: each is decompressed in chunks that are hashed and
from which only the wanted rows are copied. A node that trains on one tenth of the
training set thus holds its 4.7 MB shard, never the 47 MB file plus its decompressed copy,
both of which would add to the node's peak memory. ``select_train`` picks the rows from
the labels, which are read first, so a partition needs nothing else.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from node.core.atomic_file import write_atomic

__all__ = [
    "DATA_DIR_ENV",
    "FILES",
    "MANIFEST",
    "MAX_LOCAL_EXAMPLES",
    "MIRRORS",
    "TEST_IMAGES",
    "TEST_LABELS",
    "TRAIN_IMAGES",
    "TRAIN_LABELS",
    "DataError",
    "DownloadProgress",
    "IdxFormatError",
    "LocalData",
    "LocalDataError",
    "Mnist",
    "MnistChecksumError",
    "MnistDownloadError",
    "MnistNotFoundError",
    "NoTrainingDataError",
    "default_cache_dir",
    "download_mnist",
    "encode_idx",
    "fetch_mnist",
    "load_local_data",
    "load_mnist",
    "load_test_set",
    "parse_idx",
    "write_idx",
]

DATA_DIR_ENV = "FEDCHAIN_DATA_DIR"

# Decompressed file name -> SHA-256 of its decompressed bytes.
FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"

# A shard directory's description, written by ``fedchain data split`` (``fl.shards``).
MANIFEST = "manifest.json"

MAX_LOCAL_EXAMPLES = 1_000_000
"""Most training examples a local data directory may hold. The loader allocates what a
file's IDX header declares, so without a bound a small (gzip) file could make the node
allocate any amount; this one is far above any participant's MNIST-sized data set."""

_IMAGE_SHAPE = (28, 28)

# The mirrors torchvision uses, in the order it tries them; each serves ``<name>.gz``.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# Bound on what one download may decompress to (the largest file is 47 MB).
_MAX_FILE_BYTES = 64 << 20

# Decompressed bytes read per step while streaming a file.
_CHUNK_BYTES = 1 << 20


class DataError(Exception):
    """Base of every data-loading failure; the message says what to do about it."""


class IdxFormatError(DataError):
    """A file is not a well-formed IDX array."""


class MnistChecksumError(DataError):
    """A file's decompressed bytes do not match the published SHA-256."""


class MnistNotFoundError(DataError):
    """The data is not where it was expected and could not be downloaded."""


class MnistDownloadError(MnistNotFoundError):
    """Every mirror failed (offline, refused, or served corrupt bytes)."""


class LocalDataError(DataError):
    """A local training file is missing, malformed or inconsistent; the message names it."""


class NoTrainingDataError(LocalDataError):
    """The training data directory does not exist or holds no training files."""


class DownloadProgress(Protocol):
    """Told, while ``name`` downloads, how many bytes arrived of ``total`` (None: unknown)."""

    def __call__(self, name: str, done: int, total: int | None) -> None: ...


@dataclass(frozen=True)
class LocalData:
    """One participant's training examples: images ``uint8 [N, 28, 28]``, labels ``int64 [N]``."""

    images: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True)
class Mnist:
    """The full data set as tensors: images ``uint8 [N, 28, 28]``, labels ``int64 [N]``."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


_IDX_DTYPES = {0x08: np.dtype(np.uint8)}


def parse_idx(data: bytes, *, name: str = "IDX data") -> np.ndarray:
    """Parse an unsigned-byte IDX array (the only element type MNIST uses)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxFormatError(f"{name}: bad IDX magic number")
    dtype = _IDX_DTYPES.get(data[2])
    if dtype is None:
        raise IdxFormatError(f"{name}: unsupported IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise IdxFormatError(f"{name}: truncated IDX header")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(dims, dtype=np.int64))
    if len(data) != header + count * dtype.itemsize:
        raise IdxFormatError(
            f"{name}: {len(data) - header} payload bytes, shape {dims} needs {count}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/fedchain/mnist``, else ``~/.cache/fedchain/mnist``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fedchain" / "mnist"


def _source(directory: Path, name: str) -> Path | None:
    """The raw or gzipped file for ``name`` in ``directory`` (raw preferred), if present."""
    for path in (directory / name, directory / f"{name}.gz"):
        if path.is_file():
            return path
    return None


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _HashingReader:
    """Reads decompressed bytes exactly, hashing each one, bounded by ``limit``.

    ``error`` is what a broken gzip stream or an oversized file raises: a checksum failure
    for the public MNIST files, a ``LocalDataError`` for a participant's own."""

    def __init__(
        self,
        f: _Readable,
        path: Path,
        *,
        limit: int = _MAX_FILE_BYTES,
        error: type[DataError] = MnistChecksumError,
    ) -> None:
        self.f, self.path = f, path
        self.limit, self.error = limit, error
        self.digest = hashlib.sha256()
        self.total = 0

    def read(self, n: int) -> bytes:
        parts, want = [], n
        while want > 0:
            try:
                chunk = self.f.read(want)
            except (OSError, EOFError) as e:
                raise self.error(f"{self.path}: not a valid gzip file ({e})") from e
            if not chunk:
                break
            self.total += len(chunk)
            if self.total > self.limit:
                raise self.error(f"{self.path}: larger than {self.limit} bytes")
            self.digest.update(chunk)
            parts.append(chunk)
            want -= len(chunk)
        return b"".join(parts)

    def drain(self) -> None:
        while self.read(_CHUNK_BYTES):
            pass


def _parse_rows(
    reader: _HashingReader,
    name: str,
    rows: np.ndarray | None,
    check: Callable[[tuple[int, ...]], None] | None = None,
) -> np.ndarray:
    """Read an unsigned-byte IDX array from ``reader``, keeping only ``rows`` (in order).

    ``check`` sees the declared shape before anything is allocated for it."""
    head = reader.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise IdxFormatError(f"{name}: bad IDX magic number")
    if head[2] not in _IDX_DTYPES:
        raise IdxFormatError(f"{name}: unsupported IDX element type 0x{head[2]:02x}")
    ndim = head[3]
    raw_dims = reader.read(4 * ndim)
    if ndim == 0 or len(raw_dims) < 4 * ndim:
        raise IdxFormatError(f"{name}: truncated IDX header")
    dims = tuple(int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
    if check is not None:
        check(dims)
    n, inner = dims[0], dims[1:]
    row_bytes = int(np.prod(inner, dtype=np.int64))
    if rows is None:
        out = np.empty(dims, dtype=np.uint8)
    else:
        if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= n):
            raise DataError(f"{name}: row indices must lie in [0, {n})")
        out = np.empty((len(rows), *inner), dtype=np.uint8)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
    per_step = max(1, _CHUNK_BYTES // max(row_bytes, 1))
    for r0 in range(0, n, per_step):
        k = min(per_step, n - r0)
        data = reader.read(k * row_bytes)
        if len(data) != k * row_bytes:
            raise IdxFormatError(f"{name}: payload shorter than shape {dims} needs")
        block = np.frombuffer(data, dtype=np.uint8).reshape((k, *inner))
        if rows is None:
            out[r0 : r0 + k] = block
        else:
            lo, hi = np.searchsorted(sorted_rows, [r0, r0 + k])
            out[order[lo:hi]] = block[sorted_rows[lo:hi] - r0]
    if reader.read(1):
        raise IdxFormatError(f"{name}: bytes after the payload of shape {dims}")
    return out


def _read_rows(path: Path, name: str, rows: np.ndarray | None = None) -> np.ndarray:
    """Stream ``path`` once: verify its SHA-256 and return ``rows`` of its IDX array.

    ``rows=None`` keeps every row. A malformed file cannot be the published one, so its
    checksum failure is what gets reported.
    """
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
        reader = _HashingReader(f, path)
        try:
            out = _parse_rows(reader, name, rows)
        except IdxFormatError:
            reader.drain()
            if reader.digest.hexdigest() == FILES[name]:
                raise
            out = None
    if out is None or reader.digest.hexdigest() != FILES[name]:
        raise MnistChecksumError(
            f"{path}: SHA-256 does not match the published MNIST file; delete it or "
            "point FEDCHAIN_DATA_DIR at a good copy"
        )
    return out


def _read_public(directory: Path, name: str, rows: np.ndarray | None) -> np.ndarray:
    """Rows of the public MNIST file ``name`` found present in ``directory``, verified."""
    path = _source(directory, name)
    if path is None:  # removed between the presence check and the read
        raise MnistNotFoundError(f"{directory / name} disappeared while loading")
    return _read_rows(path, name, rows)


def _fetch(url: str, timeout: float, progress: Callable[[int, int | None], None]) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        parts: list[bytes] = []
        done = 0
        while chunk := resp.read(_CHUNK_BYTES):
            done += len(chunk)
            if done > _MAX_FILE_BYTES:
                raise OSError(f"response larger than {_MAX_FILE_BYTES} bytes")
            parts.append(chunk)
            progress(done, total)
    return b"".join(parts)


def download_mnist(
    directory: Path,
    *,
    mirrors: Sequence[str] = MIRRORS,
    timeout: float = 60.0,
    names: Sequence[str] = tuple(FILES),
    progress: DownloadProgress | None = None,
) -> None:
    """Fetch every missing file of ``names`` into ``directory``, trying each mirror in turn.

    A file is written (decompressed) only after its SHA-256 matches, so a corrupt or
    tampered mirror is skipped, never cached. ``progress`` hears about every chunk.
    """
    for name in names:
        digest = FILES[name]
        if _source(directory, name) is not None:
            continue
        failures = []
        for mirror in mirrors:
            url = f"{mirror.rstrip('/')}/{name}.gz"

            def tell(done: int, total: int | None, name: str = name) -> None:
                if progress is not None:
                    progress(name, done, total)

            try:
                data = gzip.decompress(_fetch(url, timeout, tell))
            except (OSError, EOFError, urllib.error.URLError, ValueError) as e:
                failures.append(f"{url}: {e}")
                continue
            if len(data) > _MAX_FILE_BYTES or hashlib.sha256(data).hexdigest() != digest:
                failures.append(f"{url}: SHA-256 mismatch (corrupt or tampered file)")
                continue
            write_atomic(directory / name, data)
            break
        else:
            raise MnistDownloadError(
                f"could not download {name}: " + "; ".join(failures) + ". If this machine "
                f"is offline, copy the MNIST IDX files into a directory and set "
                f"{DATA_DIR_ENV}=<dir> (or pass --data-dir <dir>)"
            )


def _resolve_dir(data_dir: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """The directory to read and whether it is the cache (the only place we download to)."""
    if data_dir is not None:
        return Path(data_dir), False
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env), False
    return default_cache_dir(), True


def fetch_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    mirrors: Sequence[str] = MIRRORS,
    timeout: float = 60.0,
    names: Sequence[str] = tuple(FILES),
    progress: DownloadProgress | None = None,
) -> Path:
    """The directory holding the public MNIST files ``names``: ``data_dir``,
    ``$FEDCHAIN_DATA_DIR`` or the user cache, which alone is filled from the mirrors
    (when ``download``) if files are missing. Presence is checked here, content on read."""
    directory, is_cache = _resolve_dir(data_dir)
    missing = [n for n in names if _source(directory, n) is None]
    if missing:
        if not is_cache:
            raise MnistNotFoundError(
                f"{directory} lacks {', '.join(missing)} (raw or .gz); point "
                f"{DATA_DIR_ENV} / --data-dir at a directory holding the four MNIST IDX files"
            )
        if not download:
            raise MnistNotFoundError(
                f"MNIST is not in {directory} and downloading is disabled; set "
                f"{DATA_DIR_ENV}=<dir> (or pass --data-dir <dir>) to use a local copy"
            )
        download_mnist(directory, mirrors=mirrors, timeout=timeout, names=names, progress=progress)
    return directory


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    mirrors: Sequence[str] = MIRRORS,
    timeout: float = 60.0,
    select_train: Callable[[np.ndarray], np.ndarray] | None = None,
    test_limit: int | None = None,
) -> Mnist:
    """Load MNIST from ``data_dir``, ``$FEDCHAIN_DATA_DIR`` or the user cache.

    An explicit directory must already hold the files (a typo should not silently trigger
    a download elsewhere); the cache directory is filled from the mirrors on first use.
    ``select_train`` maps the training labels (``int64``) to the row indices to keep, in
    order (e.g. a node's shard); ``test_limit`` keeps the first that many test images.
    Every file is checksum-verified in full either way.
    """
    directory = fetch_mnist(data_dir, download=download, mirrors=mirrors, timeout=timeout)

    def read(name: str, rows: np.ndarray | None = None) -> np.ndarray:
        return _read_public(directory, name, rows)

    train_labels = read("train-labels-idx1-ubyte").astype(np.int64)
    train_rows = None
    if select_train is not None:
        train_rows = np.asarray(select_train(train_labels), dtype=np.int64)
        n = len(train_labels)
        if train_rows.ndim != 1 or (
            len(train_rows) and (int(train_rows.min()) < 0 or int(train_rows.max()) >= n)
        ):
            raise DataError(f"select_train must return row indices in [0, {n}), one axis")
        train_labels = train_labels[train_rows]
    test_labels = read("t10k-labels-idx1-ubyte").astype(np.int64)
    test_rows = None
    if test_limit is not None:
        test_rows = np.arange(min(max(test_limit, 0), len(test_labels)), dtype=np.int64)
        test_labels = test_labels[test_rows]
    return Mnist(
        train_images=torch.from_numpy(read("train-images-idx3-ubyte", train_rows)),
        train_labels=torch.from_numpy(train_labels),
        test_images=torch.from_numpy(read("t10k-images-idx3-ubyte", test_rows)),
        test_labels=torch.from_numpy(test_labels),
    )


# ----------------------------------------------------------------- writing IDX


def encode_idx(array: np.ndarray) -> bytes:
    """The unsigned-byte IDX encoding of ``array`` (what ``parse_idx`` reads back)."""
    a = np.ascontiguousarray(array)
    if a.dtype != np.uint8:
        raise IdxFormatError(f"IDX arrays here are uint8, not {a.dtype}")
    if not 1 <= a.ndim <= 255 or any(d >= 1 << 32 for d in a.shape):
        raise IdxFormatError(f"shape {a.shape} cannot be written as IDX")
    dims = b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return bytes([0, 0, 0x08, a.ndim]) + dims + a.tobytes()


def write_idx(path: Path, array: np.ndarray) -> str:
    """Write ``array`` as an IDX file (gzip when ``path`` ends in ``.gz``, level 1 and
    mtime 0, so the file depends on the data alone); returns the SHA-256 of the IDX bytes,
    which is the same raw or compressed."""
    data = encode_idx(array)
    body = gzip.compress(data, compresslevel=1, mtime=0) if path.suffix == ".gz" else data
    write_atomic(path, body)
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------- local training data


def _no_data(directory: Path, why: str) -> NoTrainingDataError:
    return NoTrainingDataError(
        f"no training data in {directory} ({why}): run `fedchain data split --nodes N "
        f"--out DIR` and point fl.data_dir at one DIR/nodeI, or put your own IDX files there "
        f"({TRAIN_IMAGES}[.gz] and {TRAIN_LABELS}[.gz])"
    )


def _read_local(
    path: Path, rows: np.ndarray | None, check: Callable[[tuple[int, ...]], None]
) -> tuple[np.ndarray, str]:
    """Parse one local IDX file (no published checksum to meet); returns its rows and the
    SHA-256 of its decompressed bytes. Every failure is a ``DataError`` naming ``path``."""
    limit = 16 + MAX_LOCAL_EXAMPLES * _IMAGE_SHAPE[0] * _IMAGE_SHAPE[1]
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
            reader = _HashingReader(f, path, limit=limit, error=LocalDataError)
            out = _parse_rows(reader, str(path), rows, check)
    except OSError as e:
        raise LocalDataError(f"{path}: cannot be read ({e.strerror or e})") from e
    return out, reader.digest.hexdigest()


def _check_manifest(directory: Path, digests: dict[str, str], labels: np.ndarray) -> None:
    """A shard written by ``fedchain data split`` must still be what its manifest says."""
    path = directory / MANIFEST
    if not path.is_file():
        return  # the participant's own files: nothing to compare them with
    try:
        doc = json.loads(path.read_text())
        hashes = dict(doc["sha256"])
        samples, counts = int(doc["samples"]), [int(c) for c in doc["class_counts"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LocalDataError(f"{path}: not a readable shard manifest ({e})") from e
    for name, digest in digests.items():
        if hashes.get(name) != digest:
            raise LocalDataError(
                f"{directory / name}: SHA-256 differs from {path}; the shard was changed "
                "or damaged: split it again or remove the manifest if the change is yours"
            )
    if samples != len(labels) or counts != np.bincount(labels, minlength=10).tolist():
        raise LocalDataError(f"{path}: sample or class counts differ from the files")


def load_local_data(directory: str | os.PathLike[str], *, limit: int | None = None) -> LocalData:
    """This participant's training examples from ``directory``, checked in full.

    ``limit`` keeps the first that many examples (the whole files are still read and
    checked). A missing or empty directory raises ``NoTrainingDataError`` saying how to
    get data; anything malformed raises a ``DataError`` naming the file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise _no_data(directory, "the directory does not exist")
    images_path = _source(directory, TRAIN_IMAGES)
    labels_path = _source(directory, TRAIN_LABELS)
    if images_path is None and labels_path is None:
        raise _no_data(directory, f"neither {TRAIN_IMAGES} nor {TRAIN_LABELS} is there")
    if images_path is None or labels_path is None:
        have, lack = (
            (labels_path, TRAIN_IMAGES) if images_path is None else (images_path, TRAIN_LABELS)
        )
        raise LocalDataError(f"{have} has no partner: {directory / lack}[.gz] is missing")

    def labels_shape(dims: tuple[int, ...]) -> None:
        if len(dims) != 1:
            raise LocalDataError(f"{labels_path}: labels must be one axis, not shape {dims}")
        if not 1 <= dims[0] <= MAX_LOCAL_EXAMPLES:
            raise LocalDataError(
                f"{labels_path}: holds {dims[0]} labels; between 1 and {MAX_LOCAL_EXAMPLES} "
                "are accepted"
            )

    raw_labels, labels_digest = _read_local(labels_path, None, labels_shape)
    n = len(raw_labels)
    bad = np.flatnonzero(raw_labels > 9)
    if len(bad):
        raise LocalDataError(
            f"{labels_path}: label {int(raw_labels[bad[0]])} at row {int(bad[0])} is not a "
            "digit 0-9"
        )

    def images_shape(dims: tuple[int, ...]) -> None:
        if len(dims) != 3 or dims[1:] != _IMAGE_SHAPE:
            raise LocalDataError(f"{images_path}: images must have shape (N, 28, 28), not {dims}")
        if dims[0] != n:
            raise LocalDataError(f"{images_path}: holds {dims[0]} images for {n} labels")

    keep = n if limit is None else min(max(limit, 0), n)
    images, images_digest = _read_local(images_path, np.arange(keep, dtype=np.int64), images_shape)
    labels = raw_labels.astype(np.int64)
    _check_manifest(directory, {TRAIN_IMAGES: images_digest, TRAIN_LABELS: labels_digest}, labels)
    return LocalData(torch.from_numpy(images), torch.from_numpy(labels[:keep].copy()))


def load_test_set(
    directory: str | os.PathLike[str] | None,
    limit: int,
    *,
    download: bool = True,
    mirrors: Sequence[str] = MIRRORS,
    timeout: float = 60.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` public test images and labels, checksum-verified.

    Read from ``directory`` when it holds both test files (a shard directory carries a
    copy), else from the public MNIST location (``$FEDCHAIN_DATA_DIR`` or the cache, which
    is downloaded to when ``download``).
    """
    names = (TEST_IMAGES, TEST_LABELS)
    here = directory is not None and all(_source(Path(directory), n) for n in names)
    source = (
        Path(directory)
        if here and directory is not None
        else fetch_mnist(None, download=download, mirrors=mirrors, timeout=timeout, names=names)
    )
    rows = np.arange(min(max(limit, 0), 10_000), dtype=np.int64)
    labels = _read_public(source, TEST_LABELS, rows).astype(np.int64)
    return torch.from_numpy(_read_public(source, TEST_IMAGES, rows)), torch.from_numpy(labels)
