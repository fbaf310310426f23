"""Ledger throughput and storage benchmark.

Measures, on one core (this process, single-threaded):

1. baseline: raw Ed25519 verifications per second through ``cryptography`` alone, with
   the public keys already parsed: the ceiling for any signed-tx pipeline;
2. transfer txs decoded (``Tx.from_bytes``) + verified + applied (``State.apply_block``
   of 1,000-tx blocks, app hash included) per second;
3. commit latency of a 1,000-tx block through ``Ledger.commit_block`` (apply + one SQLite
   WAL transaction with ``synchronous=FULL``, so it includes the fsync), and the store
   write alone;
5. the app hash after one block in a state with many accounts: the incremental scheme
   (only touched buckets re-hashed) against a full recomputation;
4. bytes on disk per block (database growth over the run after folding the WAL in, /
   blocks) next to the encoded block size.

Usage: python scripts/bench_ledger.py [--blocks 7] [--txs 1000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.kits is not installed

from node.core.codec import sha256
from node.core.crypto import PrivateKey
from node.ledger.block import Block
from node.ledger.genesis import Genesis, GenesisAccount
from node.ledger.state import State
from node.ledger.tx import Transfer, Tx, sign_tx
from node.store.ledger import Ledger
from tests.kits.genesis import make_genesis
from tests.kits.ledger import Devnet, build_block

N_SENDERS = 500


def make_raw_blocks(
    g: Genesis, vk: list[PrivateKey], senders: list[PrivateKey], n_blocks: int, per_block: int
) -> list[list[bytes]]:
    """Encoded transfer txs per block; each sender's nonces are consecutive across blocks."""
    nonces = dict.fromkeys((k.address for k in senders), 0)
    out = []
    i = 0
    for _ in range(n_blocks):
        raws = []
        for _ in range(per_block):
            k = senders[i % len(senders)]
            to = senders[(i + 1) % len(senders)].address
            raws.append(sign_tx(k, g.chain_id, nonces[k.address], g.fees, Transfer(to, 1)).encode())
            nonces[k.address] += 1
            i += 1
        out.append(raws)
    return out


@functools.cache
def _baseline_inputs(n: int) -> tuple[list[Ed25519PublicKey], list[bytes], list[bytes]]:
    keys = [PrivateKey.from_secret(f"base-{i}") for i in range(64)]
    pubs = [Ed25519PublicKey.from_public_bytes(k.public_key) for k in keys]
    msgs = [i.to_bytes(4, "big") * 50 for i in range(n)]  # 200 bytes, like a tx
    sigs = [keys[i % 64].sign(m) for i, m in enumerate(msgs)]
    return pubs, msgs, sigs


def bench_baseline(n: int) -> float:
    pubs, msgs, sigs = _baseline_inputs(n)
    t0 = time.perf_counter()
    for i, m in enumerate(msgs):
        pubs[i % 64].verify(sigs[i], m)
    return n / (time.perf_counter() - t0)


def bench_app_hash(n_accounts: int, per_block: int) -> tuple[float, float, float]:
    """(incremental app hash after a block, full recomputation, apply_block total) in ms
    for a state with ``n_accounts`` extra funded accounts."""
    g, vk, tk = make_genesis(4, n_trainers=N_SENDERS, chain_id="bench")
    extra = tuple(GenesisAccount(sha256(i.to_bytes(8, "big"))[:20], 1) for i in range(n_accounts))
    g = g.replace(accounts=tuple(sorted(g.accounts + extra, key=lambda a: a.address)))
    state = State.from_genesis(g)
    state.app_hash()
    net = Devnet(state, vk)
    (raws,) = make_raw_blocks(g, vk, tk, 1, per_block)
    block = decode_block(state, state.validator_set().validators[0].address, raws, net)
    t0 = time.perf_counter()
    state.apply_block(block, verify_commit=False)
    total = time.perf_counter() - t0
    # Re-time the incremental part alone: dirty exactly what the block touched.
    touched = state.last_changes()
    for k in touched:
        state._leaves.pop(k, None)
        state._dirty_buckets.add(int.from_bytes(k[-2:], "big"))
    t0 = time.perf_counter()
    inc = state.app_hash()
    t_inc = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = state.recompute_app_hash()
    t_full = time.perf_counter() - t0
    assert inc == full
    return t_inc * 1000, t_full * 1000, total * 1000


def decode_block(state: State, proposer: bytes, raws: list[bytes], net: Devnet) -> Block:
    txs: list[Tx] = [Tx.from_bytes(r) for r in raws]
    return build_block(state, txs, proposer, last_commit=net.commit_for_last())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=7)
    ap.add_argument("--txs", type=int, default=1000)
    ap.add_argument("--dir", type=Path, default=None, help="where the SQLite store goes")
    ap.add_argument("--accounts", type=int, default=100_000, help="state size for the app hash")
    args = ap.parse_args()
    console = Console()

    g, vk, tk = make_genesis(4, n_trainers=N_SENDERS, chain_id="bench")
    raw_blocks = make_raw_blocks(g, vk, tk, args.blocks, args.txs)
    mean_tx = statistics.mean(len(r) for b in raw_blocks for r in b)

    # In-memory: decode + verify + apply, per block. The baseline is measured right before
    # each block so both see the same machine load (this machine is shared).
    state = State.from_genesis(g)
    net = Devnet(state, vk)
    rates, baselines = [], []
    for raws in raw_blocks:
        baselines.append(bench_baseline(len(raws)))
        proposer = state.validator_set().validators[0].address
        t0 = time.perf_counter()
        block = decode_block(state, proposer, raws, net)
        state.apply_block(block, verify_commit=False)
        rates.append(len(raws) / (time.perf_counter() - t0))
        net.last_block = block
    in_mem_hash = state.app_hash()

    # Persistent: the same blocks committed to SQLite (fsync on every commit).
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        led = Ledger.open(Path(d) / "chain.db", g)
        net2 = Devnet(led.state, vk)
        led.store.checkpoint()
        size0 = led.store.size_bytes()
        commit_ms, store_ms, block_bytes = [], [], []
        for raws in raw_blocks:
            proposer = led.state.validator_set().validators[0].address
            block = decode_block(led.state, proposer, raws, net2)
            block_bytes.append(len(block.encode()))
            t0 = time.perf_counter()
            app_hash, _ = led.state.apply_block(block, verify_commit=False)
            t1 = time.perf_counter()
            led.store.commit_block(block, led.state.last_changes(), app_hash)
            t2 = time.perf_counter()
            commit_ms.append((t2 - t0) * 1000)
            store_ms.append((t2 - t1) * 1000)
            net2.last_block = block
        led.store.checkpoint()
        per_block_disk = (led.store.size_bytes() - size0) / len(raw_blocks)
        assert led.app_hash() == in_mem_hash, "persistent and in-memory replays disagree"
        led.close()

    rate = statistics.median(rates)
    baseline = statistics.median(baselines)
    ratio = statistics.median(r / b for r, b in zip(rates, baselines, strict=True))
    table = Table(title=f"ledger benchmark ({args.blocks} blocks x {args.txs} transfers, medians)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("baseline: raw Ed25519 verify (cryptography), /s", f"{baseline:,.0f}")
    table.add_row("transfers decoded+verified+applied, /s (1 core)", f"{rate:,.0f}")
    table.add_row("ledger / baseline (median of per-block ratios)", f"{ratio:.2f}")
    table.add_row(
        "commit 1,000-tx block: apply + SQLite fsync, ms", f"{statistics.median(commit_ms):.1f}"
    )
    table.add_row("  of which SQLite transaction (fsync), ms", f"{statistics.median(store_ms):.1f}")
    table.add_row("encoded block, bytes", f"{statistics.median(block_bytes):,.0f}")
    table.add_row("bytes on disk per block (db growth, after checkpoint)", f"{per_block_disk:,.0f}")
    table.add_row("mean encoded transfer tx, bytes", f"{mean_tx:.0f}")
    inc_ms, full_ms, apply_ms = bench_app_hash(args.accounts, args.txs)
    table.add_row(
        f"app hash after a {args.txs}-tx block, {args.accounts:,} accounts: incremental, ms",
        f"{inc_ms:.1f}",
    )
    table.add_row("  full recomputation of the same state, ms", f"{full_ms:.1f}")
    table.add_row("  apply_block total at that state size, ms", f"{apply_ms:.1f}")
    console.print(table)


if __name__ == "__main__":
    main()
