"""Federated-learning benchmarks, in-process (no network): see BENCHMARKS.md.

Parts (run separately with ``--part``; each prints a Markdown table and appends JSON lines
to ``--out``):

- ``speed``: centralized training vs FedAvg with 10 IID clients x 6,000 samples, 1 local
  epoch: rounds/epochs and seconds to 98.5% and 99.0% test accuracy. FedAvg here is the
  genesis default rule (``DEFAULT_RULE``: median norm clip and median sample cap, which
  change no weight on equal IID shards), so ``scripts/bench_testnet.py`` can compare a
  default testnet's models with these rounds one to one (logged as mode ``fedavg``).
- ``noniid``: accuracy after ``--rounds`` rounds on ``shards:2`` and ``dirichlet:0.5``.
- ``attacks``: 3 of 10 clients attacking (sign flip x10, label flip), per rule.
- ``aggregation``: aggregation time per round for 10/50/100 updates of each CNN, per rule.
- ``bytes``: encoded bytes per update per encoding.

Every part calls the library (``fl.simulation.run_federation``, ``fl.aggregate``), never a
re-implementation, so the numbers are those of the code the node runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fl.aggregate import DEFAULT_RULE, aggregate, default_aggregation, parse_rule, rules_help
from fl.data import Mnist, load_mnist
from fl.models import architecture, init_params, model_hash
from fl.partition import partition
from fl.simulation import Client, FederationConfig, RoundReport, run_federation
from fl.train import TrainConfig, evaluate, train_local
from fl.update import ENCODINGS, DecodedUpdate, encode_update

ROBUST_RULES = ["median", "trimmed_mean:0.3", "krum:3", "multi_krum:3", "fedavg,clip=median"]
AGG_RULES = ["fedavg", "median", "trimmed_mean:0.2", "krum:3", "multi_krum:3", "fedavg,clip=median"]


def _log(out: Path | None, record: dict[str, Any]) -> None:
    record = {"time": datetime.now(UTC).isoformat(timespec="seconds"), **record}
    print(json.dumps(record), file=sys.stderr, flush=True)
    if out is not None:
        with out.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _round_logger(out: Path | None, fields: dict[str, Any]) -> Callable[[RoundReport], None]:
    def log(r: RoundReport) -> None:
        _log(
            out,
            {
                **fields,
                "round": r.round,
                "acc": r.accuracy,
                "elapsed_s": r.elapsed_s,
                "train_s": r.train_s,
                "aggregate_s": r.aggregate_s,
                "rejected": r.rejected,
                "model_hash": r.model_hash.hex(),
            },
        )

    return log


def _train_cfg(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        epochs=1,
        batch_size=args.batch_size,
        optimizer="sgd",
        lr=args.lr,
        momentum=0.9,
        threads=args.threads,
    )


def _first(reports: Sequence[RoundReport], target: float) -> tuple[int, float] | None:
    for r in reports:
        if r.accuracy >= target:
            return r.round, r.elapsed_s
    return None


def _fmt(hit: tuple[int, float] | None) -> str:
    return "not reached" if hit is None else f"{hit[0]} ({hit[1]:.0f} s)"


def part_speed(data: Mnist, args: argparse.Namespace) -> None:
    out = args.out
    # Centralized baseline: the same model and optimizer on all 60,000 samples.
    cfg = _train_cfg(args)
    central_cfg = replace(cfg, lr=args.central_lr)
    params = init_params("cnn", args.seed)
    start = time.perf_counter()
    central: list[RoundReport] = []
    for epoch in range(args.central_epochs):
        res = train_local(
            "cnn", params, data.train_images, data.train_labels, central_cfg, seed=epoch
        )
        params = res.params
        acc = evaluate("cnn", params, data.test_images, data.test_labels, threads=args.threads)
        rep = RoundReport(epoch + 1, acc, time.perf_counter() - start, 0, 0, b"", 1, 0)
        central.append(rep)
        _log(
            out,
            {
                "part": "speed",
                "mode": "central",
                "epoch": epoch + 1,
                "acc": acc,
                "elapsed_s": rep.elapsed_s,
            },
        )
        if acc >= 0.99:
            break
    parts = partition("iid", data.train_labels.numpy(), 10, seed=args.seed)
    clients = [Client(p) for p in parts]
    fcfg = FederationConfig(
        arch="cnn",
        seed=args.seed,
        rounds=args.rounds,
        train=cfg,
        aggregation=default_aggregation(),
        eval_threads=args.threads,
        workers=args.workers,
    )
    fl = run_federation(
        data,
        clients,
        fcfg,
        stop_accuracy=0.99,
        on_round=_round_logger(out, {"part": "speed", "mode": "fedavg"}),
    )
    print("| setup | to 98.5% | to 99.0% | final acc |")
    print("|---|---|---|---|")
    print(
        f"| centralized, epochs (s) | {_fmt(_first(central, 0.985))} | "
        f"{_fmt(_first(central, 0.99))} | {central[-1].accuracy:.4f} |"
    )
    print(
        f"| {DEFAULT_RULE} 10x6000 IID, rounds (s) | {_fmt(_first(fl, 0.985))} | "
        f"{_fmt(_first(fl, 0.99))} | {fl[-1].accuracy:.4f} |"
    )
    per_round = statistics.median(r.train_s + r.aggregate_s for r in fl)
    print(f"\nmedian seconds per FL round (train + aggregate): {per_round:.1f}")


def _run_rules(
    data: Mnist,
    args: argparse.Namespace,
    label: str,
    spec: str,
    rules: Sequence[str],
    behaviours: Sequence[str],
) -> None:
    parts = partition(spec, data.train_labels.numpy(), 10, seed=args.seed)
    clients = [Client(p, b) for p, b in zip(parts, behaviours, strict=True)]
    for rule in rules:
        cfg = FederationConfig(
            arch="cnn",
            seed=args.seed,
            rounds=args.rounds,
            train=_train_cfg(args),
            aggregation=parse_rule(rule),
            eval_threads=args.threads,
            workers=args.workers,
        )
        reports = run_federation(
            data,
            clients,
            cfg,
            on_round=_round_logger(args.out, {"part": args.part, "setup": label, "rule": rule}),
        )
        print(f"| {label} | {rule} | {len(reports)} | {reports[-1].accuracy:.4f} |", flush=True)


def part_noniid(data: Mnist, args: argparse.Namespace) -> None:
    print("| partition | rule | rounds | accuracy |\n|---|---|---|---|")
    for spec in ("shards:2", "dirichlet:0.5"):
        _run_rules(data, args, spec, spec, args.rules or ["fedavg", "median"], ["none"] * 10)


def part_attacks(data: Mnist, args: argparse.Namespace) -> None:
    print("| setup | rule | rounds | accuracy |\n|---|---|---|---|")
    rules = args.rules or ["fedavg", *ROBUST_RULES]
    for attack in args.attacks:
        behaviours = [attack] * 3 + ["none"] * 7
        _run_rules(data, args, f"3/10 {attack}", "iid", rules, behaviours)


def _synthetic(
    arch: str, n: int, seed: int
) -> tuple[dict[str, np.ndarray], list[tuple[bytes, DecodedUpdate]]]:
    base = init_params(arch, seed)
    h = model_hash(base)
    rng = np.random.default_rng(seed)
    ups = []
    for i in range(n):
        d = {
            t.name: rng.normal(0, 0.01, t.shape).astype(np.float32)
            for t in architecture(arch).tensors
        }
        ups.append(
            (hashlib.sha256(f"{seed}/{i}".encode()).digest(), DecodedUpdate(arch, h, 0, 600, d))
        )
    return base, ups


def part_aggregation(args: argparse.Namespace) -> None:
    print("| model | updates | " + " | ".join(args.rules or AGG_RULES) + " |")
    print("|---|---|" + "---|" * len(args.rules or AGG_RULES))
    for arch in args.archs:
        for n in args.sizes:
            base, ups = _synthetic(arch, n, args.seed)
            cells = []
            for rule in args.rules or AGG_RULES:
                cfg = parse_rule(rule)
                times = []
                for _ in range(args.reps):
                    t = time.perf_counter()
                    aggregate(base, ups, cfg, arch=arch)
                    times.append(time.perf_counter() - t)
                med = statistics.median(times)
                _log(
                    args.out,
                    {
                        "part": "aggregation",
                        "arch": arch,
                        "n": n,
                        "rule": rule,
                        "median_s": med,
                        "reps": args.reps,
                    },
                )
                cells.append(f"{med:.3f}")
            print(f"| {arch} | {n} | " + " | ".join(cells) + " |", flush=True)
            del ups


def part_bytes(args: argparse.Namespace) -> None:
    print("| model | params | encoding | dense | top-10% | top-1% |\n|---|---|---|---|---|---|")
    for arch in args.archs:
        _, ups = _synthetic(arch, 1, args.seed)
        base_hash, delta = ups[0][1].base_hash, ups[0][1].delta
        for enc in ENCODINGS:
            sizes = [
                len(
                    encode_update(
                        delta,
                        arch=arch,
                        base_hash=base_hash,
                        round_=0,
                        num_samples=600,
                        encoding=enc,
                        topk=k,
                    ).encode()
                )
                for k in (None, 0.1, 0.01)
            ]
            _log(args.out, {"part": "bytes", "arch": arch, "encoding": enc, "sizes": sizes})
            print(
                f"| {arch} | {architecture(arch).num_params} | {enc} | "
                + " | ".join(f"{s:,}" for s in sizes)
                + " |"
            )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=f"aggregation rules (--rules): {rules_help()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--part", required=True, choices=["speed", "noniid", "attacks", "aggregation", "bytes"]
    )
    ap.add_argument("--data-dir", default=os.environ.get("FEDCHAIN_DATA_DIR"))
    ap.add_argument("--rounds", type=int, default=20, help="FL rounds (speed: the maximum)")
    ap.add_argument("--central-epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05, help="client learning rate")
    ap.add_argument("--central-lr", type=float, default=0.05, help="centralized baseline lr")
    ap.add_argument("--workers", type=int, default=0, help="client worker processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rules", nargs="*", help="aggregation rules, as below (default: per part)")
    ap.add_argument("--attacks", nargs="*", default=["sign_flip", "label_flip"])
    ap.add_argument("--archs", nargs="*", default=["cnn", "fedavg_cnn"])
    ap.add_argument("--sizes", nargs="*", type=int, default=[10, 50, 100])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, help="append JSON lines here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"# bench_fl --part {args.part}: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"threads {args.threads}"
    )
    if args.part == "aggregation":
        part_aggregation(args)
    elif args.part == "bytes":
        part_bytes(args)
    else:
        data = load_mnist(args.data_dir)
        {"speed": part_speed, "noniid": part_noniid, "attacks": part_attacks}[args.part](data, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
