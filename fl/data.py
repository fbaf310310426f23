"""MNIST from the four standard IDX files: local directory, user cache, or a verified download.

Every node trains on MNIST, so the data must be exactly the published files: whatever the
source (a shared directory, the cache, a mirror), each decompressed file is checked against
its SHA-256 before use. Images stay ``uint8`` tensors (47 MB for the training set instead
of 188 MB as float32); training normalizes each batch on the fly, which is cheaper than
converting the whole set up front.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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


def _read_verified(directory: Path, name: str) -> bytes | None:
    """The decompressed, checksum-verified bytes of ``name`` in ``directory``, if present."""
    raw_path, gz_path = directory / name, directory / f"{name}.gz"
    if raw_path.is_file():
        data = raw_path.read_bytes()
    elif gz_path.is_file():
        try:
            data = gzip.decompress(gz_path.read_bytes())
        except (OSError, EOFError) as e:
            raise MnistChecksumError(f"{gz_path}: not a valid gzip file ({e})") from e
    else:
        return None
    if hashlib.sha256(data).hexdigest() != FILES[name]:
        where = raw_path if raw_path.is_file() else gz_path
        raise MnistChecksumError(
            f"{where}: SHA-256 does not match the published MNIST file; delete it or "
            "point FEDCHAIN_DATA_DIR at a good copy"
        )
    return data


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a crash never leaves a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
            _atomic_write(directory / name, data)
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
) -> Mnist:
    """Load MNIST from ``data_dir``, ``$FEDCHAIN_DATA_DIR`` or the user cache.

    An explicit directory must already hold the files (a typo should not silently trigger
    a download elsewhere); the cache directory is filled from the mirrors on first use.
    """
    directory, is_cache = _resolve_dir(data_dir)
    missing = [n for n in FILES if not (directory / n).is_file()]
    missing = [n for n in missing if not (directory / f"{n}.gz").is_file()]
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
    arrays = {}
    for name in FILES:
        data = _read_verified(directory, name)
        if data is None:  # removed between the check and the read
            raise MnistNotFoundError(f"{directory / name} disappeared while loading")
        arrays[name] = parse_idx(data, name=name)
    return Mnist(
        train_images=torch.from_numpy(arrays["train-images-idx3-ubyte"].copy()),
        train_labels=torch.from_numpy(arrays["train-labels-idx1-ubyte"].astype(np.int64)),
        test_images=torch.from_numpy(arrays["t10k-images-idx3-ubyte"].copy()),
        test_labels=torch.from_numpy(arrays["t10k-labels-idx1-ubyte"].astype(np.int64)),
    )
