"""NodeApp behind real tendermint engines: blocks commit, an FL round closes and every
validator derives the same global model; bad proposals are rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.app import Block as AppBlock
from consensus.app import PrepareProposalRequest
from fl.aggregate import aggregate
from fl.models import init_params, model_hash
from fl.update import decode_update
from node.app.application import NodeApp, aggregation_config
from node.ledger.genesis import params_of
from node.ledger.tx import Transfer, Tx, sign_tx
from node.store.models import ZERO_HASH
from tests.node.daemon.chainkit import Chain, initial_fl_hash, make_update


def test_blocks_commit_and_agree(tmp_path: Path) -> None:
    chain = Chain.build(tmp_path)
    g = chain.genesis
    a, b = chain.keys[0], chain.keys[1]
    chain.add_tx(sign_tx(a, g.chain_id, 0, g.fees, Transfer(b.address, 5)))
    chain.run_until(lambda: min(chain.heights()) >= 3)
    for h in range(1, 4):
        hashes = {n.ledger.store.block(h).hash for n in chain.nodes}  # type: ignore[union-attr]
        assert len(hashes) == 1
    assert all(len(n.app.mempool) == 0 for n in chain.nodes)
    assert chain.nodes[2].ledger.account(b.address).balance > 10**12
    # Each committed block's certificate is kept for block sync.
    commit = chain.nodes[0].app.commits.commit(3)  # type: ignore[union-attr]
    assert commit is not None and commit.block_hash == chain.nodes[0].ledger.store.block(3).hash  # type: ignore[union-attr]


def test_fl_round_closes_with_the_same_model_everywhere(tmp_path: Path) -> None:
    chain = Chain.build(tmp_path, min_updates=3)
    g = chain.genesis
    base = initial_fl_hash(g)
    updates = [
        make_update(k, g, round=0, base_ledger_hash=ZERO_HASH, base_fl_hash=base, seed=i)
        for i, k in enumerate(chain.keys[:3])
    ]
    for tx, payload in updates:
        chain.add_tx(tx, payload)
    chain.run_until(lambda: all(n.ledger.state.meta.fl_round == 1 for n in chain.nodes))
    expected = aggregate(
        init_params("cnn", 0),
        [(tx.hash, decode_update(p, "cnn")) for tx, p in updates],
        aggregation_config(g.fl),
        arch="cnn",
    )
    for n in chain.nodes:
        meta = n.ledger.state.meta
        assert meta.global_model == expected.model_hash
        params = n.app.models.resolve(meta.global_model)
        assert model_hash(params) == expected.model_hash
        # Included trainers were rewarded (update_reward) on every node.
        assert n.ledger.state.trainer(chain.keys[0].address).contributions == 1  # type: ignore[union-attr]


def _app(chain: Chain, i: int = 1) -> NodeApp:
    return chain.nodes[i].app


def _first_update(chain: Chain, seed: int) -> tuple[Tx, bytes]:
    """A round-0 model update by the first validator, on the genesis model."""
    g = chain.genesis
    return make_update(
        chain.keys[0],
        g,
        round=0,
        base_ledger_hash=ZERO_HASH,
        base_fl_hash=initial_fl_hash(g),
        seed=seed,
    )


def test_process_proposal_rejects_a_wrong_model_hash(tmp_path: Path) -> None:
    chain = Chain.build(tmp_path, min_updates=1)
    tx, payload = _first_update(chain, seed=7)
    proposer = _app(chain, 0)
    proposer.mempool.add(tx, payload)
    req = PrepareProposalRequest(1, 0, chain.keys[0].address, None, 1_700_000_001_000)
    good = proposer.prepare_proposal(req)
    from node.ledger.block import Block

    block = Block.decode(good.data)
    assert block.header.fl_round == 1 and tx in block.txs
    validator = _app(chain, 1)
    # The validator lacks the payload: the driver must fetch it first.
    assert validator.missing_payloads(good.data) == [tx.body.payload_hash]  # type: ignore[union-attr]
    assert validator.process_proposal(1, good) is False
    validator2 = _app(chain, 2)
    validator2.mempool.add(tx, payload)
    assert validator2.process_proposal(1, good) is True
    forged = Block(block.header.replace(global_model_hash=b"\x11" * 32), block.txs, None)
    validator3 = _app(chain, 3)
    validator3.mempool.add(tx, payload)
    assert validator3.process_proposal(1, AppBlock(forged.hash, forged.encode())) is False
    assert validator3.counters.get("model_mismatch") == 1
    # Bytes that do not hash to the claimed id are refused without looking further.
    assert validator3.process_proposal(1, AppBlock(b"\x00" * 32, good.data)) is False
    assert validator3.process_proposal(1, AppBlock(good.hash, b"junk")) is False


def test_round_stays_open_below_min_updates(tmp_path: Path) -> None:
    chain = Chain.build(tmp_path, min_updates=3)
    tx, payload = _first_update(chain, seed=1)
    app = _app(chain, 0)
    app.mempool.add(tx, payload)
    blk = app.prepare_proposal(PrepareProposalRequest(1, 0, chain.keys[0].address, None, 1))
    from node.ledger.block import Block

    assert Block.decode(blk.data).txs == ()


def test_aggregation_params_from_genesis(tmp_path: Path) -> None:
    chain = Chain.build(tmp_path)
    fl = chain.genesis.fl.replace(
        aggregation="trimmed_mean", aggregation_params=params_of({"trim_beta": "0.2"})
    )
    assert aggregation_config(fl).trim_beta == 0.2
    from fl.aggregate import AggregationError

    with pytest.raises(AggregationError, match="unknown aggregation parameter"):
        aggregation_config(fl.replace(aggregation_params=params_of({"bogus": 1})))
    with pytest.raises(AggregationError, match="momentum"):
        aggregation_config(fl.replace(aggregation_params=params_of({"server_momentum": "0.9"})))


def test_undecodable_payload_in_a_proposal_is_rejected_not_fatal(tmp_path: Path) -> None:
    from node.app.updates import BadPayload
    from node.core.codec import sha256
    from node.ledger.tx import ModelUpdate
    from tests.kits.ledger import build_block

    chain = Chain.build(tmp_path, min_updates=1)
    g = chain.genesis
    junk = b"\x01not an update"
    body = ModelUpdate(0, ZERO_HASH, 10, sha256(junk), len(junk))
    tx = sign_tx(chain.keys[0], g.chain_id, 0, g.fees, body)
    validator = _app(chain, 1)
    # The mempool refuses it (node.app.updates), so the junk arrives the way a proposal's
    # payloads do: fetched from a peer by its digest into the blob store.
    with pytest.raises(BadPayload):
        validator.mempool.add(tx, junk)
    validator.models.blobs.put(junk, round=0)
    block = build_block(
        validator.ledger.state,
        [tx],
        chain.keys[0].address,
        last_commit=None,
        global_model_hash=b"\x22" * 32,
    )
    assert validator.process_proposal(1, AppBlock(block.hash, block.encode())) is False
    assert validator.counters["payload_malformed"] == 1


def test_a_store_failure_stops_that_node_and_the_rest_go_on(tmp_path: Path) -> None:
    from node.store.chain import StoreError

    chain = Chain.build(tmp_path)
    failures: list[BaseException] = []
    broken = chain.nodes[0]
    broken.runner.on_failure = failures.append

    def fail(*a: object, **kw: object) -> None:
        raise StoreError("disk full")

    broken.app.ledger.commit_block = fail  # type: ignore[method-assign,assignment]
    chain.run_until(lambda: min(n.ledger.height for n in chain.nodes[1:]) >= 3)
    assert broken.ledger.height == 0
    assert isinstance(broken.runner.failed, StoreError) and failures == [broken.runner.failed]
