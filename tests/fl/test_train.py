from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from fl.aggregate import parse_rule
from fl.data import Mnist
from fl.models import build_model, get_params, init_params, model_hash
from fl.partition import partition
from fl.simulation import Client, DPConfig, FederationConfig, local_update, run_federation
from fl.train import (
    MomentumSGD,
    TrainConfig,
    TrainError,
    TrainingStopped,
    evaluate,
    evaluate_metrics,
    lr_at,
    normalize,
    train_local,
)
from fl.update import decode_update


@pytest.mark.slow
def test_local_training_learns(mnist: Mnist) -> None:
    p0 = init_params("cnn", 0)
    x, y = mnist.train_images[:3000], mnist.train_labels[:3000]
    cfg = TrainConfig(batch_size=32, lr=0.05)
    before = evaluate("cnn", p0, mnist.test_images[:2000], mnist.test_labels[:2000])
    res = train_local("cnn", p0, x, y, cfg, seed=1)
    after = evaluate("cnn", res.params, mnist.test_images[:2000], mnist.test_labels[:2000])
    assert before < 0.3 and after > 0.85
    assert res.num_samples == 3000 and res.steps == 94
    adam = train_local("cnn", p0, x, y, TrainConfig(optimizer="adam", lr=1e-3), seed=1)
    assert evaluate("cnn", adam.params, mnist.test_images[:2000], mnist.test_labels[:2000]) > 0.85
    # The caller's parameters are never modified in place.
    assert model_hash(p0) == model_hash(init_params("cnn", 0))


def test_training_is_reproducible_for_a_seed(mnist: Mnist) -> None:
    x, y = mnist.train_images[:500], mnist.train_labels[:500]
    p0 = init_params("cnn", 0)
    runs = [train_local("cnn", p0, x, y, TrainConfig(), seed=s).params for s in (4, 4, 5)]
    assert model_hash(runs[0]) == model_hash(runs[1]) != model_hash(runs[2])


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_momentum_sgd_matches_torch_sgd_bit_for_bit(mnist: Mnist, weight_decay: float) -> None:
    """The node's optimizer is a drop-in for ``torch.optim.SGD``: identical parameters."""
    x, y = mnist.train_images[:256], mnist.train_labels[:256]
    results = []
    for make in (
        lambda m: MomentumSGD(list(m.parameters()), 0.05, 0.9, weight_decay),
        lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=weight_decay),
    ):
        model = build_model("cnn", init_params("cnn", 0))
        opt = make(model)
        for start in range(0, 256, 32):
            loss = torch.nn.functional.cross_entropy(
                model(normalize(x[start : start + 32])), y[start : start + 32]
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        results.append(get_params(model))
    assert model_hash(results[0]) == model_hash(results[1])


def test_a_stop_check_ends_training_and_evaluation_between_batches(mnist: Mnist) -> None:
    x, y = mnist.train_images[:640], mnist.train_labels[:640]
    calls = 0

    def stop_after_three() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3

    with pytest.raises(TrainingStopped):
        train_local(
            "cnn", init_params("cnn", 0), x, y, TrainConfig(), seed=0, stop=stop_after_three
        )
    assert calls == 4  # checked before every batch, stopped before the fourth
    with pytest.raises(TrainingStopped):
        evaluate_metrics("cnn", init_params("cnn", 0), x, y, batch_size=64, stop=lambda: True)


def test_evaluation_reports_accuracy_and_mean_cross_entropy(mnist: Mnist) -> None:
    p0 = init_params("cnn", 0)
    x, y = mnist.test_images[:300], mnist.test_labels[:300]
    result = evaluate_metrics("cnn", p0, x, y, batch_size=128)  # uneven last batch
    with torch.inference_mode():
        logits = build_model("cnn", p0)(normalize(x))
        expected = torch.nn.functional.cross_entropy(logits, y).item()
    assert result.loss == pytest.approx(expected, rel=1e-5)
    assert result.accuracy == evaluate("cnn", p0, x, y) == (logits.argmax(1) == y).float().mean()


def test_config_validation_and_schedules() -> None:
    with pytest.raises(TrainError):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(TrainError):
        TrainConfig(lr_schedule="exp:2")
    with pytest.raises(TrainError):
        TrainConfig(batch_size=0)
    cos = TrainConfig(lr=0.1, lr_schedule="cosine", total_rounds=10)
    assert lr_at(cos, 0) == pytest.approx(0.1) and lr_at(cos, 10) == pytest.approx(0.0)
    assert lr_at(TrainConfig(lr=0.1, lr_schedule="exp:0.5"), 2) == pytest.approx(0.025)
    with pytest.raises(TrainError):
        train_local(
            "cnn",
            init_params("cnn", 0),
            torch.zeros(0, 28, 28, dtype=torch.uint8),
            torch.zeros(0, dtype=torch.int64),
            TrainConfig(),
            seed=0,
        )


def test_local_update_is_a_valid_update(mnist: Mnist) -> None:
    p0 = init_params("cnn", 0)
    upd, delta = local_update(
        "cnn",
        p0,
        mnist.train_images[:256],
        mnist.train_labels[:256],
        TrainConfig(),
        seed=0,
        round_=4,
        encoding="int8",
        dp=DPConfig(clip=1.0, noise_multiplier=0.0),
    )
    dec = decode_update(upd.encode(), "cnn")
    assert dec.base_hash == model_hash(p0) and dec.round == 4 and dec.num_samples == 256
    norm = np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in delta.values()))
    assert norm <= 1.0 + 1e-4


@pytest.mark.slow
def test_federation_learns_and_rejects_nan_clients(mnist: Mnist) -> None:
    labels = mnist.train_labels.numpy()
    parts = [p[:800] for p in partition("iid", labels, 5, seed=0)]
    clients = [Client(p, "nan" if i == 4 else "none") for i, p in enumerate(parts)]
    cfg = FederationConfig(
        rounds=2,
        aggregation=parse_rule("median"),
        encoding="float16",
        train=TrainConfig(batch_size=32, lr=0.05),
        eval_samples=3000,
    )
    seen = []
    reports = run_federation(mnist, clients, cfg, on_round=seen.append)
    assert seen == reports and len(reports) == 2
    assert all(r.rejected == 1 and r.included == 4 for r in reports)
    assert reports[-1].accuracy > 0.9
    again = run_federation(mnist, clients, cfg, stop_accuracy=0.5)
    assert len(again) == 1 and again[0].model_hash == reports[0].model_hash
    assert reports[0].epsilon is None


@pytest.mark.slow
def test_federation_with_dp_reports_epsilon(mnist: Mnist) -> None:
    labels = mnist.train_labels.numpy()
    clients = [Client(p[:200]) for p in partition("iid", labels, 2, seed=0)]
    cfg = FederationConfig(rounds=2, dp=DPConfig(clip=1.0, noise_multiplier=1.0), eval_samples=500)
    reports = run_federation(mnist, clients, cfg)
    eps = [r.epsilon for r in reports]
    assert eps[0] is not None and eps[1] is not None and 0 < eps[0] < eps[1]


@pytest.mark.slow
def test_worker_processes_give_identical_models(mnist: Mnist) -> None:
    """Client randomness depends on (seed, round, client) only, not on where it trains."""
    labels = mnist.train_labels.numpy()
    parts = [p[:300] for p in partition("iid", labels, 3, seed=1)]
    clients = [Client(parts[0]), Client(parts[1], "stale"), Client(parts[2], "sign_flip")]
    cfg = FederationConfig(
        rounds=2, aggregation=parse_rule("median"), encoding="int8", eval_samples=500
    )
    inline = run_federation(mnist, clients, cfg)
    pooled = run_federation(mnist, clients, replace(cfg, workers=2))
    assert [r.model_hash for r in inline] == [r.model_hash for r in pooled]


def test_training_runs_channels_last_and_returns_c_ordered_params(mnist: Mnist) -> None:
    """Weights train in NHWC (the fast oneDNN path), but callers still get C-ordered arrays.

    The result must match an NCHW run up to float rounding: only the summation order of the
    convolutions may differ.
    """
    x, y = mnist.train_images[:256], mnist.train_labels[:256]
    p0 = init_params("cnn", 0)
    model = build_model("cnn", p0)
    res = train_local("cnn", p0, x, y, TrainConfig(), seed=2, model=model)
    assert model.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.conv2.weight.is_contiguous()
    for name, spec in zip(res.params, p0.values(), strict=True):
        a = res.params[name]
        assert a.flags.c_contiguous and a.dtype == np.float32 and a.shape == spec.shape, name
    assert model_hash(res.params) == model_hash(get_params(model))

    reference = build_model("cnn", p0)  # NCHW, torch's default layout
    opt = MomentumSGD(list(reference.parameters()), 0.05, 0.9, 0.0)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(2))
    for start in range(0, len(x), 32):
        idx = order[start : start + 32]
        loss = torch.nn.functional.cross_entropy(reference(normalize(x[idx])), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, ref in get_params(reference).items():
        np.testing.assert_allclose(res.params[name], ref, rtol=0, atol=1e-3, err_msg=name)
