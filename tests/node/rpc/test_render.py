"""JSON renderings of every transaction type and of blocks are plain, hex-encoded JSON."""

from __future__ import annotations

import json

from consensus.types import DuplicateVoteEvidence
from node.ledger.state import State
from node.ledger.tx import Body, Evidence, ModelUpdate, Stake, Transfer, Unstake, sign_tx
from node.rpc.render import render_block, render_tx
from tests.kits.genesis import make_genesis
from tests.kits.ledger import Devnet, sign_vote


def test_every_body_type_renders_to_json() -> None:
    g, (a, b), _ = make_genesis(2)
    cid = g.chain_id
    va = sign_vote(a, cid, 5, b"\x01" * 32)
    vb = sign_vote(a, cid, 5, b"\x02" * 32)
    bodies: list[Body] = [
        Transfer(b.address, 3),
        Stake(4),
        Unstake(5),
        ModelUpdate(1, b"\x03" * 32, 60, b"\x04" * 32, 100),
        Evidence(DuplicateVoteEvidence(va, vb)),
    ]
    rendered = [render_tx(sign_tx(a, cid, i, 10_000, body)) for i, body in enumerate(bodies)]
    json.dumps(rendered)  # plain JSON all the way down
    assert [r["type"] for r in rendered] == [
        "transfer",
        "stake",
        "unstake",
        "model_update",
        "evidence",
    ]
    assert rendered[0]["body"] == {"to": b.address.hex(), "amount": 3}
    assert rendered[3]["body"]["payload_hash"] == "04" * 32
    assert rendered[4]["body"] == {"validator": a.address.hex(), "height": 5}
    assert all(r["sender"] == a.address.hex() and r["fee"] == 10_000 for r in rendered)


def test_block_rendering_matches_the_block() -> None:
    g, keys, _ = make_genesis(2)
    dev = Devnet(State.from_genesis(g), keys)
    dev.step([sign_tx(keys[0], g.chain_id, 0, g.fees, Transfer(keys[1].address, 9))])
    block = dev.step()
    out = render_block(block)
    json.dumps(out)
    assert out["height"] == 2 and out["num_txs"] == 0
    assert out["header"]["hash"] == block.hash.hex()
    assert out["header"]["app_hash"] == block.header.app_hash.hex()
    assert out["last_commit"]["block_hash"] == block.header.prev_hash.hex()
