"""Model updates: the delta a trainer publishes, in a canonical self-describing byte format.

An update is a :class:`ModelUpdate` record (``node.core.codec``: canonical msgpack, so it hashes
and signs like every other wire object) whose tensors carry raw little-endian arrays:
never pickle, never ``torch.load``. Encodings trade bytes for precision: ``float32``
(exact), ``float16`` (half the bytes), ``int8`` (a quarter, one float32 scale per tensor),
each optionally top-k sparsified (u32 indices + values of the largest-magnitude entries).

Decoding is where untrusted bytes become numbers, so it checks everything the aggregator
relies on: the architecture's tensor names, order and shapes; exact byte lengths for the
encoding; strictly increasing in-range sparse indices; finite values within
``MAX_ABS_DELTA`` (the range the fixed-point aggregator is proven not to overflow in).
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from typing import Annotated

import numpy as np

from fl.models import Architecture, Params, architecture
from node.core.codec import U32, U64, Bytes, Bytes32, CodecError, Record, Seq, Str

__all__ = [
    "ENCODINGS",
    "MAX_ABS_DELTA",
    "DecodedUpdate",
    "EncodedTensor",
    "ModelUpdate",
    "NonFiniteUpdateError",
    "UpdateError",
    "clip_and_noise",
    "decode_update",
    "encode_update",
    "l2_norm",
    "max_update_bytes",
]

ENCODINGS: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "int8": np.dtype("i1"),
}
# Every decoded delta coordinate must lie in [-MAX_ABS_DELTA, MAX_ABS_DELTA]; with the
# aggregator's 2**-24 fixed-point grid that keeps each coordinate within 2**31.
MAX_ABS_DELTA = 128.0
_MAX_TENSOR_BYTES = 8 << 20
_NAME = Annotated[str, Str(64, charset=string.ascii_letters + string.digits + "._")]


class UpdateError(CodecError):
    """An update is malformed or does not fit the architecture."""


class NonFiniteUpdateError(UpdateError):
    """An update contains NaN or Inf (an attack or a diverged trainer)."""


class EncodedTensor(Record):
    """One tensor of a delta; ``indices`` (u32 LE, ascending) is empty when dense."""

    name: _NAME
    shape: Annotated[tuple[U32, ...], Seq(8)]
    scale: Annotated[bytes, Bytes(0, 4)]
    indices: Annotated[bytes, Bytes(0, _MAX_TENSOR_BYTES)]
    values: Annotated[bytes, Bytes(0, _MAX_TENSOR_BYTES)]


class ModelUpdate(Record):
    """What a trainer signs and publishes for round ``round``, trained from ``base_hash``."""

    TAG = "model_update"
    MAX_SIZE = 2 * _MAX_TENSOR_BYTES

    arch: Annotated[str, Str(32)]
    base_hash: Bytes32
    round: U64
    num_samples: U64
    encoding: Annotated[str, Str(16)]
    tensors: Annotated[tuple[EncodedTensor, ...], Seq(64)]


@dataclass(frozen=True)
class DecodedUpdate:
    """A validated update: the delta is float32, finite and shaped like the architecture."""

    arch: str
    base_hash: bytes
    round: int
    num_samples: int
    delta: Params


def max_update_bytes(arch: Architecture, encoding: str, topk: float | None = None) -> int:
    """An upper bound on the encoded size, for mempool and gossip size limits."""
    itemsize = ENCODINGS[encoding].itemsize
    total = 256
    for t in arch.tensors:
        k = t.numel if topk is None else max(1, math.ceil(t.numel * topk))
        total += 128 + 4 + k * itemsize + (0 if topk is None else 4 * k)
    return total


def l2_norm(delta: Params) -> float:
    return math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in delta.values()))


def clip_and_noise(
    delta: Params, clip: float, noise_multiplier: float, rng: np.random.Generator
) -> Params:
    """Differential privacy: scale to L2 norm <= ``clip``, add N(0, (noise_multiplier*clip)^2).

    Each call is one Gaussian mechanism with sensitivity ``clip``; account for it with
    :class:`fl.privacy.RDPAccountant`.
    """
    if not clip > 0 or noise_multiplier < 0:
        raise UpdateError("DP needs clip > 0 and noise_multiplier >= 0")
    norm = l2_norm(delta)
    factor = min(1.0, clip / norm) if norm > 0 else 1.0
    std = noise_multiplier * clip
    return {
        k: (v.astype(np.float64) * factor + rng.normal(0.0, std, v.shape)).astype(np.float32)
        for k, v in delta.items()
    }


def _encode_values(v: np.ndarray, encoding: str) -> tuple[bytes, bytes]:
    """(scale bytes, value bytes) of a flat float32 array."""
    if encoding == "int8":
        peak = float(np.max(np.abs(v))) if v.size else 0.0
        scale = np.float32(peak / 127.0) if peak > 0 else np.float32(0.0)
        q = np.zeros(v.shape, np.int8) if scale == 0 else np.clip(np.rint(v / scale), -127, 127)
        return np.array(scale, "<f4").tobytes(), q.astype("i1").tobytes()
    return b"", v.astype(ENCODINGS[encoding]).tobytes()


def encode_update(
    delta: Params,
    *,
    arch: str,
    base_hash: bytes,
    round_: int,
    num_samples: int,
    encoding: str = "float32",
    topk: float | None = None,
) -> ModelUpdate:
    """Encode a float32 delta; ``topk`` (0 < topk <= 1) keeps that fraction per tensor."""
    if encoding not in ENCODINGS:
        raise UpdateError(f"unknown encoding {encoding!r}; expected one of {sorted(ENCODINGS)}")
    if topk is not None and not 0.0 < topk <= 1.0:
        raise UpdateError(f"topk must be in (0, 1], got {topk}")
    spec = architecture(arch)
    spec.check({k: np.asarray(v) for k, v in delta.items()})
    tensors = []
    for t in spec.tensors:
        flat = np.ascontiguousarray(delta[t.name], dtype=np.float32).ravel()
        idx_bytes = b""
        if topk is not None:
            k = max(1, math.ceil(flat.size * topk))
            # Stable order: ties in magnitude resolve by index, so encoding is deterministic.
            keep = np.sort(np.argsort(-np.abs(flat), kind="stable")[:k])
            flat = flat[keep]
            idx_bytes = keep.astype("<u4").tobytes()
        scale, values = _encode_values(flat, encoding)
        tensors.append(EncodedTensor(t.name, t.shape, scale, idx_bytes, values))
    return ModelUpdate(arch, base_hash, round_, num_samples, encoding, tuple(tensors))


def _decode_tensor(et: EncodedTensor, numel: int, encoding: str, path: str) -> np.ndarray:
    dtype = ENCODINGS[encoding]
    if et.indices:
        if len(et.indices) % 4:
            raise UpdateError("index bytes not a multiple of 4", path)
        idx = np.frombuffer(et.indices, "<u4").astype(np.int64)
        if idx.size > numel or (idx.size and (idx[-1] >= numel or np.any(np.diff(idx) <= 0))):
            raise UpdateError("sparse indices must be strictly increasing and in range", path)
        count = idx.size
    else:
        idx, count = None, numel
    if len(et.values) != count * dtype.itemsize:
        raise UpdateError(
            f"{len(et.values)} value bytes, {count} {encoding} values need "
            f"{count * dtype.itemsize}",
            path,
        )
    vals = np.frombuffer(et.values, dtype).astype(np.float32)
    if encoding == "int8":
        if len(et.scale) != 4:
            raise UpdateError("int8 tensors need a 4-byte float32 scale", path)
        scale = np.frombuffer(et.scale, "<f4")[0]
        if not (np.isfinite(scale) and scale >= 0):
            raise NonFiniteUpdateError("int8 scale must be finite and non-negative", path)
        if np.any(vals == -128):
            raise UpdateError("int8 value -128 is not used by the encoding", path)
        vals = vals * scale
    elif et.scale:
        raise UpdateError(f"{encoding} tensors carry no scale", path)
    if not np.isfinite(vals).all():
        raise NonFiniteUpdateError("NaN or Inf in update", path)
    if vals.size and float(np.max(np.abs(vals))) > MAX_ABS_DELTA:
        raise UpdateError(f"a value exceeds +-{MAX_ABS_DELTA:g}", path)
    if idx is None:
        return vals
    dense = np.zeros(numel, np.float32)
    dense[idx] = vals
    return dense


def decode_update(
    data: bytes | ModelUpdate, arch: str, *, max_bytes: int | None = None
) -> DecodedUpdate:
    """Parse and validate an update against architecture ``arch``.

    Raises :class:`UpdateError` (a ``CodecError``) for anything malformed, and its subclass
    :class:`NonFiniteUpdateError` for NaN/Inf, so callers can score the sender.
    """
    spec = architecture(arch)
    if isinstance(data, ModelUpdate):
        upd = data
    else:
        # The largest legitimate form: float32 values plus an index for every entry.
        limit = max_update_bytes(spec, "float32", 1.0) if max_bytes is None else max_bytes
        if len(data) > limit:
            raise UpdateError(f"update of {len(data)} bytes exceeds the limit {limit}")
        upd = ModelUpdate.decode(data)
    if upd.arch != arch:
        raise UpdateError(f"update for architecture {upd.arch!r}, expected {arch!r}")
    if upd.encoding not in ENCODINGS:
        raise UpdateError(f"unknown encoding {upd.encoding!r}", "encoding")
    if len(upd.tensors) != len(spec.tensors):
        raise UpdateError(f"{len(upd.tensors)} tensors, expected {len(spec.tensors)}")
    delta: Params = {}
    for i, (et, t) in enumerate(zip(upd.tensors, spec.tensors, strict=True)):
        path = f"tensors[{i}]"
        if et.name != t.name or tuple(et.shape) != t.shape:
            raise UpdateError(
                f"tensor {et.name}{list(et.shape)}, expected {t.name}{list(t.shape)}", path
            )
        delta[t.name] = _decode_tensor(et, t.numel, upd.encoding, path).reshape(t.shape)
    return DecodedUpdate(upd.arch, upd.base_hash, upd.round, upd.num_samples, delta)
