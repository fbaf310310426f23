"""Model updates for aggregation tests, and the hashes a fresh process derives from them.

Honest updates share one direction plus noise; attackers send -10x that direction (a
sign flip that drags a plain mean far away). Everything is seeded, so another process
rebuilds the same updates and must derive the same aggregation bytes. ``signed_update``
signs a ``model_update`` tx over any payload bytes (honest, or crafted to be refused).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fl.aggregate import SCALE_BITS, aggregate, parse_rule
from fl.models import Params, architecture, init_params, model_hash
from fl.update import DecodedUpdate
from node.core.codec import sha256
from node.core.crypto import PrivateKey
from node.ledger.genesis import Genesis
from node.ledger.tx import ModelUpdate, Tx, sign_tx

__all__ = [
    "ARCH",
    "BASE",
    "BASE_HASH",
    "RES",
    "delta_of",
    "flat",
    "hashes_in_fresh_process",
    "honest_distance",
    "make_updates",
    "random_delta",
    "rule_hashes",
    "signed_update",
]

ARCH = "cnn"
BASE = init_params(ARCH, 0)
BASE_HASH = model_hash(BASE)
RES = 2.0**-SCALE_BITS
_ROOT = Path(__file__).resolve().parents[2]


def make_updates(
    n: int = 11, attackers: int = 0, seed: int = 0
) -> list[tuple[bytes, DecodedUpdate]]:
    """Honest updates share a direction plus noise; attackers send -10x that direction."""
    rng = np.random.default_rng(seed)
    direction = {t.name: rng.normal(0, 0.01, t.shape) for t in architecture(ARCH).tensors}
    out = []
    for i in range(n):
        d: Params = {
            k: (v + rng.normal(0, 0.004, v.shape)).astype(np.float32) for k, v in direction.items()
        }
        if i < attackers:
            d = {k: (-10 * v).astype(np.float32) for k, v in d.items()}
        tx = hashlib.sha256(f"{seed}/{i}".encode()).digest()
        out.append((tx, DecodedUpdate(ARCH, BASE_HASH, 1, 300 + 37 * i, d)))
    return out


def random_delta(seed: int, scale: float = 0.01, arch: str = ARCH) -> Params:
    """A small random delta shaped like ``arch`` (what a trainer's round might produce)."""
    rng = np.random.default_rng(seed)
    spec = architecture(arch)
    return {t.name: (rng.standard_normal(t.shape) * scale).astype(np.float32) for t in spec.tensors}


def signed_update(
    key: PrivateKey,
    genesis: Genesis,
    payload: bytes,
    *,
    round: int,
    base_ledger_hash: bytes,
    samples: int,
    nonce: int = 0,
) -> Tx:
    """A ``model_update`` tx signed by ``key`` that commits to ``payload`` as it is."""
    body = ModelUpdate(round, base_ledger_hash, samples, sha256(payload), len(payload))
    return sign_tx(key, genesis.chain_id, nonce, genesis.fees, body)


def flat(p: Params) -> np.ndarray:
    return np.concatenate([v.ravel().astype(np.float64) for v in p.values()])


def delta_of(p: Params) -> np.ndarray:
    return flat(p) - flat(BASE)


def honest_distance(
    rule: str, updates: Sequence[tuple[bytes, DecodedUpdate]], attackers: int
) -> float:
    """How far ``rule``'s aggregate lands from the mean of the honest updates (all but the
    first ``attackers``, as ``make_updates`` builds them), relative to that mean's norm:
    above 1 is worse than not moving at all."""
    honest = np.mean([flat(u.delta) for _, u in updates[attackers:]], axis=0)
    res = aggregate(BASE, updates, parse_rule(rule), arch=ARCH)
    return float(np.linalg.norm(delta_of(res.params) - honest) / np.linalg.norm(honest))


def rule_hashes(
    rules: Sequence[str], updates: Sequence[tuple[bytes, DecodedUpdate]]
) -> dict[str, str]:
    """The aggregated model hash (hex) of each rule text over ``updates``."""
    return {r: aggregate(BASE, updates, parse_rule(r), arch=ARCH).model_hash.hex() for r in rules}


_CHILD = """
import json, sys
sys.path.insert(0, {root!r})
import numpy as np, torch
from tests.kits.updates import make_updates, rule_hashes
rules, threads, shuffle_seed, n, attackers = json.loads(sys.argv[1])
torch.set_num_threads(threads)
ups = make_updates(n=n, attackers=attackers)
ups = [ups[i] for i in np.random.default_rng(shuffle_seed).permutation(len(ups))]
print(json.dumps(rule_hashes(rules, ups)))
"""


def hashes_in_fresh_process(
    rules: Sequence[str], *, threads: int, shuffle_seed: int, n: int, attackers: int
) -> dict[str, str]:
    """``rule_hashes`` of ``make_updates(n, attackers)`` computed by a new interpreter with
    ``threads`` threads (torch and BLAS) on the updates in a shuffled order."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    args = json.dumps([list(rules), threads, shuffle_seed, n, attackers])
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(root=str(_ROOT)), args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    result: dict[str, str] = json.loads(out.stdout)
    return result
