"""Property tests for every ledger and consensus decoder: round-trips and malformed input.

Each decoder gets (a) a round-trip property over generated valid objects and (b) a
mutation property: flipping, inserting, deleting or appending bytes of a valid encoding
must either raise CodecError or yield a *different valid canonical* object (whose encoding
is exactly the mutated bytes). No other exception may escape a decoder. The example
counts below add up to more than 10,000 generated cases per CI run (round-trips
3,200, mutations 5,600, wrong field values 1,500, state records 400, genesis JSON 150).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.options import Seconds
from consensus.registry import engine_names, engine_spec
from consensus.types import (
    Commit,
    CommitSig,
    DuplicateProposalEvidence,
    DuplicateVoteEvidence,
    Proposal,
    Validator,
    ValidatorSet,
    Vote,
)
from fl.fixedpoint import MAX_WEIGHT
from fl.rules.registry import rule_names
from node.core.codec import CodecError, Record
from node.core.crypto import PrivateKey
from node.ledger.block import Block, Header, commit_hash, txs_root
from node.ledger.genesis import (
    FeeParams,
    FLParams,
    Genesis,
    GenesisAccount,
    GenesisError,
    GenesisValidator,
    RewardParams,
    StakingParams,
    params_of,
)
from node.ledger.state import Account, Bond, ChainMeta, Trainer, UnbondingEntry, UnbondingQueue
from node.ledger.tx import (
    Evidence,
    ModelUpdate,
    ProposalEvidence,
    Stake,
    Transfer,
    Tx,
    Unstake,
)

u64 = st.integers(0, (1 << 64) - 1)
u32 = st.integers(0, (1 << 32) - 1)
pos64 = st.integers(1, (1 << 64) - 1)
b20 = st.binary(min_size=20, max_size=20)
b32 = st.binary(min_size=32, max_size=32)
b64 = st.binary(min_size=64, max_size=64)
chain_ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=64)
names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=20)

shared_aggregation_params = st.fixed_dictionaries(
    {},
    optional={
        "weight_cap": st.integers(1, MAX_WEIGHT),
        "norm_bound": st.sampled_from(["median", "0.5", "1e-3"]),
    },
)

votes_fields = st.tuples(chain_ids, u64, u32, st.sampled_from([1, 2]), b20)


@st.composite
def votes(draw: st.DrawFn) -> Vote:
    c, h, r, t, v = draw(votes_fields)
    return Vote(c, h, r, t, draw(st.one_of(st.just(b""), b32)), v, draw(b64))


@st.composite
def evidences(draw: st.DrawFn) -> DuplicateVoteEvidence:
    c, h, r, t, v = draw(votes_fields)
    ha, hb = draw(st.lists(b32, min_size=2, max_size=2, unique=True))
    a = Vote(c, h, r, t, ha, v, draw(b64))
    b = Vote(c, h, r, t, hb, v, draw(b64))
    return DuplicateVoteEvidence.of(a, b)


@st.composite
def proposal_evidences(draw: st.DrawFn) -> DuplicateProposalEvidence:
    c, h, r, _, v = draw(votes_fields)
    ha, hb = draw(st.lists(b32, min_size=2, max_size=2, unique=True))
    pol = draw(u32)
    a = Proposal(c, h, r, pol, ha, v, draw(b64))
    b = Proposal(c, h, r, pol, hb, v, draw(b64))
    return DuplicateProposalEvidence.of(a, b)


bodies = st.one_of(
    st.builds(Transfer, b20, u64),
    st.builds(Stake, pos64),
    st.builds(Unstake, pos64),
    st.builds(ModelUpdate, u64, b32, st.integers(1, (1 << 32) - 1), b32, st.integers(1, 1 << 30)),
    st.builds(Evidence, evidences()),
    st.builds(ProposalEvidence, proposal_evidences()),
)
txs = st.builds(Tx, chain_ids, b32, u64, u64, bodies, b64)
commit_sigs = st.builds(CommitSig, b20, b64)


@st.composite
def blocks(draw: st.DrawFn) -> Block:
    height = draw(st.integers(1, 1 << 40))
    prev = draw(b32)
    body = tuple(draw(st.lists(txs, max_size=4)))
    commit = None
    if height > 1:
        sigs = tuple(draw(st.lists(commit_sigs, max_size=4)))
        commit = Commit(height - 1, draw(u32), prev, sigs)
    header = Header(
        chain_id=draw(chain_ids),
        height=height,
        time_ms=draw(u64),
        prev_hash=prev,
        proposer=draw(b20),
        txs_root=txs_root(body),
        last_commit_hash=commit_hash(commit),
        app_hash=draw(b32),
        validators_hash=draw(b32),
        fl_round=draw(u64),
        global_model_hash=draw(b32),
    )
    return Block(header, body, commit)


@st.composite
def engine_params(draw: st.DrawFn) -> tuple[str, dict[str, int | str]]:
    """A registered engine and some of its options, each with a value it accepts."""
    name = draw(st.sampled_from(engine_names()))
    options = list(engine_spec(name).options)
    assert all(isinstance(o, Seconds) for o in options), "add a strategy for the new kind"
    chosen = draw(st.lists(st.sampled_from(options), unique_by=lambda o: o.name, max_size=4))
    seconds = st.integers(1, 1 << 20) | st.from_regex(
        r"[1-9][0-9]{0,4}\.[0-9]{1,3}", fullmatch=True
    )
    return name, {o.name: draw(seconds) for o in chosen}


@st.composite
def genesis_docs(draw: st.DrawFn) -> Genesis:
    accounts = draw(st.lists(st.builds(GenesisAccount, b20, st.integers(0, 1 << 40)), max_size=5))
    uniq = {a.address: a for a in accounts}
    min_val = draw(st.integers(0, 1000))
    vals = draw(
        st.lists(
            st.builds(GenesisValidator, b32, st.integers(max(min_val, 1), 1 << 40)),
            min_size=1,
            max_size=4,
            unique_by=lambda v: v.public_key,
        )
    )
    engine, params = draw(engine_params())
    return Genesis(
        chain_id=draw(chain_ids),
        genesis_time_ms=draw(u64),
        accounts=tuple(uniq.values()),
        validators=tuple(vals),
        trainers=tuple(draw(st.lists(b20, max_size=4, unique=True))),
        consensus_engine=engine,
        consensus_params=params_of(params),
        fees=FeeParams(draw(u64), draw(u64)),
        staking=StakingParams(
            draw(st.integers(1, 1 << 32 - 1)),
            min_val,
            draw(u64),
            draw(st.integers(0, 10**6)),
            draw(st.integers(1, 255)),
        ),
        rewards=RewardParams(draw(u64), draw(u64)),
        fl=FLParams(
            model=draw(names),
            init_seed=draw(u64),
            initial_model_hash=draw(b32),
            # Genesis validation checks the rule and its parameters (fl.rules).
            aggregation=draw(st.sampled_from(rule_names())),
            aggregation_params=params_of(draw(shared_aggregation_params)),
            min_updates=draw(st.integers(1, 100)),
            round_timeout_blocks=draw(u32),
            partition=draw(st.text(max_size=20)),
            max_update_bytes=draw(st.integers(1, 1 << 31)),
        ),
    )


validator_sets = st.lists(st.builds(Validator, b32, pos64), max_size=6).map(
    lambda vs: ValidatorSet.of(list({v.address: v for v in vs}.values()))
)
state_records = st.one_of(
    st.builds(Account, u64, u64),
    st.builds(Bond, b32, u64, st.booleans()),
    st.builds(Trainer, st.booleans(), u64, u64),
    st.builds(
        UnbondingQueue, st.lists(st.builds(UnbondingEntry, b20, u64, u64), max_size=3).map(tuple)
    ),
    st.builds(ChainMeta, u64, u64, b32, u64, b32, u64),
)

ALL: list[tuple[type[Record], Any, int]] = [
    (Tx, txs, 1500),
    (Block, blocks(), 300),
    (Genesis, genesis_docs(), 300),
    (Vote, votes(), 300),
    (Proposal, st.builds(Proposal, chain_ids, u64, u32, u32, b32, b20, b64), 200),
    (Commit, st.builds(Commit, u64, u32, b32, st.lists(commit_sigs, max_size=5).map(tuple)), 200),
    (ValidatorSet, validator_sets, 200),
    (DuplicateVoteEvidence, evidences(), 200),
]


def _check_roundtrip(cls: type[Record], obj: Record) -> None:
    data = obj.encode()
    back = cls.decode(data)
    assert back == obj
    assert back.encode() == data
    if isinstance(obj, Tx):
        # The fast path slices the signed bytes out of the wire bytes; it must agree.
        fast = Tx.from_bytes(data)
        assert fast.__dict__["_sign_bytes"] == obj.sign_bytes() == fast.sign_bytes()
        assert fast.hash == obj.hash and fast.size == len(data)


@pytest.mark.slow
@pytest.mark.parametrize(("cls", "strategy", "n"), ALL, ids=[c.__name__ for c, _, _ in ALL])
def test_roundtrip(cls: type[Record], strategy: Any, n: int) -> None:
    @settings(max_examples=n)
    @given(strategy)
    def run(obj: Record) -> None:
        _check_roundtrip(cls, obj)

    run()


@settings(max_examples=400)
@given(state_records)
def test_state_records_roundtrip(obj: Record) -> None:
    _check_roundtrip(type(obj), obj)


def _mutate(data: bytes, draw: st.DrawFn) -> bytes:
    op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "append", "replace"]))
    i = draw(st.integers(0, max(0, len(data) - 1)))
    if op == "flip":
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
    if op == "insert":
        return data[:i] + draw(st.binary(min_size=1, max_size=4)) + data[i:]
    if op == "delete":
        return data[:i] + data[i + draw(st.integers(1, 4)) :]
    if op == "truncate":
        return data[:i]
    if op == "append":
        return data + draw(st.binary(min_size=1, max_size=4))
    return data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i + 8 :]


MUTATION_COUNTS = {
    Tx: 2500,
    Block: 600,
    Genesis: 500,
    Vote: 600,
    Proposal: 300,
    Commit: 400,
    ValidatorSet: 300,
    DuplicateVoteEvidence: 400,
}


@pytest.mark.slow
@pytest.mark.parametrize(("cls", "strategy", "n"), ALL, ids=[c.__name__ for c, _, _ in ALL])
def test_mutations_are_rejected_or_canonical(cls: type[Record], strategy: Any, n: int) -> None:
    @settings(max_examples=MUTATION_COUNTS[cls])
    @given(strategy, st.data())
    def run(obj: Record, data: st.DataObject) -> None:
        raw = obj.encode()
        bad = _mutate(raw, data.draw)
        try:
            got = cls.decode(bad)
        except CodecError:
            return
        # Decoding succeeded: it must be a valid canonical encoding of what it returned.
        assert got.encode() == bad

    run()


# Structure-aware malformed input: a valid map with one field replaced by a wrong-typed value.
wrong_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 63), (1 << 64) - 1),
    st.binary(max_size=70),
    st.text(max_size=10),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
    st.floats(allow_nan=False),
)


@settings(max_examples=1500)
@given(txs, st.data())
def test_wrong_field_values_name_the_field(tx: Tx, data: st.DataObject) -> None:
    obj = tx._to_obj()
    field = data.draw(st.sampled_from(sorted(obj)))
    value = data.draw(wrong_values)
    obj[field] = value
    raw = msgpack.packb(obj, use_bin_type=True)
    try:
        got = Tx.decode(raw)
    except CodecError as e:
        if not e.path.startswith(field):
            # only a whole-message failure may leave the field unnamed
            assert re.search("non-canonical|exceeds", str(e)), str(e)
        return
    assert got.encode() == raw


def test_explicit_malformed_tx_inputs() -> None:
    ok = Tx("c", b"\x01" * 32, 0, 5, Transfer(b"\x02" * 20, 1), b"\x03" * 64)
    raw = ok.encode()
    obj = ok._to_obj()
    cases = {
        "trailing": raw + b"\x00",
        "unknown field": msgpack.packb({**obj, "extra": 1}, use_bin_type=True),
        "missing field": msgpack.packb(
            {k: v for k, v in obj.items() if k != "fee"}, use_bin_type=True
        ),
        "unknown kind": msgpack.packb({**obj, "body": ["mint", {"amount": 1}]}, use_bin_type=True),
        "zero stake": msgpack.packb({**obj, "body": ["stake", {"amount": 0}]}, use_bin_type=True),
        "reordered": msgpack.packb(dict(reversed(list(obj.items()))), use_bin_type=True),
        "str for bin": msgpack.packb({**obj, "sender": "x" * 32}, use_bin_type=True),
        "too large": b"\x00" * (Tx.MAX_SIZE + 1),
        "bad chain id": msgpack.packb({**obj, "chain_id": "UPPER"}, use_bin_type=True),
    }
    for name, data in cases.items():
        with pytest.raises(CodecError):
            Tx.decode(data)
        assert name


def test_block_structure_rules() -> None:
    prev = b"\x01" * 32
    commit = Commit(1, 0, prev, ())
    h = Header(
        chain_id="c",
        height=2,
        time_ms=0,
        prev_hash=prev,
        proposer=b"\x02" * 20,
        txs_root=txs_root(()),
        last_commit_hash=commit_hash(commit),
        app_hash=bytes(32),
        validators_hash=bytes(32),
        fl_round=0,
        global_model_hash=bytes(32),
    )
    Block.decode(Block(h, (), commit).encode())
    with pytest.raises(CodecError, match="last_commit is required"):
        Block.decode(Block(h, (), None).encode())
    wrong_prev = Commit(1, 0, b"\x09" * 32, ())
    with pytest.raises(CodecError, match="previous block"):
        Block.decode(Block(h, (), wrong_prev).encode())
    with pytest.raises(CodecError, match="previous height"):
        Block.decode(Block(h, (), commit.replace(height=5)).encode())
    other_sigs = commit.replace(round=3)  # same block, another signature set
    with pytest.raises(CodecError, match="last_commit_hash"):
        Block.decode(Block(h, (), other_sigs).encode())
    bad_root = Block(h.replace(txs_root=b"\x05" * 32), (), commit)
    with pytest.raises(CodecError, match="txs_root"):
        Block.decode(bad_root.encode())
    with pytest.raises(CodecError, match="start at 1"):
        Header.decode(h.replace(height=0).encode())


@settings(max_examples=150)
@given(genesis_docs())
def test_genesis_json_roundtrip(g: Genesis) -> None:
    assert Genesis.from_json(g.to_json()) == g


def test_genesis_json_errors_name_the_field() -> None:
    from tests.kits.genesis import make_genesis

    g, _, _ = make_genesis(2)
    doc = g.to_json()
    bad: list[tuple[dict[str, Any], str]] = [
        ({**doc, "chain_id": "Bad Chain"}, "chain_id"),
        ({**doc, "surprise": 1}, "surprise"),
        ({**doc, "validators": []}, "validators"),
        ({**doc, "fees": {**doc["fees"], "base": -1}}, "fees.base"),
        ({**doc, "fl": {**doc["fl"], "initial_model_hash": "zz"}}, "fl.initial_model_hash"),
        ({**doc, "staking": {**doc["staking"], "slash_fraction_ppm": 2_000_000}}, "slash_fraction"),
        (
            {**doc, "staking": {**doc["staking"], "min_validator_stake": 10**9}},
            "validators[0].stake",
        ),
        ({**doc, "consensus_params": {"x": 1.5}}, "parameter"),
        ({**doc, "consensus_engine": "pow"}, "consensus_engine: unknown consensus engine"),
        ({**doc, "consensus_params": {"timeout_propse": 3}}, "consensus_params.timeout_propse"),
        ({**doc, "consensus_params": {"timeout_propose": -1}}, "consensus_params.timeout_propose"),
        (
            {**doc, "consensus_params": {"timeout_gossip": "soon"}},
            "consensus_params.timeout_gossip",
        ),
        ({**doc, "trainers": [doc["accounts"][0]["address"]] * 2}, "trainers"),
    ]
    for d, where in bad:
        with pytest.raises(GenesisError, match=where.replace("[", r"\[").replace("]", r"\]")):
            Genesis.from_json(d)


def test_genesis_file_roundtrip_and_errors(tmp_path: Path) -> None:
    from node.ledger.genesis import load_genesis
    from tests.kits.genesis import make_genesis

    g, vk, _ = make_genesis(3, engine_params={"timeout_propose": 3, "timeout_prevote": "0.5"})
    path = tmp_path / "genesis.json"
    g.save(path)
    back = load_genesis(path)
    assert back == g and back.hash == g.hash
    assert back.consensus_params_dict == {"timeout_prevote": "0.5", "timeout_propose": 3}
    # The same deterministic keys every time (testnets and simulators rely on it).
    assert make_genesis(3)[1][0] == vk[0] == PrivateKey.from_secret("validator-0")
    with pytest.raises(GenesisError, match="no genesis"):
        load_genesis(tmp_path / "absent.json")
    path.write_text("{not json")
    with pytest.raises(GenesisError, match="cannot read"):
        load_genesis(path)
    path.write_text("[]")
    with pytest.raises(GenesisError, match="expected an object"):
        load_genesis(path)
