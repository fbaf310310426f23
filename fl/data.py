"""MNIST from the four standard IDX files: local directory, user cache, or a verified download.

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
    "MIRRORS",
    "DataError",
    "IdxFormatError",
    "Mnist",
    "MnistChecksumError",
    "MnistDownloadError",
    "MnistNotFoundError",
    "default_cache_dir",
    "download_mnist",
    "load_mnist",
    "parse_idx",
]

DATA_DIR_ENV = "FEDCHAIN_DATA_DIR"

# Decompressed file name -> SHA-256 of its decompressed bytes.
FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

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
    """Reads decompressed bytes exactly, hashing each one, bounded by ``_MAX_FILE_BYTES``."""

    def __init__(self, f: _Readable, path: Path) -> None:
        self.f, self.path = f, path
        self.digest = hashlib.sha256()
        self.total = 0

    def read(self, n: int) -> bytes:
        parts, want = [], n
        while want > 0:
            try:
                chunk = self.f.read(want)
            except (OSError, EOFError) as e:
                raise MnistChecksumError(f"{self.path}: not a valid gzip file ({e})") from e
            if not chunk:
                break
            self.total += len(chunk)
            if self.total > _MAX_FILE_BYTES:
                raise MnistChecksumError(f"{self.path}: larger than any MNIST file")
            self.digest.update(chunk)
            parts.append(chunk)
            want -= len(chunk)
        return b"".join(parts)

    def drain(self) -> None:
        while self.read(_CHUNK_BYTES):
            pass


def _parse_rows(reader: _HashingReader, name: str, rows: np.ndarray | None) -> np.ndarray:
    """Read an unsigned-byte IDX array from ``reader``, keeping only ``rows`` (in order)."""
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


def _fetch(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body: bytes = resp.read(_MAX_FILE_BYTES + 1)
    if len(body) > _MAX_FILE_BYTES:
        raise OSError(f"response larger than {_MAX_FILE_BYTES} bytes")
    return body


def download_mnist(
    directory: Path, *, mirrors: Sequence[str] = MIRRORS, timeout: float = 60.0
) -> None:
    """Fetch every missing file into ``directory``, trying each mirror in turn.

    A file is written (decompressed) only after its SHA-256 matches, so a corrupt or
    tampered mirror is skipped, never cached.
    """
    for name, digest in FILES.items():
        if (directory / name).is_file() or (directory / f"{name}.gz").is_file():
            continue
        failures = []
        for mirror in mirrors:
            url = f"{mirror.rstrip('/')}/{name}.gz"
            try:
                data = gzip.decompress(_fetch(url, timeout))
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
    directory, is_cache = _resolve_dir(data_dir)
    missing = [n for n in FILES if _source(directory, n) is None]
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
        download_mnist(directory, mirrors=mirrors, timeout=timeout)

    def read(name: str, rows: np.ndarray | None = None) -> np.ndarray:
        path = _source(directory, name)
        if path is None:  # removed between the check and the read
            raise MnistNotFoundError(f"{directory / name} disappeared while loading")
        return _read_rows(path, name, rows)

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
