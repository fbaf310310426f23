"""Mempool admission, nonce ordering, limits and eviction, reaping and re-checking."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.app.mempool import AlreadyKnown, Mempool, MempoolFull, PayloadMismatch, SenderLimit
from node.app.updates import payload_base
from node.core.crypto import PrivateKey
from node.ledger.state import State
from node.ledger.tx import (
    BadNonce,
    BadSignature,
    DuplicateUpdate,
    FeeTooLow,
    InsufficientFunds,
    NotATrainer,
    Transfer,
    Tx,
    WrongChain,
    sign_tx,
)
from tests.kits.genesis import make_genesis
from tests.kits.ledger import Devnet
from tests.node.daemon.chainkit import make_update

G, VK, TK = make_genesis(3, n_trainers=8)
G = G.replace(fl=G.fl.replace(min_updates=1))
DEST = PrivateKey.from_secret("dest").address


def transfer(key: PrivateKey, nonce: int, amount: int = 1, extra_fee: int = 0) -> Tx:
    t = sign_tx(key, G.chain_id, nonce, G.fees, Transfer(DEST, amount))
    if extra_fee:
        t = sign_tx(key, G.chain_id, nonce, t.fee + extra_fee, Transfer(DEST, amount))
    return t


def update(key: PrivateKey, state: State, nonce: int = 0, seed: int = 0) -> tuple[Tx, bytes]:
    """A signed update for the state's round and its (valid, random) payload."""
    m = state.meta
    return make_update(
        key,
        G,
        round=m.fl_round,
        base_ledger_hash=m.global_model,
        base_fl_hash=payload_base(G.fl, m.global_model),
        seed=seed,
        nonce=nonce,
        samples=10,
    )


def fresh(**kw: int) -> tuple[Devnet, Mempool]:
    net = Devnet(State.from_genesis(G), VK)
    return net, Mempool(net.state, **kw)


def test_admission_checks_and_dedupe() -> None:
    _, mp = fresh()
    t = transfer(TK[0], 0)
    mp.add(t)
    assert t.hash in mp and len(mp) == 1 and mp.size_bytes == t.size
    with pytest.raises(AlreadyKnown):
        mp.add(t)
    with pytest.raises(BadNonce):
        mp.add(transfer(TK[0], 2))  # gap
    with pytest.raises(BadNonce):
        mp.add(transfer(TK[1], 1))
    with pytest.raises(BadSignature):
        mp.add(transfer(TK[1], 0).replace(nonce=0, fee=10**6))
    with pytest.raises(WrongChain):
        mp.add(sign_tx(TK[1], "other", 0, 10**6, Transfer(DEST, 1)))
    with pytest.raises(FeeTooLow):
        mp.add(sign_tx(TK[1], G.chain_id, 0, 1, Transfer(DEST, 1)))
    with pytest.raises(InsufficientFunds):
        mp.add(transfer(PrivateKey.from_secret("poor"), 0))
    # Balance counts the sender's pending txs too.
    big = 10**12 - 10**6
    mp.add(transfer(TK[2], 0, amount=big))
    with pytest.raises(InsufficientFunds):
        mp.add(transfer(TK[2], 1, amount=10**6))
    mp.add(transfer(TK[0], 1))
    assert [x.nonce for x in mp.pending(TK[0].address)] == [0, 1]


def test_sender_limit() -> None:
    _, mp = fresh(max_per_sender=3)
    for n in range(3):
        mp.add(transfer(TK[0], n))
    with pytest.raises(SenderLimit):
        mp.add(transfer(TK[0], 3))


def test_count_limit_evicts_lowest_fee_tail_without_gaps() -> None:
    _, mp = fresh(max_txs=4)
    mp.add(transfer(TK[0], 0, extra_fee=500))
    mp.add(transfer(TK[0], 1, extra_fee=0))  # the cheapest tail
    mp.add(transfer(TK[1], 0, extra_fee=100))
    mp.add(transfer(TK[1], 1, extra_fee=200))
    # Cheaper than everything: refused.
    with pytest.raises(MempoolFull):
        mp.add(transfer(TK[2], 0, extra_fee=0))
    newcomer = transfer(TK[2], 0, extra_fee=300)
    mp.add(newcomer)
    assert len(mp) == 4
    assert [t.nonce for t in mp.pending(TK[0].address)] == [0]
    # TK[1]'s tail (nonce 1, fee 200) is cheaper per byte than its head but only the tail may go.
    mp.add(transfer(TK[3], 0, extra_fee=1000))
    assert [t.nonce for t in mp.pending(TK[1].address)] == [0]
    assert newcomer.hash in mp
    # Senders never end up with a gap.
    for k in TK:
        nonces = [t.nonce for t in mp.pending(k.address)]
        assert nonces == list(range(len(nonces)))


def test_byte_limit() -> None:
    t = transfer(TK[0], 0)
    _, mp = fresh(max_bytes=2 * t.size)
    mp.add(t)
    mp.add(transfer(TK[1], 0))
    with pytest.raises(MempoolFull):
        mp.add(transfer(TK[2], 0))
    mp.add(transfer(TK[2], 0, extra_fee=10_000))
    assert mp.size_bytes <= 2 * t.size + 10


def test_reap_orders_by_fee_and_nonce_within_limits() -> None:
    _, mp = fresh()
    a0, a1 = transfer(TK[0], 0, extra_fee=10), transfer(TK[0], 1, extra_fee=10_000)
    b0 = transfer(TK[1], 0, extra_fee=1000)
    for t in (a0, a1, b0):
        mp.add(t)
    assert mp.reap(10**6, 10) == [b0, a0, a1]
    assert mp.reap(10**6, 2) == [b0, a0]
    assert mp.reap(b0.size + a0.size, 10) == [b0, a0]
    assert len(mp) == 3  # reaping does not remove


def test_update_after_block_drops_committed_and_invalidated() -> None:
    net, mp = fresh()
    t0, t1 = transfer(TK[0], 0), transfer(TK[0], 1)
    mp.add(t0)
    mp.add(t1)
    # TK[1] spends almost everything in the mempool; a block elsewhere empties its balance.
    spender = transfer(TK[1], 0, amount=10)
    mp.add(spender)
    other = sign_tx(TK[1], G.chain_id, 0, 10**4, Transfer(DEST, 10**12 - 10**4))
    block = net.step([t0, other])
    mp.update(block, net.state)
    assert t0.hash not in mp and t1.hash in mp
    assert spender.hash not in mp  # its nonce was used by another tx
    assert mp.reap(10**6, 10) == [t1]


def test_next_nonce_counts_committed_and_pending_txs() -> None:
    net, mp = fresh()
    assert mp.next_nonce(TK[0].address) == 0
    mp.add(transfer(TK[0], 0))
    mp.add(transfer(TK[0], 1))
    assert mp.next_nonce(TK[0].address) == 2
    block = net.step([transfer(TK[0], 0)])
    mp.update(block, net.state)  # one committed, one still pending
    assert mp.next_nonce(TK[0].address) == 2
    assert mp.next_nonce(TK[1].address) == 0


def test_model_updates_one_per_trainer_and_stale_rounds_dropped() -> None:
    net, mp = fresh()
    u, payload = update(TK[0], net.state)
    with pytest.raises(PayloadMismatch):
        mp.add(u, payload=b"x" * 100)
    mp.add(u, payload=payload)
    assert mp.payload(u.hash) == payload and mp.payload_bytes == len(payload)
    assert mp.size_bytes == u.size  # payloads are accounted separately
    with pytest.raises(DuplicateUpdate):
        mp.add(*update(TK[0], net.state, nonce=1, seed=1))
    u2, payload2 = update(TK[1], net.state, seed=2)
    mp.add(u2, payload2)
    # Ordinary reaping leaves updates for the round-closing block.
    mp.add(transfer(TK[2], 0))
    assert [t.body.TAG for t in mp.reap(10**6, 10)] == ["transfer"]
    assert mp.model_updates(0) == sorted([u, u2], key=lambda t: t.hash)
    # The round closes with u2 only: u is now stale and dropped, with its payload.
    block = net.step([u2])
    mp.update(block, net.state)
    assert u.hash not in mp and mp.payload_bytes == 0
    assert mp.model_updates(1) == []


def test_unregistered_trainer_refused() -> None:
    net, mp = fresh()
    outsider = PrivateKey.from_secret("outsider")
    fund = sign_tx(TK[0], G.chain_id, 0, G.fees, Transfer(outsider.address, 10**9))
    mp.update(net.step([fund]), net.state)
    with pytest.raises(NotATrainer):
        mp.add(*update(outsider, net.state))


def test_payload_budget() -> None:
    state = State.from_genesis(G)
    first, payload = update(TK[0], state)
    net, mp = fresh(max_payload_bytes=len(payload) * 3 // 2)
    mp.add(first, payload)
    with pytest.raises(MempoolFull):
        mp.add(*update(TK[1], net.state, seed=1))


@settings(max_examples=40)
@given(
    st.lists(
        st.tuples(st.integers(0, 7), st.integers(0, 2000), st.booleans()),
        min_size=1,
        max_size=40,
    ),
    st.integers(2, 12),
)
def test_invariants_under_random_load(ops: list[tuple[int, int, bool]], cap: int) -> None:
    _, mp = fresh(max_txs=cap)
    next_nonce = [0] * 8
    for who, extra, skip in ops:
        key = TK[who]
        n = next_nonce[who] + (1 if skip else 0)
        with contextlib.suppress(MempoolFull, BadNonce):
            mp.add(transfer(key, n, extra_fee=extra))
        pend = mp.pending(key.address)
        next_nonce[who] = len(pend)
        assert len(mp) <= cap
        assert mp.size_bytes == sum(t.size for k in TK for t in mp.pending(k.address))
        for k in TK:
            nonces = [t.nonce for t in mp.pending(k.address)]
            assert nonces == list(range(len(nonces)))
    reaped = mp.reap(10**9, 10**6)
    assert len(reaped) == len(mp)
    assert mp.state.select_valid(reaped) == reaped
