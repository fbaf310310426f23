"""The engine for the next height: fresh at genesis or for a lone validator, resumed from
this node's own checkpoint, and never built from checkpoint bytes that are junk or resume
at another height."""

from __future__ import annotations

from pathlib import Path

from consensus.tendermint.engine import TendermintEngine
from consensus.tendermint.proposer import ProposerSchedule
from consensus.tendermint.valset import HeightVals, TendermintCheckpoint
from consensus.types import Validator, ValidatorSet
from node.core.crypto import PrivateKey
from node.services.engine_factory import EngineFactory
from node.store.commits import CommitStore
from node.store.ledger import Ledger
from tests.kits.genesis import make_genesis
from tests.kits.ledger import Devnet
from tests.node.daemon.chainkit import Chain, SimNode


def _factory(chain: Chain, node: SimNode, tmp_path: Path) -> EngineFactory:
    assert node.app.commits is not None
    return EngineFactory(
        chain.genesis,
        node.ledger,
        node.app.commits,
        node.key,
        tmp_path / "privval.json",
        block_id=node.app.block_id,
    )


def _checkpoint(node: SimNode) -> tuple[int, bytes]:
    engine = node.runner.engine
    assert isinstance(engine, TendermintEngine)
    return engine.height - 1, engine.checkpoint().encode()


def test_at_genesis_the_engine_starts_fresh(tmp_path: Path) -> None:
    chain = Chain.build(tmp_path)
    factory = _factory(chain, chain.nodes[0], tmp_path)
    engine = factory.local()
    assert engine is not None and engine.height == 1
    assert factory.name == "tendermint"


def test_a_checkpoint_resumes_only_at_its_own_height(tmp_path: Path) -> None:
    chain = Chain.build(tmp_path)
    chain.run_until(lambda: min(chain.heights()) >= 3)
    node = chain.nodes[0]
    factory = _factory(chain, node, tmp_path)
    height, data = _checkpoint(node)
    assert height == node.ledger.height
    engine = factory.from_checkpoint(data, height)
    assert engine is not None and engine.height == height + 1
    # Bytes for another height than the ledger's, and junk, are refused, never raised.
    assert factory.from_checkpoint(data, height - 1) is None
    assert factory.from_checkpoint(b"\x93junk", height) is None


def test_a_node_uses_its_own_checkpoint_or_waits_for_a_peer(tmp_path: Path) -> None:
    chain = Chain.build(tmp_path)
    chain.run_until(lambda: min(chain.heights()) >= 3)
    node = chain.nodes[0]
    factory = _factory(chain, node, tmp_path)
    assert node.app.commits is not None
    assert factory.local() is None  # no checkpoint of its own: one of four validators waits
    height, data = _checkpoint(node)
    node.app.commits.put_checkpoint(height - 1, data)  # a stale one (crash before the last)
    assert factory.local() is None
    node.app.commits.put_checkpoint(height, data)
    engine = factory.local()
    assert engine is not None and engine.height == height + 1


def test_a_lone_validator_restarts_without_a_checkpoint(tmp_path: Path) -> None:
    g, keys, _ = make_genesis(1)
    ledger = Ledger.open(tmp_path / "chain.sqlite", g, fsync=False)
    dev = Devnet(ledger.state, keys)
    for _ in range(2):
        block = dev.propose([])
        ledger.commit_block(block)
        dev.last_block = block
    commits = CommitStore(tmp_path / "commits.sqlite")
    try:
        factory = EngineFactory(
            g, ledger, commits, keys[0], tmp_path / "privval.json", block_id=lambda d: None
        )
        engine = factory.local()  # nothing to learn from peers: a fresh engine at height 3
        assert engine is not None and engine.height == 3
    finally:
        commits.close()
        ledger.close()


def test_a_peer_checkpoint_never_sets_the_validators(tmp_path: Path) -> None:
    chain = Chain.build(tmp_path)
    chain.run_until(lambda: min(chain.heights()) >= 3)
    node = chain.nodes[0]
    factory = _factory(chain, node, tmp_path)
    height, data = _checkpoint(node)
    engine = factory.from_checkpoint(data, height)
    assert isinstance(engine, TendermintEngine)
    assert engine.vals.vset == node.ledger.validator_set(height + 1)
    # A checkpoint for the right height whose sets are three outsiders' keys is refused.
    outsiders = [PrivateKey.from_secret(f"outsider-{i}") for i in range(3)]
    fake = ValidatorSet.of([Validator(k.public_key, 1) for k in outsiders])
    sched = ProposerSchedule.new([(v.address, v.power) for v in fake.validators])
    rec = HeightVals(fake, sched).record()
    forged = TendermintCheckpoint.decode(data).replace(current=rec, next=rec).encode()
    assert factory.from_checkpoint(forged, height) is None
