"""NodeApp's proposal checks against a relay that pairs a genuine block id with other
bytes: such bytes are no verdict on the block, so the genuine copy is still judged."""

from __future__ import annotations

from pathlib import Path

from consensus.app import Block as AppBlock
from consensus.app import PrepareProposalRequest
from node.ledger.block import Block
from tests.node.daemon.chainkit import Chain


def test_bytes_that_are_not_the_block_do_not_poison_its_verdict(tmp_path: Path) -> None:
    chain = Chain.build(tmp_path)
    proposer, validator = chain.nodes[0].app, chain.nodes[1].app
    req = PrepareProposalRequest(1, 0, chain.keys[0].address, None, 1_700_000_001_000)
    good = proposer.prepare_proposal(req)
    real = Block.decode(good.data)
    # The same header with other transactions: decodes, same header hash, not the block.
    tampered = real.replace(txs=()).encode() if real.txs else b"\x00junk"
    for junk in (b"junk", tampered, good.data + b"\x00"):
        assert validator.block_id(junk) != good.hash
        assert validator.process_proposal(1, AppBlock(good.hash, junk)) is False
    assert validator.block_id(good.data) == good.hash
    assert validator.process_proposal(1, AppBlock(good.hash, good.data)) is True
    assert validator.counters.get("proposal_bytes_mismatch") == 3
