from __future__ import annotations

import numpy as np
import pytest
import torch

from fl.models import (
    ModelFormatError,
    architecture,
    build_model,
    export_safetensors,
    get_params,
    import_safetensors,
    init_params,
    model_hash,
)

# Pinned: genesis hashes must never change silently (a change forks every existing chain).
CNN_SEED0 = "edfe02f6f16319421ec193a5c8c86f916e043b68fec7160e1b47f920d91b19ba"
FEDAVG_SEED0 = "ccfdee86aa076675d0bd31810a6c34d71641f47fec2de98dcece1287a5e8530a"


def test_parameter_counts() -> None:
    assert architecture("cnn").num_params == 34826
    assert architecture("fedavg_cnn").num_params == 1663370
    for name in ("cnn", "fedavg_cnn"):
        module = build_model(name, seed=1)
        assert sum(p.numel() for p in module.parameters()) == architecture(name).num_params
        assert module(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_init_is_deterministic_and_pinned() -> None:
    assert model_hash(init_params("cnn", 0)).hex() == CNN_SEED0
    assert model_hash(init_params("fedavg_cnn", 0)).hex() == FEDAVG_SEED0
    assert model_hash(init_params("cnn", 1)) != model_hash(init_params("cnn", 0))


def test_init_matches_torch_default_scale() -> None:
    p = init_params("cnn", 3)
    bound = 1 / np.sqrt(1600)
    fc = p["fc.weight"]
    assert np.abs(fc).max() <= bound and np.abs(fc).max() > 0.99 * bound
    assert abs(float(fc.mean())) < 0.01 * bound * 10


def test_hash_covers_every_byte_and_name() -> None:
    p = init_params("cnn", 0)
    q = {k: v.copy() for k, v in p.items()}
    q["fc.bias"].view(np.uint32)[3] ^= 1
    assert model_hash(q) != model_hash(p)
    renamed = {("x" + k if k == "fc.bias" else k): v for k, v in p.items()}
    assert model_hash(renamed) != model_hash(p)


def test_module_round_trip() -> None:
    p = init_params("fedavg_cnn", 5)
    assert model_hash(get_params(build_model("fedavg_cnn", p))) == model_hash(p)


def test_safetensors_round_trip_and_rejects() -> None:
    p = init_params("cnn", 0)
    blob = export_safetensors(p)
    assert model_hash(import_safetensors(blob, "cnn")) == model_hash(p)
    with pytest.raises(ModelFormatError):
        import_safetensors(blob, "fedavg_cnn")
    with pytest.raises(ModelFormatError):
        import_safetensors(b"\x00" * 40, "cnn")
    bad = dict(p)
    bad["fc.bias"] = np.full(10, np.nan, np.float32)
    with pytest.raises(ModelFormatError, match="NaN"):
        import_safetensors(export_safetensors(bad), "cnn")
    bad = dict(p)
    bad["fc.bias"] = np.zeros(11, np.float32)
    with pytest.raises(ModelFormatError):
        import_safetensors(export_safetensors(bad), "cnn")
    bad = dict(p)
    bad["fc.bias"] = np.zeros(10, np.float64)  # type: ignore[assignment]
    with pytest.raises(ModelFormatError):
        import_safetensors(export_safetensors(bad), "cnn")


def test_unknown_architecture() -> None:
    with pytest.raises(ModelFormatError, match="unknown"):
        architecture("resnet")
    with pytest.raises(ModelFormatError, match="unknown"):
        build_model("resnet")


def _textbook_forward(name: str, m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The architectures as first written: ReLU (out of place) before each max-pool."""
    f = torch.nn.functional
    x = f.max_pool2d(f.relu(m.conv1(x)), 2)
    x = f.max_pool2d(f.relu(m.conv2(x)), 2)
    x = torch.flatten(x, 1)
    if name == "cnn":
        return m.fc(x)  # type: ignore[no-any-return]
    return m.fc2(f.relu(m.fc1(x)))  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["cnn", "fedavg_cnn"])
def test_forward_and_gradients_match_textbook_order(name: str) -> None:
    """Pool-then-in-place-ReLU must give the same bits as ReLU-then-pool, forward and back.

    The input has exact ties and all-negative pooling windows (the cases where the order
    could route a gradient differently).
    """
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(6, 1, 28, 28, generator=gen)
    x[:, :, :8, :8] = 0.0
    x[:, :, 20:, 20:] = -1.0
    y = torch.randint(0, 10, (6,), generator=gen)
    params = init_params(name, 11)
    ours, ref = build_model(name, params), build_model(name, params)
    out = ours(x)
    expected = _textbook_forward(name, ref, x)
    assert torch.equal(out, expected)
    torch.nn.functional.cross_entropy(out, y).backward()
    torch.nn.functional.cross_entropy(expected, y).backward()
    for (k, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        assert torch.equal(p.grad, q.grad), k
    with torch.inference_mode():
        assert torch.equal(ours(x), expected.detach())
