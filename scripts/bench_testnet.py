"""End-to-end testnet benchmark: N node processes training MNIST over gossip + consensus.

Runs ``fedchain testnet`` nodes on 127.0.0.1 (IID split, every node a validator and a
trainer) until the target accuracy or the round limit, then reports:

- rounds and wall time to 98.5% and to 99.0% test accuracy (from node0's /fl/history;
  wall time counts from the first node start, so it includes process start-up);
- the per-round split, medians over rounds and nodes, from each node's
  ``data/rounds.jsonl``: local training, submit-to-commit (this node's update published
  until the round-closing block committed: gossip of updates plus waiting for the other
  trainers plus consensus), aggregation (this node's share of re-aggregating), and
  consensus (first sight of the closing block to its commit);
- gossip message bytes per node per round (published + delivered messages: an
  application-level count, not socket bytes) and peak RSS per node (the node's own
  ``ru_maxrss``, i.e. VmHWM). RSS counts every resident page of the shared libraries,
  much of it libtorch code that all nodes share through the page cache, so the script
  also samples each node's ``/proc/PID/smaps_rollup`` every second and reports the peak
  PSS (shared pages divided among the processes using them) and USS (private pages):
  what one more node really costs;
- with ``--baseline``, the in-process FedAvg loop of ``scripts/bench_fl.py --part speed``
  on the same split and hyper-parameters, measured in the same run; ``--repeat N`` runs N
  testnet/baseline pairs back to back and reports each pair's ratio and the median;
- the share of CPU time the hypervisor stole from this VM during each phase (``steal`` in
  ``/proc/stat``): a phase with much steal time ran on a slower machine than its partner,
  and its ratio says little.

Example: ``python scripts/bench_testnet.py --nodes 10 --target 0.99 --baseline --repeat 3``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fl.data import fetch_mnist  # noqa: E402
from node.home import testnet_init  # noqa: E402
from node.testnet.runner import Testnet, set_round_timeout  # noqa: E402


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


def _first_reaching(history: list[dict[str, Any]], target: float) -> tuple[int, float] | None:
    """(rounds, cumulative round seconds) when the global model first reached ``target``."""
    total = 0.0
    for r in history:
        total += float(r["seconds"])
        if r["accuracy"] is not None and float(r["accuracy"]) >= target:
            return int(r["round"]) + 1, round(total, 1)
    return None


def _round_logs(directory: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(directory.glob("node*/data/rounds.jsonl")):
        node = path.parent.parent.name
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            rec["node"] = node
            rows.append(rec)
    return rows


def _split(rows: list[dict[str, Any]], nodes: int) -> dict[str, Any]:
    def col(key: str) -> list[float]:
        return [float(r[key]) for r in rows if r.get(key) is not None]

    bytes_per_round = [
        float(r["gossip_bytes_in"]) + float(r["gossip_bytes_out"])
        for r in rows
        if r.get("round", 0) > 0  # round 0 also carries start-up traffic
    ]
    rss_by_node: dict[str, float] = {}
    for r in rows:
        rss_by_node[r["node"]] = max(rss_by_node.get(r["node"], 0.0), float(r["peak_rss_mb"]))
    return {
        "round_seconds": _median(col("round_seconds")),
        "train_seconds": _median(col("train_seconds")),
        "submit_to_commit_seconds": _median(col("submit_to_commit_seconds")),
        "aggregation_seconds": _median(col("aggregation_seconds")),
        "consensus_seconds": _median(col("consensus_seconds")),
        "gossip_bytes_per_node_round": _median(bytes_per_round),
        "peak_rss_mb_max": max(rss_by_node.values(), default=None),
        "nodes_logged": len(rss_by_node),
        "nodes": nodes,
    }


def _smaps_mb(pid: int) -> tuple[float, float] | None:
    """(PSS, USS) of a live process in MB, from ``/proc/PID/smaps_rollup``."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            kb[parts[0].rstrip(":")] = int(parts[1])
    uss = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
    return kb.get("Pss", 0) / 1024, uss / 1024


class MemorySampler:
    """Samples PSS and USS of the node processes once a second, keeping each node's peak."""

    def __init__(self, net: Testnet, period: float = 1.0) -> None:
        self.net, self.period = net, period
        self.peak_pss: dict[int, float] = {}
        self.peak_uss: dict[int, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mem-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self.period):
            for n in self.net.nodes:
                got = _smaps_mb(n.proc.pid) if n.proc is not None else None
                if got is not None:
                    self.peak_pss[n.index] = max(self.peak_pss.get(n.index, 0.0), got[0])
                    self.peak_uss[n.index] = max(self.peak_uss.get(n.index, 0.0), got[1])

    def summary(self) -> dict[str, float | None]:
        def top(d: dict[int, float]) -> float | None:
            return round(max(d.values()), 1) if d else None

        return {"peak_pss_mb_max": top(self.peak_pss), "peak_uss_mb_max": top(self.peak_uss)}


class StealMeter:
    """The fraction of this machine's CPU time stolen by the hypervisor between ``start``
    and ``stop`` (``/proc/stat``; None where there is none)."""

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        if len(fields) < 8:
            return None
        return fields[7], sum(fields[:8])  # steal, user..steal (guest is inside user)

    def __enter__(self) -> StealMeter:
        self._start = self._read()
        self.fraction: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._read()
        if self._start is not None and end is not None and end[1] > self._start[1]:
            self.fraction = round((end[0] - self._start[0]) / (end[1] - self._start[1]), 3)


def run_testnet(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    # Every node trains on its own shard of the public copy, as `testnet up` gives them.
    mnist = fetch_mnist(args.data_dir or None)
    testnet_init(
        directory,
        args.nodes,
        engine=args.engine,
        partition="iid",
        base_port=args.base_port,
        fl_data_dir=str(mnist),
        eval_samples=args.eval_samples,
    )
    set_round_timeout(directory, args.round_timeout_blocks, min_updates=args.min_updates)
    net = Testnet.from_homes(directory)
    t0 = time.monotonic()
    net.start()
    try:
        with MemorySampler(net) as memory, StealMeter() as steal:
            result = net.run(
                target_accuracy=args.target,
                max_rounds=args.max_rounds,
                timeout=args.timeout,
                poll=2.0,
            )
        report = net.report(result)
    finally:
        codes = net.stop()
    wall = time.monotonic() - t0
    history = report["history"]
    hit985 = _first_reaching(history, 0.985)
    hit990 = _first_reaching(history, 0.99)
    return {
        "stop_reason": result.reason,
        "rounds": result.rounds,
        "wall_seconds": round(wall, 1),
        "final_accuracy": result.accuracy,
        "nodes_agree": report["nodes_agree"],
        "exit_codes": codes,
        "to_98.5": hit985,
        "to_99.0": hit990,
        "split": {**_split(_round_logs(directory), args.nodes), **memory.summary()},
        "history": history,
        "steal": steal.fraction,
    }


def run_baseline(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "bench_fl.py"),
        "--part",
        "speed",
        "--central-epochs",
        "1",
        # The reference loop: clients trained two at a time in worker processes,
        # one torch thread each (the testnet's nodes also train with one thread each).
        "--workers",
        "2",
        "--threads",
        "1",
        "--rounds",
        str(args.max_rounds),
        "--out",
        str(out),
    ]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    out.unlink(missing_ok=True)
    with StealMeter() as steal:
        subprocess.run(cmd, check=True, cwd=ROOT)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {"rows": rows, "steal": steal.fraction}


def _compare(
    history: list[dict[str, Any]],
    baseline: list[dict[str, Any]],
    to99: tuple[int, float] | None,
) -> dict[str, Any]:
    """The in-process loop's rounds and seconds to the targets, the wall-time ratio, and in
    how many rounds both produced the very same global model (nodes train with the
    simulator's per-client seeds, so every round should match)."""
    fed = [b for b in baseline if b.get("mode") == "fedavg"]

    def reach(target: float) -> tuple[int, float] | None:
        hit = next((b for b in fed if b["acc"] >= target), None)
        return (int(hit["round"]), round(float(hit["elapsed_s"]), 1)) if hit else None

    base99 = reach(0.99)
    by_round = {int(b["round"]) - 1: b.get("model_hash") for b in fed}
    pairs = [(h.get("model_hash"), by_round.get(int(h["round"]))) for h in history]
    pairs = [(a, b) for a, b in pairs if a and b]
    return {
        "baseline_to_98.5": reach(0.985),
        "baseline_to_99.0": base99,
        "ratio_to_99.0": round(to99[1] / base99[1], 3) if to99 and base99 else None,
        "compared_rounds": len(pairs),
        "same_models": sum(a == b for a, b in pairs),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--engine", default="tendermint")
    ap.add_argument("--target", type=float, default=0.99)
    ap.add_argument("--max-rounds", type=int, default=30)
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--eval-samples", type=int, default=10_000)
    ap.add_argument("--round-timeout-blocks", type=int, default=600)
    ap.add_argument(
        "--min-updates",
        type=int,
        default=None,
        help="updates that close a round (default: every node, like the in-process FedAvg)",
    )
    ap.add_argument("--base-port", type=int, default=27656)
    ap.add_argument("--data-dir", default=os.environ.get("FEDCHAIN_DATA_DIR"))
    ap.add_argument("--dir", type=Path, help="keep homes and logs here (default: a temp dir)")
    ap.add_argument("--baseline", action="store_true", help="also run bench_fl.py --part speed")
    ap.add_argument("--out", type=Path, help="append the JSON result here")
    ap.add_argument("--repeat", type=int, default=1, help="testnet (+ baseline) runs")
    args = ap.parse_args(argv)
    if args.min_updates is None:
        args.min_updates = args.nodes

    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-testnet-") as tmp:
            directory = args.dir / f"run{i}" if args.dir else Path(tmp) / "net"
            res = run_testnet(args, directory)
            if args.baseline:
                res["baseline"] = run_baseline(args, Path(tmp) / "baseline.jsonl")
                res["comparison"] = _compare(
                    res["history"], res["baseline"]["rows"], res["to_99.0"]
                )
        res.update(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "nodes": args.nodes,
                "engine": args.engine,
            }
        )
        _print_run(args, res)
        runs.append(res)
    ratios = [r["comparison"]["ratio_to_99.0"] for r in runs if "comparison" in r]
    known = [x for x in ratios if x is not None]
    if len(runs) > 1 and known:
        median = statistics.median(known)
        print(f"\ntestnet / baseline to 99.0%, per run: {ratios}; median {median}")
    if args.out:
        with args.out.open("a") as f:
            for res in runs:
                f.write(json.dumps(res) + "\n")
    return 0


def _print_run(args: argparse.Namespace, res: dict[str, Any]) -> None:
    s = res["split"]
    print("| nodes | rounds | wall s | to 98.5% | to 99.0% | final acc | agree | stop | steal |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.nodes} | {res['rounds']} | {res['wall_seconds']} | {res['to_98.5']} | "
        f"{res['to_99.0']} | {res['final_accuracy']} | {res['nodes_agree']} | "
        f"{res['stop_reason']} | {res['steal']} |"
    )
    print()
    print("| round s | train s | submit->commit s | aggregation s | consensus s | "
          "gossip B/node/round | peak RSS MB | peak PSS MB | peak USS MB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {s['round_seconds']} | {s['train_seconds']} | {s['submit_to_commit_seconds']} | "
        f"{s['aggregation_seconds']} | {s['consensus_seconds']} | "
        f"{s['gossip_bytes_per_node_round']} | {s['peak_rss_mb_max']} | "
        f"{s['peak_pss_mb_max']} | {s['peak_uss_mb_max']} |"
    )
    if "comparison" in res:
        cmp = res["comparison"]
        print()
        print("| baseline to 98.5% | baseline to 99.0% | testnet / baseline to 99.0% | "
              "rounds with the same global model | baseline steal |")  # fmt: skip
        print("|---|---|---|---|---|")
        print(
            f"| {cmp['baseline_to_98.5']} | {cmp['baseline_to_99.0']} | {cmp['ratio_to_99.0']} | "
            f"{cmp['same_models']} of {cmp['compared_rounds']} | {res['baseline']['steal']} |"
        )
    print(flush=True)


if __name__ == "__main__":
    sys.exit(main())
