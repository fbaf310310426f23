"""The persistent ledger: replays agree, reopening resumes exactly, bad stores are refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from node.core.codec import sha256
from node.core.crypto import PrivateKey
from node.ledger.block import Block, BlockError
from node.ledger.genesis import Genesis
from node.ledger.state import State
from node.ledger.tx import ModelUpdate, Stake, Transfer, Tx, Unstake, sign_tx
from node.store.chain import ChainStore, StoreError
from node.store.ledger import Ledger
from tests.kits.genesis import make_genesis
from tests.kits.ledger import Devnet


def scripted_txs(g: Genesis, state: State, height: int, tk: list[PrivateKey]) -> list[Tx]:
    """A deterministic mix of every tx kind, chosen by height and current nonces."""
    out: list[Tx] = []

    def nxt(k: PrivateKey) -> int:
        return state.account(k.address).nonce + sum(1 for t in out if t.sender == k.public_key)

    a, b, c = tk[0], tk[1], tk[2]
    for i in range(3):
        out.append(sign_tx(a, g.chain_id, nxt(a), g.fees, Transfer(b.address, height + i)))
    if height % 4 == 1:
        out.append(sign_tx(b, g.chain_id, nxt(b), g.fees, Stake(2000)))
    if height % 4 == 3:
        out.append(sign_tx(b, g.chain_id, nxt(b), g.fees, Unstake(500)))
    if height % 5 == 0:
        m = state.meta
        body = ModelUpdate(m.fl_round, m.global_model, 10, sha256(bytes([height % 256])), 100)
        out.append(sign_tx(c, g.chain_id, nxt(c), g.fees, body))
    return out


def run_chain(g: Genesis, vk: list[PrivateKey], tk: list[PrivateKey], n: int) -> list[Block]:
    net = Devnet(State.from_genesis(g), vk)
    blocks = []
    for h in range(1, n + 1):
        blocks.append(net.step(scripted_txs(g, net.state, h, tk)))
    return blocks


@pytest.fixture(scope="module")
def chain() -> tuple[Genesis, list[PrivateKey], list[PrivateKey], list[Block]]:
    g, vk, tk = make_genesis(4, n_trainers=3)
    return g, vk, tk, run_chain(g, vk, tk, 30)


def test_two_independent_replays_agree(chain: tuple, tmp_path: Path) -> None:
    g, _vk, _tk, blocks = chain
    a = State.from_genesis(g)
    led = Ledger.open(tmp_path / "chain.db", g)
    hashes_a, hashes_b = [], []
    for blk in blocks:
        # The second replay goes through the wire encoding, as a syncing node would.
        hashes_a.append(a.apply_block(blk)[0])
        hashes_b.append(led.commit_block(Block.decode(blk.encode()))[0])
    assert hashes_a == hashes_b
    # The incremental app hash equals a from-scratch recomputation.
    assert a.recompute_app_hash() == hashes_a[-1]
    assert len(set(hashes_a)) == len(hashes_a)
    led.close()
    # Reopening from disk resumes at the same height and app hash.
    again = Ledger.open(tmp_path / "chain.db", g)
    assert again.height == len(blocks)
    assert again.app_hash() == hashes_a[-1]
    assert dict(again.state.items()) == dict(a.items())
    assert again.store.block(5) == blocks[4]
    assert again.store.block_height_of(blocks[7].hash) == 8
    again.close()


def test_resume_and_continue(chain: tuple, tmp_path: Path) -> None:
    g, _vk, _tk, blocks = chain
    led = Ledger.open(tmp_path / "c.db", g)
    for blk in blocks[:10]:
        led.commit_block(blk)
    led.close()
    led = Ledger.open(tmp_path / "c.db", g)
    for blk in blocks[10:]:
        led.commit_block(blk)
    ref = State.from_genesis(g)
    for blk in blocks:
        ref.apply_block(blk)
    assert led.app_hash() == ref.app_hash()
    # Applying an already-committed block again is refused and changes nothing.
    with pytest.raises(BlockError):
        led.commit_block(blocks[-1])
    assert led.height == len(blocks)
    led.close()


def test_store_failure_rolls_back_memory(chain: tuple, tmp_path: Path) -> None:
    g, _vk, _tk, blocks = chain
    led = Ledger.open(tmp_path / "c.db", g)
    led.commit_block(blocks[0])
    before = led.app_hash()
    # Simulate a disk-level conflict: the block row for height 2 already exists.
    led.store._db.execute("INSERT INTO blocks VALUES (2, ?, ?)", (b"x" * 32, b"junk"))
    with pytest.raises(sqlite3.IntegrityError):
        led.commit_block(blocks[1])
    assert led.height == 1 and led.app_hash() == before
    led.close()


def test_wrong_genesis_and_tampered_state_are_refused(chain: tuple, tmp_path: Path) -> None:
    g, _vk, tk, blocks = chain
    path = tmp_path / "c.db"
    led = Ledger.open(path, g)
    for blk in blocks[:3]:
        led.commit_block(blk)
    led.close()
    other, _, _ = make_genesis(2, chain_id="other")
    with pytest.raises(StoreError, match="genesis"):
        Ledger.open(path, other)
    db = sqlite3.connect(path)
    key = b"a" + tk[1].address
    (value,) = db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
    db.execute("UPDATE state SET value = ? WHERE key = ?", (value[:-1] + b"\x00", key))
    db.commit()
    db.close()
    with pytest.raises(StoreError):
        Ledger.open(path, g)
    with ChainStore(path) as st:
        assert st.height == 3


def test_bytes_on_disk_reported(chain: tuple, tmp_path: Path) -> None:
    g, _vk, _tk, blocks = chain
    led = Ledger.open(tmp_path / "c.db", g)
    for blk in blocks[:5]:
        led.commit_block(blk)
    assert led.store.size_bytes() > sum(len(b.encode()) for b in blocks[:5])
    led.close()


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    g, _, _ = make_genesis(2)
    path = tmp_path / "c.db"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match="not a database"):
        Ledger.open(path, g)
