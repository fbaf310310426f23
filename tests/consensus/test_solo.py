"""The dev engine and the ABCI-style connector."""

from __future__ import annotations

import pytest

from consensus.app import AppConnector
from consensus.block import Block
from consensus.engine import (
    BlockCommitted,
    Checkpoint,
    CommitBlock,
    Engine,
    ProposalReady,
    RequestProposal,
    ScheduleTimeout,
    Start,
    TimeoutFired,
    TxsAvailable,
)
from consensus.privval import GuardedSigner, MemoryStateStore
from consensus.registry import EngineConfig, create_engine
from consensus.sim.app import SimApp
from consensus.types import Validator, ValidatorSet
from node.core.codec import sha256
from node.core.crypto import PrivateKey

KEY = PrivateKey.from_secret("solo")
VSET = ValidatorSet.of([Validator(KEY.public_key, 10)])


def solo(store: MemoryStateStore | None = None, recovery: bytes | None = None) -> Engine:
    cfg = EngineConfig(
        "dev",
        GuardedSigner(KEY, store or MemoryStateStore()),
        VSET,
        recovery=recovery,
        options={"heartbeat": 2.0},
    )
    return create_engine("solo", cfg)


def blk(tag: str) -> Block:
    return Block(sha256(tag.encode()), tag.encode())


def test_solo_rejects_a_foreign_validator_set() -> None:
    other = ValidatorSet.of([Validator(PrivateKey.from_secret("x").public_key, 1)])
    with pytest.raises(ValueError):
        create_engine("solo", EngineConfig("dev", GuardedSigner(KEY, MemoryStateStore()), other))


def test_heartbeat_produces_blocks_with_valid_commits() -> None:
    e = solo()
    (t,) = e.handle(Start())
    assert isinstance(t, ScheduleTimeout) and t.duration == 2.0
    (req,) = e.handle(TimeoutFired(t.kind, t.height, t.round))
    assert isinstance(req, RequestProposal) and req.height == 1 and req.last_commit is None
    (c,) = e.handle(ProposalReady(1, 0, blk("a")))
    assert isinstance(c, CommitBlock)
    VSET.verify_commit("dev", c.commit)
    out = e.handle(BlockCommitted(1, b"app"))
    assert isinstance(out[0], Checkpoint) and isinstance(out[1], ScheduleTimeout)
    # A stale heartbeat (armed before the block) does nothing.
    assert e.handle(TimeoutFired(t.kind, t.height, t.round)) == []
    (req2,) = e.handle(TimeoutFired(out[1].kind, out[1].height, out[1].round))
    assert isinstance(req2, RequestProposal) and req2.last_commit == c.commit


def test_transactions_trigger_a_block_immediately_and_queue_while_busy() -> None:
    e = solo()
    e.handle(Start())
    (req,) = e.handle(TxsAvailable())
    assert isinstance(req, RequestProposal)
    assert e.handle(TxsAvailable()) == []  # busy: remembered
    e.handle(ProposalReady(1, 0, blk("a")))
    out = e.handle(BlockCommitted(1, b"app"))
    assert any(isinstance(x, RequestProposal) and x.height == 2 for x in out)


def test_restart_after_signing_another_block_uses_a_fresh_round() -> None:
    store = MemoryStateStore()
    e = solo(store)
    e.handle(Start())
    e.handle(TxsAvailable())
    e.handle(ProposalReady(1, 0, blk("lost-in-crash")))
    again = solo(store)  # crashed before the block was stored
    again.handle(Start())
    again.handle(TxsAvailable())
    (c,) = again.handle(ProposalReady(1, 0, blk("rebuilt")))
    assert isinstance(c, CommitBlock) and c.commit.round == 1
    VSET.verify_commit("dev", c.commit)


def test_solo_checkpoint_resumes_height_and_last_commit() -> None:
    e = solo()
    e.handle(Start())
    e.handle(TxsAvailable())
    (c,) = e.handle(ProposalReady(1, 0, blk("a")))
    assert isinstance(c, CommitBlock)
    cp = e.handle(BlockCommitted(1, b"app"))[0]
    assert isinstance(cp, Checkpoint)
    r = solo(recovery=cp.data)
    assert r.height == 2
    r.handle(Start())
    (req,) = r.handle(TxsAvailable())
    assert isinstance(req, RequestProposal) and req.last_commit == c.commit


def test_connector_runs_solo_against_an_application() -> None:
    app = SimApp("dev")
    conn = AppConnector(app)
    e = solo()
    pending = [*e.handle(Start()), *e.handle(TxsAvailable())]
    for _ in range(20):
        if not pending:
            break
        eff = pending.pop(0)
        for ev in conn.execute(eff, 0):
            pending += e.handle(ev)
    assert [h for h, _, _ in app.committed] == [1]
    assert e.height == 2
