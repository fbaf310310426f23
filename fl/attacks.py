"""Poisoning behaviours for tests and benchmarks: what the robust rules must withstand.

Each attack transforms what an honest trainer would produce (its labels before training,
or its delta after), so a simulation can mark any subset of clients as attackers without
a separate training path. NaN injection produces encoded bytes directly, because an
honest encoder refuses non-finite values; decoders must reject them.
"""

from __future__ import annotations

import numpy as np
import torch

from fl.models import Params
from fl.update import EncodedTensor, ModelUpdate

__all__ = [
    "ATTACKS",
    "flip_labels",
    "free_rider",
    "gaussian_noise",
    "nan_update",
    "sign_flip",
]

ATTACKS = ("none", "sign_flip", "gaussian", "label_flip", "free_rider", "stale", "nan")


def sign_flip(delta: Params, scale: float = 10.0) -> Params:
    """Send ``-scale`` times the honest delta: pushes the model away from the optimum."""
    return {k: (-scale * v).astype(np.float32) for k, v in delta.items()}


def gaussian_noise(delta: Params, sigma: float, rng: np.random.Generator) -> Params:
    """Replace the delta with pure N(0, sigma^2) noise of the same shapes."""
    return {k: rng.normal(0.0, sigma, v.shape).astype(np.float32) for k, v in delta.items()}


def flip_labels(labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Label flipping during local training: class c becomes ``num_classes - 1 - c``."""
    return (num_classes - 1) - labels


def free_rider(delta: Params, stale: Params | None = None) -> Params:
    """Contribute nothing: a zero delta, or replay a ``stale`` delta from an earlier round."""
    if stale is not None:
        return {k: stale[k].astype(np.float32).copy() for k in delta}
    return {k: np.zeros_like(v, dtype=np.float32) for k, v in delta.items()}


def nan_update(update: ModelUpdate, tensor_index: int = 0) -> bytes:
    """Re-encode ``update`` with a NaN planted in one tensor (float encodings only)."""
    tensors = list(update.tensors)
    et = tensors[tensor_index]
    if update.encoding == "int8":
        tensors[tensor_index] = et.replace(scale=np.array(np.nan, "<f4").tobytes())
    else:
        dtype = "<f4" if update.encoding == "float32" else "<f2"
        vals = np.frombuffer(et.values, dtype).copy()
        vals[0] = np.nan
        tensors[tensor_index] = EncodedTensor(
            et.name, et.shape, et.scale, et.indices, vals.tobytes()
        )
    return update.replace(tensors=tuple(tensors)).encode()
