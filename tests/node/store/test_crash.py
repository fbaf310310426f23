"""SIGKILL a block writer at random instants; the store must always reopen consistent.

Run as a script this file is the writer: it opens (or resumes) the ledger and commits a
deterministic block sequence until killed. The test kills it at least 50 times and after
each kill reopens the store (which itself checks that the persisted state hashes to the
recorded app hash) and compares height, app hash and block hashes with an in-memory replay
of the same sequence: a half-applied block would show up as a mismatch.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.core.crypto import PrivateKey
from node.ledger.block import Block
from node.ledger.genesis import Genesis
from node.ledger.state import State
from node.ledger.tx import Transfer, Tx, sign_tx
from node.store.ledger import Ledger
from tests.kits.genesis import make_genesis
from tests.kits.ledger import Devnet, build_block

KILLS = 50
TXS_PER_BLOCK = 20


def crash_genesis() -> tuple[Genesis, list[PrivateKey], list[PrivateKey]]:
    return make_genesis(3, n_trainers=4, chain_id="crash-test")


def block_txs(g: Genesis, state: State, height: int, tk: list[PrivateKey]) -> list[Tx]:
    out = []
    nonces = {k.address: state.account(k.address).nonce for k in tk}
    for i in range(TXS_PER_BLOCK):
        k = tk[(height + i) % len(tk)]
        to = tk[(height + i + 1) % len(tk)].address
        out.append(sign_tx(k, g.chain_id, nonces[k.address], g.fees, Transfer(to, height + i)))
        nonces[k.address] += 1
    return out


def next_block(net: Devnet, g: Genesis, tk: list[PrivateKey]) -> Block:
    h = net.state.height + 1
    proposer = net.state.validator_set(h).validators[h % 3].address
    txs = block_txs(g, net.state, h, tk)
    return build_block(
        net.state,
        txs,
        proposer,
        last_commit=net.commit_for_last(),
        time_ms=g.genesis_time_ms + h * 1000,
    )


def writer(path: Path) -> None:
    g, vk, tk = crash_genesis()
    led = Ledger.open(path, g)
    net = Devnet(led.state, vk)
    net.last_block = led.store.block(led.height) if led.height else None
    print("ready", flush=True)
    for _ in range(100_000):
        block = next_block(net, g, tk)
        led.commit_block(block)
        net.last_block = block


class Reference:
    """The same sequence applied in memory, extended on demand."""

    def __init__(self) -> None:
        self.g, vk, self.tk = crash_genesis()
        self.net = Devnet(State.from_genesis(self.g), vk)
        self.app_hash = [self.net.state.app_hash()]
        self.block_hash: list[bytes] = [b""]

    def upto(self, height: int) -> None:
        while self.net.state.height < height:
            b = next_block(self.net, self.g, self.tk)
            self.app_hash.append(self.net.advance(b))
            self.block_hash.append(b.hash)


@pytest.mark.slow
def test_sigkill_never_leaves_a_half_applied_block(tmp_path: Path) -> None:
    path = tmp_path / "chain.db"
    ref = Reference()
    rng = random.Random(1234)
    heights = []
    deadline = time.monotonic() + 120  # a bound on the loop; it normally takes ~30 s
    root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": root}
    for i in range(KILLS):
        assert time.monotonic() < deadline, "crash test exceeded its time budget"
        proc = subprocess.Popen(
            [sys.executable, __file__, str(path)], stdout=subprocess.PIPE, env=env
        )
        try:
            assert proc.stdout is not None
            # Every fifth kill lands anywhere from start-up (genesis initialisation
            # included) on; the others while blocks are being committed.
            if i % 5 != 0:
                assert proc.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.0, 0.15))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        led = Ledger.open(path, ref.g)  # raises if state and recorded app hash disagree
        try:
            ref.upto(led.height)
            assert led.app_hash() == ref.app_hash[led.height]
            assert led.store.app_hash == ref.app_hash[led.height]
            if led.height:
                blk = led.store.block(led.height)
                assert blk is not None and blk.hash == ref.block_hash[led.height]
            assert led.store.block(led.height + 1) is None
        finally:
            led.close()
        heights.append(led.height)
    assert heights == sorted(heights)
    assert heights[-1] > 10, "the writer barely committed anything; the test proves little"


if __name__ == "__main__":
    writer(Path(sys.argv[1]))
