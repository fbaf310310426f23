"""Model architectures by registry name, deterministic initialization, hashing, export.

Genesis names an architecture and a seed; every node must then derive the same initial
bytes. Torch's own initializers draw from its global generator, whose stream is an
implementation detail, so we initialize from SHAKE-256 instead: ``shake(seed, name)``
yields 24-bit uniforms, scaled exactly like torch's default (Kaiming-uniform with
``a=sqrt(5)``, i.e. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and biases). That
stream is a two-line spec any implementation can reproduce.

Parameters move between components as :data:`Params`: an ordered ``name -> float32 array``
mapping in the module's ``state_dict`` order. The model hash is SHA-256 over a canonical
serialization of that mapping, never over pickle or safetensors bytes (whose JSON header
formatting is not ours to freeze).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import safetensors.numpy
import torch
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "ModelFormatError",
    "Params",
    "TensorSpec",
    "architecture",
    "build_model",
    "canonical_bytes",
    "export_safetensors",
    "get_params",
    "import_safetensors",
    "init_params",
    "model_hash",
    "set_params",
]

Params = dict[str, np.ndarray]

_HASH_DOMAIN = b"fedchain/model/v1\n"


class ModelFormatError(ValueError):
    """Parameters do not match the architecture (names, order, shapes, dtype, finiteness)."""


def _pool_relu(x: torch.Tensor) -> torch.Tensor:
    """``max_pool2d(relu(x), 2)``, computed as ``relu_(max_pool2d(x, 2))``.

    ReLU is monotonic, so it commutes with max: outputs, and the gradients autograd routes
    back, are bit-identical to the textbook order (a test checks this). Pooling first runs
    ReLU on a quarter of the elements and, in place on the pooled tensor (which no
    backward formula reads), never allocates the conv-sized ReLU output: on a node that
    evaluates while it trains, that buffer would add to the peak memory with every batch.
    """
    return nn.functional.relu(nn.functional.max_pool2d(x, 2), inplace=True)


class CNN(nn.Module):
    """The project's default: two 3x3 conv blocks and one linear layer, 34,826 parameters.

    Small enough that a simulation of ten nodes trains a round quickly on a machine with a
    few cores, and it still reaches 99% test accuracy on MNIST.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.fc = nn.Linear(1600, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(_pool_relu(self.conv2(_pool_relu(self.conv1(x)))), 1))


class FedAvgCNN(nn.Module):
    """The CNN of McMahan et al. (2017): 5x5 convs with 32 and 64 channels, 1,663,370 params."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(3136, 512)
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pool_relu(self.conv2(_pool_relu(self.conv1(x))))
        return self.fc2(nn.functional.relu(self.fc1(torch.flatten(x, 1)), inplace=True))


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "cnn": CNN,
    "fedavg_cnn": FedAvgCNN,
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    fan_in: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Architecture:
    """What a decoder checks an update or model against: tensor names, order and shapes."""

    name: str
    tensors: tuple[TensorSpec, ...]

    @property
    def num_params(self) -> int:
        return sum(t.numel for t in self.tensors)

    def check(self, params: Params) -> None:
        """Raise ModelFormatError unless ``params`` is exactly this architecture."""
        names = list(params)
        expected = [t.name for t in self.tensors]
        if names != expected:
            raise ModelFormatError(f"{self.name}: tensors {names} != expected {expected}")
        for t in self.tensors:
            a = params[t.name]
            if a.dtype != np.float32 or tuple(a.shape) != t.shape:
                raise ModelFormatError(
                    f"{self.name}.{t.name}: {a.dtype}{list(a.shape)}, expected float32"
                    f"{list(t.shape)}"
                )
            if not np.isfinite(a).all():
                raise ModelFormatError(f"{self.name}.{t.name}: contains NaN or Inf")


def _unknown(name: str) -> ModelFormatError:
    return ModelFormatError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")


@cache
def architecture(name: str) -> Architecture:
    """The tensor layout of a registered architecture."""
    factory = ARCHITECTURES.get(name)
    if factory is None:
        raise _unknown(name)
    with torch.device("meta"):
        module = factory()
    specs = []
    owners = dict(module.named_modules())
    for pname, p in module.named_parameters():
        owner = owners[pname.rpartition(".")[0]]
        weight = owner.weight
        fan_in = math.prod(weight.shape[1:])
        specs.append(TensorSpec(pname, tuple(p.shape), int(fan_in)))
    return Architecture(name, tuple(specs))


def init_params(name: str, seed: int) -> Params:
    """Deterministic initial parameters for architecture ``name`` from the genesis seed."""
    arch = architecture(name)
    out: Params = {}
    for t in arch.tensors:
        stream = hashlib.shake_256(
            b"fedchain/init/v1\0"
            + name.encode()
            + b"\0"
            + t.name.encode()
            + b"\0"
            + seed.to_bytes(32, "big", signed=False)
        ).digest(4 * t.numel)
        u = (np.frombuffer(stream, dtype="<u4") >> 8).astype(np.float64) * 2.0**-24
        bound = 1.0 / math.sqrt(t.fan_in)
        out[t.name] = ((2.0 * u - 1.0) * bound).astype(np.float32).reshape(t.shape)
    return out


def build_model(name: str, params: Params | None = None, *, seed: int = 0) -> nn.Module:
    """A torch module of architecture ``name`` holding ``params`` (or the seed's init)."""
    factory = ARCHITECTURES.get(name)
    if factory is None:
        raise _unknown(name)
    module = factory()
    set_params(module, params if params is not None else init_params(name, seed))
    return module


def get_params(module: nn.Module) -> Params:
    """A detached float32 copy of the module's parameters, in ``state_dict`` order."""
    return {
        k: v.detach().to("cpu", torch.float32).numpy().copy()
        for k, v in module.state_dict().items()
    }


def set_params(module: nn.Module, params: Params) -> None:
    with torch.no_grad():
        for k, p in module.state_dict().items():
            p.copy_(torch.from_numpy(np.ascontiguousarray(params[k])))


def canonical_bytes(params: Params) -> bytes:
    """Name, dtype, shape and little-endian data of each tensor, in order, length-prefixed."""
    parts = [_HASH_DOMAIN, struct.pack("<I", len(params))]
    for name, a in params.items():
        if a.dtype != np.float32:
            raise ModelFormatError(f"{name}: dtype {a.dtype}, expected float32")
        nb = name.encode()
        parts.append(struct.pack("<I", len(nb)) + nb + b"F32" + struct.pack("<B", a.ndim))
        parts.append(struct.pack(f"<{a.ndim}Q", *a.shape))
        parts.append(np.ascontiguousarray(a, dtype="<f4").tobytes())
    return b"".join(parts)


def model_hash(params: Params) -> bytes:
    """SHA-256 of :func:`canonical_bytes`: the model's identity on chain."""
    return hashlib.sha256(canonical_bytes(params)).digest()


def export_safetensors(params: Params) -> bytes:
    """Safetensors bytes for users and tools (loadable anywhere without pickle)."""
    return safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in params.items()})


def import_safetensors(data: bytes, arch_name: str) -> Params:
    """Parse safetensors bytes and check them against the architecture.

    Safetensors is a JSON header plus raw buffers, so parsing untrusted bytes runs no code;
    the check then rejects missing, extra, reshaped, non-float32 or non-finite tensors.
    """
    arch = architecture(arch_name)
    try:
        loaded = safetensors.numpy.load(bytes(data))
    except Exception as e:  # the library raises several types for malformed input
        raise ModelFormatError(f"not a valid safetensors file: {e}") from e
    names = {t.name for t in arch.tensors}
    if set(loaded) != names:
        raise ModelFormatError(f"{arch_name}: tensors {sorted(loaded)} != {sorted(names)}")
    params = {t.name: loaded[t.name] for t in arch.tensors}
    arch.check(params)
    return params
