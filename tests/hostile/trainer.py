"""A hostile trainer: a process that holds a real trainer key and poisons every FL round.

It reads one node's home (``validator_key.json`` is that node's trainer key, ``genesis.json``
the chain), watches the round over RPC and, as soon as a round opens, submits through
``POST /txs`` (the node admits and gossips what it accepts), like an attacker who stole or
owns a registered trainer's key would:

- ``shift``: a valid update that adds +100 to every coordinate and claims 4,000,000
  samples (issue 15 item 8). Its bytes are well formed, so it is admitted and included:
  only the genesis aggregation rule stands between it and the global model.
- ``nan``, ``wrong_base``, ``no_payload``: updates no proposer could aggregate (issue 15
  item 1). They must be refused with a 422 naming the reason, and never gossiped.

Every submission and its answer is one JSON line in ``--log``. Run it as
``python -m tests.hostile.trainer --home node3 --rpc http://127.0.0.1:PORT --log FILE``;
SIGTERM stops it between polls.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fl.attacks import nan_update
from fl.models import architecture
from fl.update import ModelUpdate as Payload
from fl.update import encode_update
from node.app.updates import payload_base
from node.home import Home
from node.rpc.client import RPCClient, RPCClientError
from tests.kits.updates import signed_update

__all__ = ["CLAIMED_SAMPLES", "JUNK", "SHIFT", "HostileTrainer", "Outcome", "main"]

SHIFT = 100.0
CLAIMED_SAMPLES = 4_000_000
# The junk kinds and the error code the node must answer each with.
JUNK = {"nan": "non_finite_payload", "wrong_base": "wrong_base", "no_payload": "missing_payload"}


@dataclass(frozen=True)
class Outcome:
    round: int
    kind: str
    status: int
    code: str | None  # the error code of a refusal, None when accepted

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


class HostileTrainer:
    def __init__(self, home: Path, rpc_url: str, *, junk: bool = True) -> None:
        h = Home(Path(home))
        self.key = h.validator_key()
        self.genesis = h.genesis()
        self.rpc = RPCClient(rpc_url, timeout=10.0)
        self.junk = junk
        self.attacked: set[int] = set()
        self.outcomes: list[Outcome] = []

    def step(self) -> list[Outcome]:
        """Poison the current round if not done yet; returns what was submitted."""
        try:
            info = self.rpc.get_json("/model/info")
            nonce = int(self.rpc.get_json(f"/accounts/{self.key.address.hex()}")["next_nonce"])
        except (RPCClientError, KeyError, TypeError, ValueError):
            return []  # the node is not up (yet): try again at the next poll
        round_ = int(info["fl_round"])
        if round_ in self.attacked:
            return []
        base = bytes.fromhex(info["chain_model_hash"])
        trained_from = payload_base(self.genesis.fl, base)
        shift = self._payload(round_, trained_from, SHIFT)
        kinds: list[tuple[str, bytes | None, bytes]] = []
        if self.junk:
            honest_looking = self._payload(round_, trained_from, 0.001)
            wrong = self._payload(round_, b"\x42" * 32, 0.001)
            kinds += [
                ("nan", nan_update(Payload.decode(honest_looking)), b""),
                ("wrong_base", wrong, b""),
                ("no_payload", None, honest_looking),
            ]
        kinds.append(("shift", shift, b""))
        done = []
        for kind, payload, signed_over in kinds:
            tx = signed_update(
                self.key,
                self.genesis,
                payload if payload is not None else signed_over,
                round=round_,
                base_ledger_hash=base,
                samples=CLAIMED_SAMPLES,
                nonce=nonce,
            )
            status, code = self._submit(tx.encode(), payload)
            done.append(Outcome(round_, kind, status, code))
            if kind == "shift" and (status in (202, 409) or code == "duplicate_update"):
                self.attacked.add(round_)  # in this round's mempool: on to the next round
        self.outcomes += done
        return done

    def _payload(self, round_: int, trained_from: bytes, value: float) -> bytes:
        """A delta of ``value`` on every coordinate, claiming CLAIMED_SAMPLES samples."""
        arch = self.genesis.fl.model
        delta = {t.name: np.full(t.shape, value, np.float32) for t in architecture(arch).tensors}
        return encode_update(
            delta, arch=arch, base_hash=trained_from, round_=round_, num_samples=CLAIMED_SAMPLES
        ).encode()

    def _submit(self, tx: bytes, payload: bytes | None) -> tuple[int, str | None]:
        doc: dict[str, Any] = {"tx": tx.hex()}
        if payload is not None:
            doc["payload"] = payload.hex()
        req = urllib.request.Request(
            self.rpc.url + "/txs",
            data=json.dumps(doc).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, None
        except urllib.error.HTTPError as e:
            try:
                return e.code, str(json.loads(e.read())["error"]["code"])
            except (ValueError, KeyError, TypeError):
                return e.code, "unreadable"
        except (urllib.error.URLError, OSError):
            return 0, "unreachable"

    def run(self, stop: threading.Event, poll: float, log: Path | None) -> None:
        """Poison each round until ``stop`` is set."""
        while not stop.is_set():
            for outcome in self.step():
                if log is not None:
                    with log.open("a") as f:
                        f.write(outcome.to_json() + "\n")
            stop.wait(poll)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", required=True, help="the home whose trainer key to abuse")
    ap.add_argument("--rpc", required=True, help="RPC URL of a node to submit through")
    ap.add_argument("--log", default=None, help="append one JSON line per submission here")
    ap.add_argument("--poll", type=float, default=0.2, help="seconds between round checks")
    ap.add_argument("--no-junk", action="store_true", help="only the valid poisoned update")
    args = ap.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    trainer = HostileTrainer(Path(args.home), args.rpc, junk=not args.no_junk)
    trainer.run(stop, args.poll, Path(args.log) if args.log else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
