from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl.attacks import nan_update
from fl.models import Params, architecture, init_params, model_hash
from fl.update import (
    ENCODINGS,
    MAX_ABS_DELTA,
    EncodedTensor,
    ModelUpdate,
    NonFiniteUpdateError,
    UpdateError,
    clip_and_noise,
    decode_update,
    encode_update,
    l2_norm,
    max_update_bytes,
)
from node.core.codec import CodecError

BASE = model_hash(init_params("cnn", 0))


def _delta(seed: int, scale: float = 0.01) -> Params:
    rng = np.random.default_rng(seed)
    return {
        t.name: rng.normal(0, scale, t.shape).astype(np.float32)
        for t in architecture("cnn").tensors
    }


def _enc(delta: Params, encoding: str = "float32", topk: float | None = None) -> ModelUpdate:
    return encode_update(
        delta,
        arch="cnn",
        base_hash=BASE,
        round_=3,
        num_samples=600,
        encoding=encoding,
        topk=topk,
    )


@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**32 - 1),
    encoding=st.sampled_from(sorted(ENCODINGS)),
    topk=st.sampled_from([None, 0.01, 0.3, 1.0]),
    scale=st.sampled_from([1e-4, 0.01, 1.0]),
)
def test_round_trip_error_bounds(
    seed: int, encoding: str, topk: float | None, scale: float
) -> None:
    delta = _delta(seed, scale)
    upd = _enc(delta, encoding, topk)
    blob = upd.encode()
    assert len(blob) <= max_update_bytes(architecture("cnn"), encoding, topk)
    dec = decode_update(blob, "cnn")
    assert (dec.base_hash, dec.round, dec.num_samples) == (BASE, 3, 600)
    assert ModelUpdate.decode(blob).encode() == blob
    for name, v in delta.items():
        got = dec.delta[name]
        assert got.dtype == np.float32 and got.shape == v.shape
        kept = got != 0
        if topk is None:
            kept[:] = True
        else:
            # The kept entries are the largest in magnitude.
            k = int(np.ceil(v.size * topk))
            assert np.count_nonzero(kept) <= k
        peak = float(np.abs(v).max())
        tol = {"float32": 0.0, "float16": 1e-3 * peak + 1e-7, "int8": peak / 127 * 0.51}
        assert np.abs(got[kept] - v[kept]).max() <= tol[encoding] + 1e-12


def test_sizes_per_encoding() -> None:
    delta = _delta(0)
    sizes = {e: len(_enc(delta, e).encode()) for e in ENCODINGS}
    n = architecture("cnn").num_params
    assert n * 4 < sizes["float32"] < n * 4 + 1024
    assert n * 2 < sizes["float16"] < n * 2 + 1024
    assert n < sizes["int8"] < n + 1024
    assert len(_enc(delta, "int8", 0.1).encode()) < 0.55 * sizes["int8"]


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_nan_rejected(encoding: str) -> None:
    blob = nan_update(_enc(_delta(1), encoding))
    with pytest.raises(NonFiniteUpdateError):
        decode_update(blob, "cnn")


def test_inf_and_huge_rejected() -> None:
    d = _delta(2)
    d["fc.bias"][0] = np.inf
    with pytest.raises(NonFiniteUpdateError):
        decode_update(_raw(d), "cnn")
    d = _delta(2)
    d["fc.bias"][0] = MAX_ABS_DELTA * 2
    with pytest.raises(UpdateError, match="exceeds"):
        decode_update(_enc(d).encode(), "cnn")


def _raw(d: Params) -> bytes:
    """float32 encoding without the encoder's own checks (as an attacker would)."""
    tensors = tuple(
        EncodedTensor(t.name, t.shape, b"", b"", d[t.name].astype("<f4").tobytes())
        for t in architecture("cnn").tensors
    )
    return ModelUpdate("cnn", BASE, 0, 1, "float32", tensors).encode()


def _mutate(upd: ModelUpdate, i: int, **changes: object) -> bytes:
    tensors = list(upd.tensors)
    tensors[i] = tensors[i].replace(**changes)
    return upd.replace(tensors=tuple(tensors)).encode()


def test_structure_checks() -> None:
    upd = _enc(_delta(3))
    with pytest.raises(UpdateError, match="architecture"):
        decode_update(upd.replace(arch="fedavg_cnn").encode(), "cnn")
    with pytest.raises(UpdateError, match="expected"):
        decode_update(_mutate(upd, 0, name="conv9.weight"), "cnn")
    with pytest.raises(UpdateError, match="expected"):
        decode_update(_mutate(upd, 1, shape=(31,)), "cnn")
    with pytest.raises(UpdateError, match="value bytes"):
        decode_update(_mutate(upd, 1, values=upd.tensors[1].values[:-4]), "cnn")
    with pytest.raises(UpdateError, match="tensors"):
        decode_update(upd.replace(tensors=upd.tensors[:-1]).encode(), "cnn")
    with pytest.raises(UpdateError, match="encoding"):
        decode_update(upd.replace(encoding="bf16").encode(), "cnn")
    with pytest.raises(UpdateError, match="scale"):
        decode_update(_mutate(upd, 1, scale=b"\0\0\0\0"), "cnn")
    with pytest.raises(UpdateError, match="limit"):
        decode_update(upd.encode(), "cnn", max_bytes=1000)


def test_sparse_index_checks() -> None:
    upd = _enc(_delta(4), "float16", 0.1)
    et = upd.tensors[1]
    idx = np.frombuffer(et.indices, "<u4").copy()
    for bad in (idx[::-1].copy(), np.r_[idx[:-1], 32].astype("<u4"), np.r_[idx[:-1], idx[0]]):
        with pytest.raises(UpdateError, match="indices"):
            decode_update(_mutate(upd, 1, indices=bad.astype("<u4").tobytes()), "cnn")
    with pytest.raises(UpdateError):
        decode_update(_mutate(upd, 1, indices=et.indices[:-1]), "cnn")


def test_encoder_rejects_bad_arguments() -> None:
    with pytest.raises(UpdateError):
        _enc(_delta(0), "bf16")
    with pytest.raises(UpdateError):
        _enc(_delta(0), "int8", 0.0)


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_garbage_only_raises_codec_errors(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_update(data, "cnn")


@settings(max_examples=30)
@given(st.integers(0, 10_000), st.integers(0, 10))
def test_bit_flips_never_crash(pos: int, bit: int) -> None:
    blob = bytearray(_enc(_delta(5), "int8", 0.05).encode())
    blob[pos % len(blob)] ^= 1 << (bit % 8)
    with contextlib.suppress(CodecError):
        decode_update(bytes(blob), "cnn")


def test_dp_clip_and_noise() -> None:
    d = _delta(6, 1.0)
    rng = np.random.default_rng(0)
    clipped = clip_and_noise(d, 2.0, 0.0, rng)
    assert abs(l2_norm(clipped) - 2.0) < 1e-3
    small = _delta(6, 1e-4)
    assert l2_norm(clip_and_noise(small, 2.0, 0.0, rng)) == pytest.approx(l2_norm(small))
    noisy = clip_and_noise(d, 1.0, 1.0, rng)
    residual = np.concatenate([(noisy[k] - clipped[k] / 2).ravel() for k in d])
    assert abs(float(residual.std()) - 1.0) < 0.02
    with pytest.raises(UpdateError):
        clip_and_noise(d, 0.0, 1.0, rng)
