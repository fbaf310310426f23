"""Run a local multi-node testnet: N ``fedchain start`` processes on 127.0.0.1.

``Testnet`` starts the node processes (each in its own process group, with a parent-death
signal on Linux so a killed supervisor leaves no orphans), polls their RPC, decides when
the run is over (target accuracy or round limit), writes ``report.json`` and a plot, and
stops every node with SIGTERM (SIGKILL after a grace period). ``testnet.json`` in the
directory records the PIDs so ``fedchain testnet down`` can stop a detached testnet; a
PID is only signalled if its command line still names that node's home, so a recycled
PID is never hit.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "NodeProc",
    "RunResult",
    "Testnet",
    "set_round_timeout",
    "stop_detached",
    "write_plot",
]

STATE_FILE = "testnet.json"
# How much of a stopped node's log is searched for the reason it gives.
_LOG_TAIL_BYTES = 64 << 10
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: Ctrl-C handling in the supervisor still stops the nodes


@dataclass
class NodeProc:
    index: int
    home: Path
    rpc_url: str
    proc: subprocess.Popen[bytes] | None = None
    eval_samples: int = 10_000  # test images behind this node's reported accuracy

    def status(self, timeout: float = 2.0) -> dict[str, Any] | None:
        return self.get("/status", timeout)

    def get(self, path: str, timeout: float = 2.0) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.rpc_url + path, timeout=timeout) as r:
                doc = json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None


@dataclass
class RunResult:
    reached: bool
    rounds: int
    seconds: float
    accuracy: float | None
    reason: str


@dataclass
class Testnet:
    directory: Path
    nodes: list[NodeProc]
    start_args: tuple[str, ...] = ()
    started_at: float = field(default_factory=time.monotonic)

    @classmethod
    def from_homes(cls, directory: Path, start_args: tuple[str, ...] = ()) -> Testnet:
        from node.home import Home

        homes = sorted(
            (p for p in Path(directory).iterdir() if p.is_dir() and p.name.startswith("node")),
            key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else 1 << 30,
        )
        nodes = []
        for i, h in enumerate(homes):
            cfg = Home(h).config()
            nodes.append(NodeProc(i, h, cfg.rpc_url(), eval_samples=cfg.fl.eval_samples))
        return cls(Path(directory), nodes, start_args)

    @property
    def evaluators(self) -> list[NodeProc]:
        """The nodes that evaluate on the most test images: the target accuracy and the
        report's history come from them only (the others' accuracies, on a small slice of
        the test set, are only shown)."""
        most = max(n.eval_samples for n in self.nodes)
        return [n for n in self.nodes if n.eval_samples == most]

    # ----------------------------------------------------------------- processes

    def start(self, *, detach: bool = False) -> None:
        for n in self.nodes:
            log = open(self.log_path(n), "ab")  # noqa: SIM115
            try:
                n.proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "node.cli",
                        "start",
                        "--home",
                        str(n.home),
                        *self.start_args,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C reaches the supervisor only
                    preexec_fn=None if detach else _die_with_parent,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            finally:
                log.close()
        self.started_at = time.monotonic()
        state = {
            "nodes": [
                {"home": str(n.home), "pid": n.proc.pid if n.proc else None, "rpc": n.rpc_url}
                for n in self.nodes
            ]
        }
        (self.directory / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    def log_path(self, node: NodeProc) -> Path:
        return self.directory / f"{node.home.name}.log"

    def failure_line(self, node: NodeProc) -> str | None:
        """The line a node that stopped printed about why: its last ``error:`` line (what
        ``fedchain start`` prints when it cannot start), else its last line."""
        try:
            with self.log_path(node).open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
                tail = f.read().decode(errors="replace")
        except OSError:
            return None
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        found = errors or lines
        return found[-1] if found else None

    def exited(self) -> list[tuple[int, int]]:
        return [
            (n.index, rc)
            for n in self.nodes
            if n.proc is not None and (rc := n.proc.poll()) is not None
        ]

    def stop(self, grace: float = 30.0) -> dict[int, int]:
        """SIGTERM every node, wait up to ``grace`` seconds, SIGKILL the rest."""
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        codes: dict[int, int] = {}
        for n in self.nodes:
            if n.proc is None:
                continue
            try:
                codes[n.index] = n.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.proc.kill()
                codes[n.index] = n.proc.wait()
        (self.directory / STATE_FILE).unlink(missing_ok=True)
        return codes

    # ----------------------------------------------------------------- monitoring

    def statuses(self) -> list[dict[str, Any] | None]:
        return [n.status() for n in self.nodes]

    def run(
        self,
        *,
        target_accuracy: float,
        max_rounds: int,
        timeout: float,
        on_tick: Callable[[list[dict[str, Any] | None], float], None] = lambda s, t: None,
        poll: float = 1.0,
    ) -> RunResult:
        """Poll until the target accuracy, the round limit, a dead node or ``timeout``."""
        while True:
            elapsed = time.monotonic() - self.started_at
            sts = self.statuses()
            on_tick(sts, elapsed)
            dead = self.exited()
            live = [s for s in sts if s is not None]
            rounds = max((int(s["fl_round"]) for s in live), default=0)
            judges = {n.index for n in self.evaluators}
            accs = [
                float(s["test_accuracy"])
                for i, s in enumerate(sts)
                if i in judges
                and s is not None
                and s.get("test_accuracy") is not None
                and s.get("model_round") == s["fl_round"]
            ]
            acc = max(accs) if accs else None
            hist_acc = self._latest_history_accuracy()
            if hist_acc is not None and (acc is None or hist_acc > acc):
                acc = hist_acc
            if dead:
                i, rc = dead[0]
                why = f"node{i} exited with code {rc}"
                line = self.failure_line(self.nodes[i])
                return RunResult(False, rounds, elapsed, acc, f"{why}: {line}" if line else why)
            if acc is not None and acc >= target_accuracy:
                return RunResult(True, rounds, elapsed, acc, "target accuracy reached")
            if rounds >= max_rounds:
                return RunResult(False, rounds, elapsed, acc, f"round limit {max_rounds} reached")
            if elapsed > timeout:
                return RunResult(False, rounds, elapsed, acc, f"timed out after {timeout:.0f}s")
            time.sleep(poll)

    def _latest_history_accuracy(self) -> float | None:
        """The accuracy of the newest evaluated global model in a node's /fl/history
        (status alone can miss it when rounds close faster than a model is evaluated)."""
        for n in self.evaluators:
            if n.proc is not None and n.proc.poll() is not None:
                continue
            hist = n.get("/fl/history")
            if hist is None:
                continue
            accs = [r.get("accuracy") for r in hist.get("rounds", [])]
            known = [float(a) for a in accs if a is not None]
            return known[-1] if known else None
        return None

    def _fullest_history(self) -> list[dict[str, Any]]:
        """The longest /fl/history among the evaluators: the run may stop on another
        evaluator's accuracy while node0 is still evaluating that round's model."""
        best: list[dict[str, Any]] = []
        for n in self.evaluators:
            doc = n.get("/fl/history", timeout=5.0)
            rows = doc.get("rounds", []) if doc is not None else []
            if isinstance(rows, list) and len(rows) > len(best):
                best = rows
        return best

    def report(self, result: RunResult) -> dict[str, Any]:
        """Everything worth keeping about the run (written as report.json)."""
        sts = self.statuses()
        heights = [int(s["latest_height"]) for s in sts if s is not None]
        common = min(heights) if heights else 0
        agree_blocks: set[str] = set()
        agree_models: set[str] = set()
        for n in self.nodes:
            b = n.get(f"/blocks/{common}") if common else None
            if b is not None:
                agree_blocks.add(str(b["hash"]))
                agree_models.add(str(b["header"]["global_model_hash"]))
        history = self._fullest_history()
        return {
            "nodes": len(self.nodes),
            "reached_target": result.reached,
            "stop_reason": result.reason,
            "rounds": result.rounds,
            "wall_seconds": round(result.seconds, 2),
            "final_accuracy": result.accuracy,
            "common_height": common,
            "block_hash_at_common_height": sorted(agree_blocks),
            "model_hash_at_common_height": sorted(agree_models),
            "nodes_agree": len(agree_blocks) == 1 and len(agree_models) == 1,
            "history": history,
            "node_status": sts,
        }


def set_round_timeout(directory: Path, blocks: int, *, min_updates: int | None = None) -> None:
    """Rewrite a fresh testnet's genesis (every home and the shared copy) with another
    ``fl.round_timeout_blocks`` (and ``fl.min_updates``), before any node starts.

    Benchmarks use it to close every round with all trainers' updates (like the
    in-process FedAvg loop) and a timeout far above any training time.
    """
    from node.ledger.genesis import load_genesis

    directory = Path(directory)
    shared = directory / "genesis.json"
    genesis = load_genesis(shared)
    fl = genesis.fl.replace(round_timeout_blocks=blocks)
    if min_updates is not None:
        fl = fl.replace(min_updates=min_updates)
    genesis = genesis.replace(fl=fl)
    genesis.validate()
    for path in [shared, *sorted(directory.glob("node*/genesis.json"))]:
        genesis.save(path)


def write_plot(report: dict[str, Any], path: Path) -> None:
    """Accuracy and seconds per round, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = report.get("history", [])
    rounds = [int(r["round"]) + 1 for r in hist]
    acc = [r["accuracy"] if r["accuracy"] is not None else float("nan") for r in hist]
    secs = [float(r["seconds"]) for r in hist]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(rounds, acc, marker="o")
    a1.set_xlabel("round")
    a1.set_ylabel("test accuracy")
    a1.grid(True, alpha=0.3)
    a2.bar(rounds, secs)
    a2.set_xlabel("round")
    a2.set_ylabel("seconds")
    a2.grid(True, alpha=0.3)
    fig.suptitle(f"fedchain testnet: {report['nodes']} nodes, {report['stop_reason']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def stop_detached(directory: Path, grace: float = 30.0) -> int:
    """Stop the nodes a ``--detach`` run recorded; returns how many were signalled."""
    state_path = Path(directory) / STATE_FILE
    try:
        state = json.loads(state_path.read_text())
        entries = [(int(e["pid"]), str(e["home"])) for e in state["nodes"] if e.get("pid")]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FileNotFoundError(f"no running testnet recorded in {state_path}: {e}") from e
    mine = [pid for pid, home in entries if home in _cmdline(pid)]
    for pid in mine:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for pid in mine:
        while _cmdline(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _cmdline(pid):
            os.kill(pid, signal.SIGKILL)
    state_path.unlink(missing_ok=True)
    return len(mine)
