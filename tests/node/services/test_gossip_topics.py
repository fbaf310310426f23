"""Gossip validators: admission decides ACCEPT / REJECT (hostile) / IGNORE (stale, dup)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.block import sha256_id
from consensus.engine import Screen
from consensus.sim.network import UnguardedSigner
from consensus.tendermint.messages import Envelope, ProposalMsg, StatusMsg, VoteMsg
from consensus.types import VoteType
from node.app.mempool import Mempool
from node.core.codec import sha256
from node.core.crypto import PrivateKey, verify
from node.ledger.tx import Transfer, Tx, sign_tx
from node.p2p.gossipsub.messages import Message, Verdict
from node.p2p.peer_id import IdentityKey
from node.services.gossip_topics import (
    MAX_CONSENSUS_BYTES,
    AuthorBudget,
    Topics,
    UpdateGossip,
    consensus_screen,
    consensus_validator,
    tx_validator,
    update_validator,
)
from node.store.ledger import Ledger
from node.store.models import ZERO_HASH
from tests.node.daemon.chainkit import genesis_for, initial_fl_hash, make_update

KEYS = [PrivateKey.from_secret(f"gossip-{i}") for i in range(2)]
ME = IdentityKey.from_seed(b"\x01" * 32).peer_id
PEER = IdentityKey.from_seed(b"\x02" * 32).peer_id


@pytest.fixture
def pool(tmp_path: Path) -> Mempool:
    ledger = Ledger.open(tmp_path / "chain.sqlite", genesis_for(KEYS), fsync=False)
    return Mempool(ledger.state)


def _msg(topic: str, data: bytes) -> Message:
    return Message(topic=topic, data=data, from_=PEER.to_bytes())


def _transfer(nonce: int = 0) -> Tx:
    g = genesis_for(KEYS)
    return sign_tx(KEYS[0], g.chain_id, nonce, g.fees, Transfer(KEYS[1].address, 1))


async def test_tx_topic(pool: Mempool) -> None:
    topic = Topics("daemon-test").txs
    v = tx_validator(ME, pool.add)
    tx = _transfer()
    assert await v(PEER, _msg(topic, tx.encode())) is Verdict.ACCEPT
    assert tx.hash in pool
    assert await v(PEER, _msg(topic, tx.encode())) is Verdict.IGNORE  # already known
    assert await v(PEER, _msg(topic, b"\x00garbage")) is Verdict.REJECT
    forged = _transfer(1).replace(signature=b"\x07" * 64)
    assert await v(PEER, _msg(topic, forged.encode())) is Verdict.REJECT
    assert await v(PEER, _msg(topic, _transfer(5).encode())) is Verdict.IGNORE  # nonce gap
    # Our own publications were admitted before publishing.
    assert await v(ME, _msg(topic, b"anything")) is Verdict.ACCEPT


async def test_updates_topic(pool: Mempool) -> None:
    g = genesis_for(KEYS)
    topic = Topics(g.chain_id).updates
    v = update_validator(ME, pool.add, current_round=lambda: 0)
    tx, payload = make_update(
        KEYS[0], g, round=0, base_ledger_hash=ZERO_HASH, base_fl_hash=initial_fl_hash(g), seed=3
    )
    # An update on the plain tx topic is refused: it needs its payload.
    assert await tx_validator(ME, pool.add)(PEER, _msg("t", tx.encode())) is Verdict.REJECT
    # A payload that is not the one the tx commits to.
    other_tx, other_payload = make_update(
        KEYS[1], g, round=0, base_ledger_hash=ZERO_HASH, base_fl_hash=initial_fl_hash(g), seed=4
    )
    swapped = UpdateGossip(tx.encode(), other_payload).encode()
    assert await v(PEER, _msg(topic, swapped)) is Verdict.REJECT
    assert await v(PEER, _msg(topic, UpdateGossip(tx.encode(), b"\x01junk").encode())) is (
        Verdict.REJECT
    )
    good = UpdateGossip(tx.encode(), payload).encode()
    assert await v(PEER, _msg(topic, good)) is Verdict.ACCEPT
    assert pool.payload(tx.hash) == payload
    assert await v(PEER, _msg(topic, good)) is Verdict.IGNORE
    stale = update_validator(ME, pool.add, current_round=lambda: 3)
    fresh = UpdateGossip(other_tx.encode(), other_payload).encode()
    assert await stale(PEER, _msg(topic, fresh)) is Verdict.IGNORE


def _screen(ledger: Ledger) -> Callable[[bytes], Screen]:
    return consensus_screen(
        ledger.state.genesis.consensus_engine, ledger, verifier=verify, block_id=sha256_id
    )


def _vote(key: PrivateKey, height: int, chain: str = "") -> bytes:
    chain = chain or genesis_for(KEYS).chain_id
    v = UnguardedSigner(key).sign_vote(chain, height, 0, VoteType.PREVOTE, b"\x01" * 32)
    return Envelope(VoteMsg(v)).encode()


def _proposal(key: PrivateKey, data: bytes, signed_hash: bytes | None = None) -> bytes:
    chain = genesis_for(KEYS).chain_id
    p = UnguardedSigner(key).sign_proposal(chain, 1, 0, 0, signed_hash or sha256(data))
    return Envelope(ProposalMsg(p, data)).encode()


async def test_consensus_topic_forwards_only_checked_validator_messages(
    tmp_path: Path,
) -> None:
    ledger = Ledger.open(tmp_path / "chain.sqlite", genesis_for(KEYS), fsync=False)
    try:
        v = consensus_validator(ME, _screen(ledger))
        outsider = PrivateKey.from_secret("not-a-validator")
        ok = {
            "a validator's vote": _vote(KEYS[0], 1),
            "a validator's proposal": _proposal(KEYS[1], b"block"),
            "a vote for a height whose set is not known yet": _vote(KEYS[0], 10**6),
            "a status": Envelope(StatusMsg(1, 0)).encode(),
        }
        for why, data in ok.items():
            assert await v(PEER, _msg("c", data)) is Verdict.ACCEPT, why
        forged = bytearray(_vote(KEYS[0], 1))
        forged[-3] ^= 1
        bad = {
            "junk of 1 MiB": b"\x00" * (1 << 20),
            "an outsider's vote": _vote(outsider, 1),
            "an outsider's proposal": _proposal(outsider, b"block"),
            "a forged signature": bytes(forged),
            "another chain": _vote(KEYS[0], 1, chain="other-chain"),
            "a genuine signature over other bytes": _proposal(
                KEYS[1], b"junk", signed_hash=sha256(b"block")
            ),
            "too large": b"x" * (MAX_CONSENSUS_BYTES + 1),
        }
        for why, data in bad.items():
            assert await v(PEER, _msg("c", data)) is Verdict.REJECT, why
        # Beyond the sets the ledger knows, an unknown key may be a validator to come.
        assert await v(PEER, _msg("c", _vote(outsider, 10**6))) is Verdict.IGNORE
        # What this node published passed its own engine.
        assert await v(ME, _msg("c", b"\x00" * 100)) is Verdict.ACCEPT
    finally:
        ledger.close()


async def test_a_status_flood_is_blamed_on_its_author_not_on_relays() -> None:
    """Status is unsigned, so it costs its author nothing: without a budget per author a
    peer could have every node forward (and answer) hundreds of them a second."""
    now = [0.0]
    budget = AuthorBudget(rate=10.0, burst=20.0, clock=lambda: now[0])
    v = consensus_validator(ME, lambda data: Screen.ACCEPT, budget)
    status = Envelope(StatusMsg(1, 0)).encode()
    verdicts = [await v(PEER, _msg("c", status)) for _ in range(25)]
    assert verdicts[:20] == [Verdict.ACCEPT] * 20
    assert verdicts[20:] == [Verdict.REJECT] * 5  # the author itself sent them to us
    relay = IdentityKey.from_seed(b"\x03" * 32).peer_id
    assert await v(relay, _msg("c", status)) is Verdict.IGNORE  # a relay is not blamed
    other = Message(topic="c", data=status, from_=relay.to_bytes())
    assert await v(relay, other) is Verdict.ACCEPT  # another author has its own budget
    now[0] += 1.0  # the budget refills at its rate
    refilled = [await v(PEER, _msg("c", status)) for _ in range(11)]
    assert refilled == [Verdict.ACCEPT] * 10 + [Verdict.REJECT]


def test_topics_are_per_chain() -> None:
    a, b = Topics("one"), Topics("two")
    assert {a.txs, a.updates, a.consensus}.isdisjoint({b.txs, b.updates, b.consensus})


def test_consensus_resends_are_new_messages_txs_are_not() -> None:
    t = Topics("c")
    vote = b"the same vote bytes"
    first = Message(
        topic=t.consensus, data=vote, from_=PEER.to_bytes(), seqno=b"\x00" * 7 + b"\x01"
    )
    again = Message(
        topic=t.consensus, data=vote, from_=PEER.to_bytes(), seqno=b"\x00" * 7 + b"\x02"
    )
    assert t.message_id(first) != t.message_id(again)
    tx1 = Message(topic=t.txs, data=b"tx", from_=PEER.to_bytes(), seqno=b"\x01")
    tx2 = Message(topic=t.txs, data=b"tx", from_=ME.to_bytes(), seqno=b"\x09")
    assert t.message_id(tx1) == t.message_id(tx2)


@given(st.binary(max_size=512))
def test_wire_records_refuse_junk_with_a_typed_error(data: bytes) -> None:
    from node.core.codec import CodecError
    from node.services.block_sync import BlocksRequest, BlocksResponse, CheckpointResponse

    for cls in (UpdateGossip, BlocksRequest, BlocksResponse, CheckpointResponse):
        with contextlib.suppress(CodecError):  # anything else fails the test
            cls.decode(data)


@given(st.binary(min_size=1, max_size=64), st.binary(min_size=1, max_size=64))
def test_update_gossip_roundtrip(tx: bytes, payload: bytes) -> None:
    g = UpdateGossip(tx, payload)
    assert UpdateGossip.decode(g.encode()) == g


async def test_an_update_trained_from_another_model_is_rejected(pool: Mempool) -> None:
    """Issue 15 item 1: the validator checked the payload's digest but not its base model,
    so a payload no proposer could aggregate was admitted and forwarded."""
    g = genesis_for(KEYS)
    topic = Topics(g.chain_id).updates
    v = update_validator(ME, pool.add, current_round=lambda: 0)
    tx, payload = make_update(
        KEYS[0], g, round=0, base_ledger_hash=ZERO_HASH, base_fl_hash=b"\x42" * 32, seed=5
    )
    assert await v(PEER, _msg(topic, UpdateGossip(tx.encode(), payload).encode())) is (
        Verdict.REJECT
    )
    assert tx.hash not in pool and pool.payload_bytes == 0
