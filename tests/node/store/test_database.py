"""Damaged database files at start (issue 15, items 11 and 15): the quick check finds a
damaged page nothing reads at start, bounded in time; every store reports damage as one
CorruptStore naming the file and what to do."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from node.ledger.genesis import Genesis
from node.store.blobs import BlobStore
from node.store.commits import CommitStore
from node.store.database import quick_check
from node.store.errors import CorruptStore
from node.store.ledger import Ledger
from tests.kits.damage import damage_table
from tests.kits.genesis import make_genesis
from tests.kits.ledger import Devnet


def chain_file(path: Path, blocks: int) -> Genesis:
    """A chain.sqlite with ``blocks`` empty blocks, closed with its WAL folded in."""
    g, vkeys, _ = make_genesis(2, n_trainers=1, chain_id="db-test")
    led = Ledger.open(path, g, fsync=False)
    dev = Devnet(led.state, vkeys)
    for _ in range(blocks):
        block = dev.propose()
        led.commit_block(block)
        dev.last_block = block
    led.store.checkpoint()
    led.close()
    return g


def test_a_damaged_block_page_is_found_at_open(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    g = chain_file(path, 5)
    damage_table(path, "blocks")
    # Without the check the ledger opens (the blocks are not read at start) ...
    Ledger.open(path, g, fsync=False).close()
    # ... with it, the damage is one error naming the file and what to do.
    with pytest.raises(CorruptStore) as info:
        Ledger.open(path, g, fsync=False, check_seconds=5)
    msg = str(info.value)
    assert str(path) in msg and "sync the chain from peers" in msg


def test_a_damaged_state_page_is_a_clear_error_even_unchecked(tmp_path: Path) -> None:
    """The state is read whole at open: its damage is found then, check or not."""
    path = tmp_path / "chain.sqlite"
    g = chain_file(path, 3)
    damage_table(path, "state")
    with pytest.raises(CorruptStore, match=f"database {path} is damaged"):
        Ledger.open(path, g, fsync=False)


def test_a_file_that_is_no_database_is_a_clear_error(tmp_path: Path) -> None:
    for name, open_store in (
        ("commits.sqlite", lambda p: CommitStore(p)),
        ("blobs/index.sqlite", lambda p: BlobStore(p.parent)),
    ):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x13" * 8192)
        with pytest.raises(CorruptStore, match=f"database {path} is damaged"):
            open_store(path)


def test_the_check_stops_at_its_time_budget(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = sqlite3.connect(tmp_path / "big.sqlite")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    db.executemany("INSERT INTO t VALUES (?, ?)", ((i, b"x" * 200) for i in range(20_000)))
    db.commit()
    assert quick_check(db, tmp_path / "big.sqlite", seconds=30, advice="-")
    caplog.set_level(logging.WARNING)
    assert not quick_check(db, tmp_path / "big.sqlite", seconds=1e-9, advice="-")
    assert "stopped after" in caplog.text
    # The connection is usable afterwards: the progress handler is gone.
    assert db.execute("SELECT count(*) FROM t").fetchone() == (20_000,)
    assert not quick_check(db, tmp_path / "big.sqlite", seconds=0, advice="-")  # 0: skipped
    db.close()
