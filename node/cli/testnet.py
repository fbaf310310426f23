"""``fedchain testnet up`` and ``fedchain testnet down``: run a local testnet end to end."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from node.cli.common import CLIError, positive_int

__all__ = ["register_testnet_run"]


def _table(sts: list[dict[str, Any] | None], elapsed: float, min_updates: int) -> Any:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    t = Table(title=f"fedchain testnet  ({elapsed:.0f}s)")
    for col in ("node", "height", "round", "peers", "mempool", "accuracy", "state"):
        t.add_column(col, justify="right" if col not in ("node", "state") else "left")
    # All nodes hold the same global model per round, so a node that does not evaluate
    # (by default every node but node0) shows the accuracy another node measured on it.
    measured = {
        s["test_accuracy_round"]: (s["test_accuracy"], str(s.get("moniker", f"node{i}")))
        for i, s in enumerate(sts)
        if s is not None and s.get("test_accuracy") is not None
    }
    pending = 0
    borrowed = set()
    for i, s in enumerate(sts):
        if s is None:
            t.add_row(f"node{i}", "-", "-", "-", "-", "-", "starting")
            continue
        acc = s.get("test_accuracy")
        shown = "-" if acc is None else f"{acc:.4f}"
        if acc is None and s.get("fl_round") in measured:
            value, by = measured[s["fl_round"]]
            shown = f"{value:.4f}*"
            borrowed.add(by)
        pending = max(pending, int(s.get("mempool_txs") or 0))
        t.add_row(
            str(s.get("moniker", f"node{i}")),
            str(s["latest_height"]),
            str(s["fl_round"]),
            str(s["peers"]),
            str(s["mempool_txs"]),
            shown,
            "syncing" if s.get("catching_up") else "ok",
        )
    if borrowed:
        t.caption = f"* same global model, evaluated by {', '.join(sorted(borrowed))}"
    bar = ProgressBar(total=max(min_updates, 1), completed=min(pending, min_updates), width=40)
    label = Text(f"updates pending for the current round: {pending}/{min_updates}  ")
    return Group(t, Group(label, bar))


def _cmd_up(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from node.cli.data import fetch_mnist_once
    from node.home import HomeError, testnet_init
    from node.testnet.runner import Testnet, set_round_timeout, write_plot

    directory = Path(args.dir)
    mnist = fetch_mnist_once(args.data_dir)  # once for all nodes, before any starts
    try:
        homes = testnet_init(
            directory,
            args.nodes,
            engine=args.engine,
            partition=args.partition,
            model=args.model,
            base_port=args.base_port,
            fl_data_dir=str(mnist),
            eval_samples=args.eval_samples,
            peer_eval_samples=args.peer_eval_samples,
        )
    except HomeError as e:
        raise CLIError(str(e)) from e
    set_round_timeout(directory, args.round_timeout_blocks)
    min_updates = homes[0].genesis().fl.min_updates
    extra: list[str] = []
    if args.max_train_samples:
        extra += ["--max-train-samples", str(args.max_train_samples)]
    net = Testnet.from_homes(directory, tuple(extra))
    net.start(detach=args.detach)
    console = Console()
    if args.detach:
        console.print(f"started {len(net.nodes)} nodes in the background; logs in {directory}")
        console.print(f"stop them with: fedchain testnet down --dir {directory}")
        return 0
    try:
        with Live(console=console, refresh_per_second=2) as live:
            result = net.run(
                target_accuracy=args.target_accuracy,
                max_rounds=args.max_rounds,
                timeout=args.timeout,
                on_tick=lambda s, t: live.update(_table(s, t, min_updates)),
            )
        report = net.report(result)
    except KeyboardInterrupt:
        console.print("interrupted: stopping every node")
        net.stop()
        return 130
    codes = net.stop()
    report["exit_codes"] = codes
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_plot(report, directory / "accuracy.png")
    console.print(
        f"{result.reason}: {result.rounds} rounds in {result.seconds:.0f}s, accuracy "
        f"{'-' if result.accuracy is None else f'{result.accuracy:.4f}'}; nodes agree: "
        f"{report['nodes_agree']}; report: {directory / 'report.json'}"
    )
    return 0 if result.reached and report["nodes_agree"] else 1


def _cmd_down(args: argparse.Namespace) -> int:
    from node.testnet.runner import stop_detached

    t0 = time.monotonic()
    try:
        n = stop_detached(Path(args.dir))
    except FileNotFoundError as e:
        raise CLIError(str(e)) from e
    print(f"stopped {n} nodes in {time.monotonic() - t0:.1f}s")
    return 0


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be in (0, 1]")
    return v


def register_testnet_run(tsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``up`` and ``down`` to the ``testnet`` group."""
    p = tsub.add_parser(
        "up",
        help="generate homes, run N nodes training MNIST, stop at a target accuracy",
        description="Create DIR with N node homes (as `testnet init`), start every node on "
        "127.0.0.1, show a live table, stop when the target accuracy or the round limit is "
        "reached, write DIR/report.json and DIR/accuracy.png, and stop every node.",
    )
    p.add_argument("--nodes", type=positive_int, default=4, help="number of nodes (default 4)")
    p.add_argument("--dir", default="testnet", help="directory for homes, logs and the report")
    p.add_argument("--engine", default="tendermint", help="consensus engine (tendermint|solo)")
    p.add_argument("--partition", default="iid", help="iid | dirichlet:ALPHA | shards:K")
    p.add_argument("--model", default="cnn", help="model architecture (default cnn)")
    p.add_argument("--target-accuracy", type=_fraction, default=0.99, help="stop at this")
    p.add_argument("--max-rounds", type=positive_int, default=50, help="or after this many")
    p.add_argument("--timeout", type=float, default=3600.0, help="or after this many seconds")
    p.add_argument(
        "--data-dir",
        help="full MNIST copy each node's shard is split from (default: $FEDCHAIN_DATA_DIR, "
        "else the cache, downloaded once with a progress bar)",
    )
    p.add_argument("--base-port", type=positive_int, default=26656, help="first port")
    p.add_argument(
        "--max-train-samples",
        type=positive_int,
        default=None,
        help="cap each node's shard (quick demos)",
    )
    p.add_argument(
        "--round-timeout-blocks",
        type=positive_int,
        default=30,
        help="blocks after which a round may close with fewer than min_updates updates "
        "(default 30: at most 5 minutes, since an idle chain cuts a block every 10 s; "
        "sooner with transaction traffic, still above a full shard's training time)",
    )
    p.add_argument(
        "--eval-samples",
        type=positive_int,
        default=10_000,
        help="test images node0 evaluates each global model on (default: all 10000)",
    )
    p.add_argument(
        "--peer-eval-samples",
        type=int,
        default=0,
        help="test images every other node evaluates each global model on (default 0: "
        "only node0 evaluates, since all nodes hold the same model and share this machine)",
    )
    p.add_argument(
        "--detach",
        action="store_true",
        help="start the nodes in the background and return (stop with `testnet down`)",
    )
    p.set_defaults(func=_cmd_up)
    d = tsub.add_parser("down", help="stop a testnet started with `testnet up --detach`")
    d.add_argument("--dir", default="testnet", help="the testnet directory")
    d.set_defaults(func=_cmd_down)
