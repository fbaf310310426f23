"""State transitions: transfers, fees, staking, unbonding, slashing, rewards, FL registry."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.sim.network import UnguardedSigner
from consensus.types import DuplicateProposalEvidence, DuplicateVoteEvidence, VoteType
from node.core.codec import sha256
from node.core.crypto import PrivateKey
from node.ledger.block import BlockError
from node.ledger.genesis import FeeParams, Genesis
from node.ledger.state import State
from node.ledger.tx import (
    BadNonce,
    BadSignature,
    Body,
    DuplicateUpdate,
    Evidence,
    EvidenceError,
    FeeTooLow,
    InsufficientFunds,
    InsufficientStake,
    ModelUpdate,
    NotATrainer,
    ProposalEvidence,
    Stake,
    StaleUpdate,
    Transfer,
    Tx,
    TxTooLarge,
    Unstake,
    WrongChain,
    sign_tx,
)
from tests.kits.genesis import make_genesis
from tests.kits.ledger import Devnet, sign_vote

BALANCE = 10**12
STAKE = 10**6


def setup(
    n_val: int = 4, n_tr: int = 3
) -> tuple[Genesis, Devnet, list[PrivateKey], list[PrivateKey]]:
    g, vk, tk = make_genesis(n_val, n_trainers=n_tr)
    net = Devnet(State.from_genesis(g), vk)
    return g, net, vk, tk


def tx(g: Genesis, key: PrivateKey, nonce: int, body: Body) -> Tx:
    return sign_tx(key, g.chain_id, nonce, g.fees, body)


def update_for(g: Genesis, net: Devnet, key: PrivateKey, nonce: int = 0) -> Tx:
    m = net.state.meta
    return tx(g, key, nonce, ModelUpdate(m.fl_round, m.global_model, 50, sha256(key.seed), 1000))


def test_transfer_moves_funds_pays_fee_and_rewards_proposer() -> None:
    g, net, _vk, tk = setup()
    outsider = PrivateKey.from_secret("outsider").address
    t = tx(g, tk[0], 0, Transfer(outsider, 1234))
    block = net.propose([t])
    proposer_before = net.state.account(block.header.proposer).balance
    net.advance(block)
    s = net.state
    assert s.account(outsider).balance == 1234
    assert s.account(tk[0].address).balance == BALANCE - 1234 - t.fee
    assert s.account(tk[0].address).nonce == 1
    reward = g.rewards.block_reward
    assert s.account(block.header.proposer).balance == proposer_before + reward + t.fee


def test_replay_protection() -> None:
    g, net, vk, tk = setup()
    to = vk[1].address
    t = tx(g, tk[0], 0, Transfer(to, 1))
    net.step([t])
    # The same tx again: its nonce is used.
    with pytest.raises(BadNonce):
        net.state.check_tx(t)
    with pytest.raises(BlockError, match="bad_nonce"):
        net.step([t])
    # A tx signed for another chain.
    other = sign_tx(tk[0], "other-chain", 1, 10**6, Transfer(to, 1))
    with pytest.raises(WrongChain):
        net.state.check_tx(other)
    # Changing the chain id after signing breaks the signature.
    forged = other.replace(chain_id=g.chain_id)
    with pytest.raises(BadSignature):
        net.state.check_tx(forged)
    # A tampered amount breaks the signature; a signature by another key too.
    good = tx(g, tk[0], 1, Transfer(to, 1))
    with pytest.raises(BadSignature):
        net.state.check_tx(good.replace(body=Transfer(to, 2)))
    with pytest.raises(BadSignature):
        net.state.check_tx(good.replace(sender=tk[1].public_key))
    net.state.check_tx(good)
    # A future nonce is refused too (no gaps).
    with pytest.raises(BadNonce):
        net.state.check_tx(tx(g, tk[0], 5, Transfer(to, 1)))


def test_fee_and_balance_limits() -> None:
    g, net, vk, tk = setup()
    to = vk[1].address
    t = tx(g, tk[0], 0, Transfer(to, 1))
    assert t.fee == g.fees.base + g.fees.per_byte * t.size
    cheap = sign_tx(tk[0], g.chain_id, 0, t.fee - 1, Transfer(to, 1))
    with pytest.raises(FeeTooLow):
        net.state.check_tx(cheap)
    with pytest.raises(InsufficientFunds):
        net.state.check_tx(tx(g, tk[0], 0, Transfer(to, BALANCE)))
    poor = PrivateKey.from_secret("poor")
    with pytest.raises(InsufficientFunds):
        net.state.check_tx(tx(g, poor, 0, Transfer(to, 0)))


def test_invalid_block_is_not_applied_at_all() -> None:
    g, net, vk, tk = setup()
    good = tx(g, tk[0], 0, Transfer(vk[0].address, 5))
    bad = tx(g, tk[1], 7, Transfer(vk[0].address, 5))
    before = net.state.app_hash()
    items_before = dict(net.state.items())
    with pytest.raises(BlockError, match="tx 1"):
        net.step([good, bad])
    assert net.state.app_hash() == before
    assert dict(net.state.items()) == items_before
    net.step([good])  # the state is usable afterwards


def test_block_header_checks() -> None:
    _g, net, _vk, tk = setup()
    net.step()
    good = net.propose()
    for changes, msg in [
        ({"height": 5}, "height"),
        ({"prev_hash": bytes(32)}, "prev_hash"),
        ({"app_hash": bytes(32)}, "app_hash"),
        ({"validators_hash": bytes(32)}, "validators_hash"),
        ({"proposer": tk[0].address}, "proposer"),
        ({"time_ms": 0}, "time"),
        ({"chain_id": "x"}, "chain"),
        ({"fl_round": 3}, "FL round"),
        ({"last_commit_hash": bytes(32)}, "last_commit_hash"),
    ]:
        b = good.replace(header=good.header.replace(**changes))
        with pytest.raises(BlockError, match=msg):
            net.state.apply_block(b)
    # A commit missing most signatures is below quorum.
    assert good.last_commit is not None
    thin = good.last_commit.replace(signatures=good.last_commit.signatures[:1])
    with pytest.raises(BlockError, match="quorum"):
        net.state.apply_block(good.replace(last_commit=thin))
    net.advance(good)


def test_stake_unstake_and_unbonding_maturity() -> None:
    g, net, vk, tk = setup()
    staker = tk[0]
    net.step([tx(g, staker, 0, Stake(5000))])
    s = net.state
    bond = s.bond(staker.address)
    assert bond is not None and bond.stake == 5000
    assert s.account(staker.address).balance < BALANCE - 5000
    # Stake >= min_validator_stake: joins the set valset_delay blocks later.
    h = s.height
    assert staker.address not in s.validator_set(h + 1).by_address()
    assert s.validator_set(h + g.staking.valset_delay).by_address()[staker.address].power == 5000

    with pytest.raises(InsufficientStake):
        s.check_tx(tx(g, staker, 1, Unstake(5001)))
    net.step([tx(g, staker, 1, Unstake(2000))])
    unstake_h = s.height
    mature = unstake_h + g.staking.unbonding_blocks
    assert [e.amount for e in s.unbonding(mature)] == [2000]
    bal = s.account(staker.address).balance
    while s.height < mature - 1:
        net.step(proposer=vk[0].address)
    assert s.account(staker.address).balance == bal
    net.step(proposer=vk[0].address)
    assert s.account(staker.address).balance == bal + 2000
    assert s.unbonding(mature) == ()
    # Unbonding everything removes the bond and the validator.
    net.step([tx(g, staker, 2, Unstake(3000))])
    gone = s.bond(staker.address)
    assert gone is not None and gone.stake == 0  # kept so late evidence still verifies
    assert staker.address not in s.validator_set(s.height + g.staking.valset_delay).by_address()


def test_validator_updates_are_reported() -> None:
    g, net, vk, _tk = setup()
    b = net.propose([tx(g, vk[0], 0, Stake(10))])
    _, updates = net.state.apply_block(b)
    net.last_block = b
    assert [(u.address, u.power) for u in updates] == [(vk[0].address, STAKE + 10)]
    b = net.propose([tx(g, vk[1], 0, Unstake(STAKE))])
    _, updates = net.state.apply_block(b)
    assert [(u.address, u.power) for u in updates] == [(vk[1].address, 0)]


def _double_sign(g: Genesis, key: PrivateKey, height: int, round: int = 0) -> Evidence:
    a = sign_vote(key, g.chain_id, height, sha256(b"a"), round=round, type=VoteType.PREVOTE)
    b = sign_vote(key, g.chain_id, height, sha256(b"b"), round=round, type=VoteType.PREVOTE)
    return Evidence(DuplicateVoteEvidence.of(a, b))


def test_slashing_burns_jails_and_counts_once() -> None:
    g, net, vk, tk = setup()
    net.step()
    net.step()
    offender = vk[2]
    # It starts unbonding part of its stake after the offence: that is slashed too.
    net.step([tx(g, offender, 0, Unstake(100_000))])
    ev = _double_sign(g, offender, 1)
    net.step([tx(g, tk[0], 0, ev)])
    s = net.state
    frac = g.staking.slash_fraction_ppm
    bond = s.bond(offender.address)
    assert bond is not None and bond.jailed
    left = STAKE - 100_000
    assert bond.stake == left - left * frac // 1_000_000
    mature = 3 + g.staking.unbonding_blocks
    (entry,) = s.unbonding(mature)
    assert entry.amount == 100_000 - 100_000 * frac // 1_000_000
    assert offender.address not in s.validator_set(s.height + g.staking.valset_delay).by_address()
    # Same offence again (also the same votes from another submitter): refused.
    with pytest.raises(EvidenceError, match="already"):
        s.check_tx(tx(g, tk[1], 0, ev))
    # A different offence (another round) is punished again.
    net.step([tx(g, tk[1], 0, _double_sign(g, offender, 2, round=1))])
    bond2 = s.bond(offender.address)
    assert bond2 is not None and bond2.stake < bond.stake


def test_evidence_rules() -> None:
    g, net, vk, tk = setup()
    net.step()
    s = net.state
    with pytest.raises(EvidenceError, match="future"):
        s.check_tx(tx(g, tk[0], 0, _double_sign(g, vk[0], 5)))
    with pytest.raises(EvidenceError, match="not a validator"):
        s.check_tx(tx(g, tk[0], 0, _double_sign(g, tk[1], 1)))
    # Votes signed for another chain do not count here.
    a = sign_vote(vk[0], "other", 1, sha256(b"a"))
    b = sign_vote(vk[0], "other", 1, sha256(b"b"))
    with pytest.raises(EvidenceError, match="signed"):
        s.check_tx(tx(g, tk[0], 0, Evidence(DuplicateVoteEvidence.of(a, b))))
    while s.height < g.staking.unbonding_blocks + 2:
        net.step()
    with pytest.raises(EvidenceError, match="older"):
        s.check_tx(tx(g, tk[0], 0, _double_sign(g, vk[0], 1)))


def test_fl_round_updates_rewards_and_registry() -> None:
    g, net, _vk, tk = setup(n_tr=3)
    s = net.state
    assert g.fl.min_updates == 1
    model0 = s.meta.global_model
    ups = [update_for(g, net, k) for k in tk[:2]]
    new_model = sha256(b"aggregate-1")
    net.step(ups, global_model_hash=new_model)
    assert s.meta.fl_round == 1 and s.meta.global_model == new_model
    for k, u in zip(tk[:2], ups, strict=True):
        t = s.trainer(k.address)
        assert t is not None and t.contributions == 1
        assert s.account(k.address).balance == BALANCE - u.fee + g.rewards.update_reward
    # Updates on the old model / round are stale now.
    stale = tx(g, tk[2], 0, ModelUpdate(0, model0, 5, bytes(32), 10))
    with pytest.raises(StaleUpdate):
        s.check_tx(stale)
    wrong_base = tx(g, tk[2], 0, ModelUpdate(1, model0, 5, bytes(32), 10))
    with pytest.raises(StaleUpdate):
        s.check_tx(wrong_base)
    too_big = tx(g, tk[2], 0, ModelUpdate(1, new_model, 5, bytes(32), g.fl.max_update_bytes + 1))
    with pytest.raises(TxTooLarge):
        s.check_tx(too_big)
    # A block without updates must not move the round or the model.
    b = net.propose()
    with pytest.raises(BlockError, match="FL round"):
        net.state.apply_block(b.replace(header=b.header.replace(global_model_hash=bytes(32))))
    # ... and a block with updates must advance it by exactly one.
    b = net.propose([update_for(g, net, tk[2])])
    with pytest.raises(BlockError, match="advance"):
        net.state.apply_block(b.replace(header=b.header.replace(fl_round=1)))
    net.advance(b)
    assert s.meta.fl_round == 2


def test_one_update_per_trainer_per_round() -> None:
    g, net, _vk, tk = setup()
    u1 = update_for(g, net, tk[0], 0)
    u2 = update_for(g, net, tk[0], 1)
    n, err = net.state.check_sequence([u1, u2])
    assert n == 1 and isinstance(err, DuplicateUpdate)
    with pytest.raises(BlockError, match="duplicate_update"):
        net.step([u1, u2])


def test_only_registered_trainers() -> None:
    g, net, vk, _tk = setup()
    nobody = PrivateKey.from_secret("nobody")
    net.step([tx(g, vk[0], 0, Transfer(nobody.address, 10**9))])
    with pytest.raises(NotATrainer):
        net.state.check_tx(update_for(g, net, nobody))
    # Bonding the minimum trainer stake registers it (below the validator minimum).
    net.step([tx(g, nobody, 0, Stake(g.staking.min_trainer_stake))])
    assert nobody.address not in net.state.active_set().by_address()
    net.step([update_for(g, net, nobody, 1)])
    t = net.state.trainer(nobody.address)
    assert t is not None and t.contributions == 1 and not t.genesis


def test_round_needs_min_updates_until_timeout() -> None:
    g, vk, tk = make_genesis(2, n_trainers=4)
    assert g.fl.min_updates == 2
    net = Devnet(State.from_genesis(g), vk)
    with pytest.raises(BlockError, match="early"):
        net.step([update_for(g, net, tk[0])])
    while net.state.height < g.fl.round_timeout_blocks:
        net.step()
    net.step([update_for(g, net, tk[0])])
    assert net.state.meta.fl_round == 1


def test_app_hash_is_independent_of_write_order() -> None:
    g, _vk, _tk = make_genesis(3, n_trainers=2)
    a = State.from_genesis(g)
    rows = [(k, v.encode()) for k, v in a.items()]
    b = State.from_encoded(g, reversed(rows))
    assert a.app_hash() == b.app_hash()
    g2 = g.replace(fees=FeeParams(base=11, per_byte=1))
    assert State.from_genesis(g2).app_hash() != a.app_hash()


def test_select_valid_skips_invalid_and_leaves_state() -> None:
    g, net, vk, tk = setup()
    ok1 = tx(g, tk[0], 0, Transfer(vk[0].address, 1))
    gap = tx(g, tk[0], 5, Transfer(vk[0].address, 1))
    ok2 = tx(g, tk[0], 1, Transfer(vk[0].address, 1))
    before = net.state.app_hash()
    assert net.state.select_valid([ok1, gap, ok2]) == [ok1, ok2]
    assert net.state.app_hash() == before


def test_simulate_block_leaves_state_unchanged() -> None:
    g, net, _vk, tk = setup()
    block = net.propose([tx(g, tk[0], 0, Transfer(tk[1].address, 7))])
    before = dict(net.state.items())
    h1, _ = net.state.simulate_block(block)
    assert dict(net.state.items()) == before
    h2, _ = net.state.apply_block(block)
    assert h1 == h2 != net.state.validator_set().hash


def _supply(s: State) -> int:
    total = 0
    for k, v in s.items():
        if k[:1] == b"a":
            total += v.balance  # type: ignore[attr-defined]
        elif k[:1] == b"v":
            total += v.stake  # type: ignore[attr-defined]
        elif k[:1] == b"u":
            total += sum(e.amount for e in v.entries)  # type: ignore[attr-defined]
    return total


op = st.tuples(
    st.sampled_from(["transfer", "stake", "unstake", "update"]),
    st.integers(0, 3),  # actor (trainer key index)
    st.integers(0, 3),  # counterparty
    st.integers(1, 5000),  # amount
)


@pytest.mark.slow
@settings(max_examples=60)
@given(st.lists(st.lists(op, max_size=6), min_size=1, max_size=8))
def test_random_blocks_conserve_supply_and_replay_identically(
    blocks: list[list[tuple[str, int, int, int]]],
) -> None:
    """Tokens are only minted as rewards; the incremental app hash equals a from-scratch
    one; an independent replay of the same blocks reaches the same hash."""
    g, vk, tk = make_genesis(3, n_trainers=4)
    net = Devnet(State.from_genesis(g), vk)
    s = net.state
    supply = _supply(s)
    applied = []
    for ops in blocks:
        nonces = {k.address: s.account(k.address).nonce for k in tk}
        cands = []
        for kind, who, other, amount in ops:
            k = tk[who]
            body: Body
            if kind == "transfer":
                body = Transfer(tk[other].address, amount)
            elif kind == "stake":
                body = Stake(amount)
            elif kind == "unstake":
                body = Unstake(amount)
            else:
                m = s.meta
                body = ModelUpdate(m.fl_round, m.global_model, 1, sha256(bytes([who])), 10)
            cands.append(tx(g, k, nonces[k.address], body))
            nonces[k.address] += 1
        chosen = s.select_valid(cands)
        n_updates = sum(isinstance(t.body, ModelUpdate) for t in chosen)
        if 0 < n_updates < g.fl.min_updates:
            chosen = [t for t in chosen if not isinstance(t.body, ModelUpdate)]
            chosen = s.select_valid(chosen)  # later nonces of those senders drop out
            n_updates = sum(isinstance(t.body, ModelUpdate) for t in chosen)
        applied.append(net.step(chosen))
        supply += g.rewards.block_reward + n_updates * g.rewards.update_reward
        assert _supply(s) == supply
    final = s.app_hash()
    assert s.recompute_app_hash() == final
    replay = State.from_genesis(g)
    for b in applied:
        replay.apply_block(b)
    assert replay.app_hash() == final


def test_evidence_is_checked_against_the_validator_set_at_the_offence_height() -> None:
    g, net, vk, tk = setup()
    newcomer = tk[0]
    net.step([tx(g, newcomer, 0, Stake(STAKE))])  # bonded at height 1
    s = net.state
    joins = 1 + g.staking.valset_delay
    assert newcomer.address not in s.validator_set(1).by_address()
    while s.height < joins + 1:
        net.step()
    assert newcomer.address in s.validator_set(joins).by_address()
    # Conflicting votes it signed before it was a validator are no offence: it had no
    # power to equivocate with (a bonded node's engine may sign while not a member).
    with pytest.raises(EvidenceError, match="not a validator at height 1"):
        s.check_tx(tx(g, tk[1], 0, _double_sign(g, newcomer, 1)))
    # Once it is one, they are.
    s.check_tx(tx(g, tk[1], 0, _double_sign(g, newcomer, joins)))
    # And a validator that has left is still accountable for heights it was one.
    leaver = vk[3]
    net.step([tx(g, leaver, 0, Unstake(STAKE))])
    while leaver.address in s.validator_set(s.height + 1).by_address():
        net.step()
    s.check_tx(tx(g, tk[1], 0, _double_sign(g, leaver, 2)))


def _double_propose(g: Genesis, key: PrivateKey, height: int) -> ProposalEvidence:
    signer = UnguardedSigner(key)
    a = signer.sign_proposal(g.chain_id, height, 0, 0, sha256(b"a"))
    b = signer.sign_proposal(g.chain_id, height, 0, 0, sha256(b"b"))
    return ProposalEvidence(DuplicateProposalEvidence.of(a, b))


def test_proposal_equivocation_is_slashed_once() -> None:
    g, net, vk, tk = setup()
    net.step()
    net.step()
    offender = vk[1]
    ev = _double_propose(g, offender, 1)
    net.step([tx(g, tk[0], 0, ev)])
    bond = net.state.bond(offender.address)
    assert bond is not None and bond.jailed and bond.stake < STAKE
    with pytest.raises(EvidenceError, match="already"):
        net.state.check_tx(tx(g, tk[1], 0, ev))
    with pytest.raises(EvidenceError, match="not a validator"):
        net.state.check_tx(tx(g, tk[1], 0, _double_propose(g, tk[2], 1)))
    assert Tx.from_bytes(tx(g, tk[1], 0, ev).encode()).body == ev
