"""A running node that fell behind further than the engine's own catch-up reaches: it is
stuck for good without block sync; probing proves the lag, block sync plus a peer's
checkpoint bring it back into consensus; lying peers cannot make it pause or do unbounded
work (``node.services.block_sync``: BlockSync.probe, LagDetector)."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.engine import Engine, MessageReceived, Start
from consensus.registry import EngineConfig, create_engine
from consensus.tendermint.engine import KEEP_DECISIONS, TendermintEngine
from consensus.types import Commit
from node.ledger.tx import Transfer, sign_tx
from node.p2p.host import Host
from node.p2p.peer_id import IdentityKey, PeerID
from node.p2p.reqresp import RequestResponse
from node.services.block_sync import (
    BLOCKS_PROTOCOL,
    CHECKPOINT_PROTOCOL,
    PROBE_PROTOCOL,
    BadSyncPeer,
    BlocksResponse,
    BlockSync,
    CatchUpPolicy,
    CertifiedHeader,
    CheckpointResponse,
    LagDetector,
    PeerCheckpoint,
    Probe,
    ProbeResponse,
    SyncedBlock,
)
from node.services.consensus_driver import EngineRunner
from node.services.engine_factory import EngineFactory
from tests.node.daemon.chainkit import Chain, SimNode, connect

PEER = IdentityKey.from_seed(b"\x05" * 32).peer_id

# --------------------------------------------------------------------------- LagDetector


def _probe(base: int, proven: int, tip: int) -> Probe:
    return Probe(PEER, base, tip, proven)


def test_a_stalled_node_gets_patience_then_a_sync() -> None:
    d = LagDetector(CatchUpPolicy(patience=3.0, far_lag=8))
    assert not d.observe(10, _probe(10, 10, 10), 0.0)  # level with the peer
    assert not d.observe(10, _probe(10, 11, 11), 1.0)  # a moment behind: normal
    assert not d.observe(10, _probe(10, 12, 13), 2.0)
    assert not d.observe(10, _probe(10, 11, 11), 3.9)
    assert d.observe(10, _probe(10, 11, 11), 4.0)  # no progress for the whole patience


def test_progress_restarts_the_patience_a_level_peer_does_not() -> None:
    d = LagDetector(CatchUpPolicy(patience=3.0, far_lag=8))
    assert not d.observe(10, _probe(10, 12, 12), 0.0)
    assert not d.observe(11, _probe(11, 13, 13), 2.0)  # the engine is catching up
    assert not d.observe(11, _probe(11, 11, 11), 4.0)  # a peer as far behind as we are
    assert not d.observe(11, _probe(11, 13, 13), 4.9)
    assert not d.observe(11, _probe(11, 11, 11), 5.0)
    assert d.observe(11, _probe(11, 12, 12), 5.1)  # still stuck at 11 since 2.0


def test_far_behind_syncs_at_once_with_two_certified_blocks() -> None:
    d = LagDetector(CatchUpPolicy(patience=3.0, far_lag=8))
    assert not d.observe(10, _probe(10, 11, 500), 0.0)  # one block may be a moment's lag
    assert d.observe(10, _probe(10, 12, 500), 0.1)


def test_a_claimed_height_without_certificates_changes_nothing() -> None:
    d = LagDetector(CatchUpPolicy(patience=3.0, far_lag=8))
    for t in range(100):
        assert not d.observe(10, _probe(10, 10, 2**63), float(t))
    assert d.behind_since is None


def test_syncs_that_apply_nothing_back_off() -> None:
    d = LagDetector(CatchUpPolicy(patience=0.0, far_lag=8, backoff=2.0, max_backoff=5))
    far = _probe(10, 12, 100)
    assert d.observe(10, far, 0.0)
    d.synced(0, 0.0)
    assert not d.observe(10, far, 1.9)
    assert d.observe(10, far, 2.0)
    d.synced(0, 2.0)
    assert not d.observe(10, far, 5.9)  # doubled
    assert d.observe(10, far, 6.0)
    d.synced(0, 6.0)
    assert not d.observe(10, far, 10.9)  # capped at max_backoff
    assert d.observe(10, far, 11.0)
    d.synced(3, 11.0)  # progress: no more waiting
    assert d.observe(13, _probe(13, 15, 100), 11.0)


@given(
    height=st.integers(0, 10**6),
    ahead=st.integers(-5, 0),
    tip=st.integers(0, 2**64 - 1),
    times=st.lists(st.floats(0, 1e6), min_size=1, max_size=20),
)
def test_never_syncs_without_proof(height: int, ahead: int, tip: int, times: list[float]) -> None:
    d = LagDetector()
    for t in sorted(times):
        assert not d.observe(height, _probe(height, max(0, height + ahead), tip), t)


@given(
    height=st.integers(0, 10**6),
    tip=st.integers(0, 2**64 - 1),
    times=st.lists(st.floats(0, 3.99), min_size=1, max_size=20),
)
def test_one_certified_block_never_syncs_before_the_patience(
    height: int, tip: int, times: list[float]
) -> None:
    """Being one block behind is every node's normal state for a moment each height: a
    liar's huge claim on top of it must not make the node restart its engine."""
    d = LagDetector(CatchUpPolicy(patience=4.0))
    for t in sorted(times):
        assert not d.observe(height, _probe(height, height + 1, tip), t)


# --------------------------------------------------------------------------- chain + hosts


def _run(
    chain: Chain, pred: Callable[[], bool], down: int | None, max_steps: int = 100_000
) -> None:
    """chainkit's loop, with every message to or from node ``down`` lost."""
    for _ in range(max_steps):
        if pred():
            return
        if chain._inbox:
            dst, src, data = chain._inbox.pop(0)
            if down is not None and down in (dst, int(src)):
                continue
            chain.nodes[dst].runner.feed(MessageReceived(src, data))
        elif chain._timers:
            t, _, i, ev = heapq.heappop(chain._timers)
            chain.now = max(chain.now, t)
            chain.nodes[i].runner.feed(ev)
        else:
            raise AssertionError("chain stalled: no messages and no timers")
    raise AssertionError("condition not reached")


def _engine(node: SimNode) -> TendermintEngine:
    engine = node.runner.engine
    assert isinstance(engine, TendermintEngine)
    return engine


def _restart(chain: Chain, i: int, recovery: bytes) -> None:
    """Replace node ``i``'s engine by one resumed from ``recovery`` (what the daemon does
    after a block sync), keeping its signer."""
    node = chain.nodes[i]
    old = _engine(node)
    engine = create_engine(
        chain.genesis.consensus_engine,
        EngineConfig(
            chain_id=chain.genesis.chain_id,
            signer=old.signer,
            validators=node.ledger.validator_set(node.ledger.height + 1),
            next_validators=node.ledger.validator_set(node.ledger.height + 2),
            initial_height=node.ledger.height + 1,
            recovery=recovery,
            options={"timeout_commit": 0.0},
            block_id=node.app.block_id,
        ),
    )
    assert engine.height == node.ledger.height + 1
    node.runner = EngineRunner(
        engine,
        node.app,
        broadcast=lambda d: chain._bcast(i, d),
        send=lambda p, d: chain._inbox.append((int(p), str(i), d)),
        schedule=lambda dt, ev: heapq.heappush(
            chain._timers, (chain.now + dt, next(chain._seq), i, ev)
        ),
        clock_ms=lambda: 1_700_000_000_000 + int(chain.now * 1000),
    )
    node.runner.feed(Start())


def _block_sync(
    host: Host, node: SimNode, checkpoint: Callable[[], tuple[int, bytes] | None] = lambda: None
) -> BlockSync:
    """A BlockSync serving and applying ``node``'s chain over ``host``."""
    assert node.app.commits is not None
    return BlockSync(
        host, node.ledger, node.app.commits, node.app.apply_committed, checkpoint=checkpoint
    )


async def test_node_far_behind_is_stuck_then_syncs_and_rejoins(
    tmp_path: Path, hosts: list[Host]
) -> None:
    chain = Chain.build(tmp_path)
    g, a, b = chain.genesis, chain.keys[0], chain.keys[1]
    chain.add_tx(sign_tx(a, g.chain_id, 0, g.fees, Transfer(b.address, 7)))
    _run(chain, lambda: min(chain.heights()) >= 2, None)
    lagger, src = chain.nodes[3], chain.nodes[0]
    stuck_at = lagger.ledger.height
    # Partitioned while the other three (3/4 of the power, a quorum) decide more heights
    # than any peer keeps decisions for.
    _run(chain, lambda: src.ledger.height > stuck_at + KEEP_DECISIONS + 4, 3)
    assert lagger.ledger.height == stuck_at
    # Healed: the engines' own catch-up cannot help any more, the node stays behind.
    ahead = src.ledger.height
    _run(chain, lambda: min(chain.heights()[:3]) >= ahead + 3, None)
    assert lagger.ledger.height == stuck_at

    src_eng = _engine(src)
    assert src.app.commits is not None and lagger.app.commits is not None
    _block_sync(hosts[0], src, lambda: (src_eng.height - 1, src_eng.checkpoint().encode()))
    sync = _block_sync(hosts[1], lagger)
    await connect(hosts[1], hosts[0])
    # Detection: one probe proves two heights past ours with certificates, applying nothing.
    probe = await sync.probe(hosts[0].peer_id)
    assert (probe.base, probe.proven, probe.tip) == (stuck_at, stuck_at + 2, src.ledger.height)
    assert lagger.ledger.height == stuck_at
    assert LagDetector().observe(lagger.ledger.height, probe, 0.0)
    # Recovery: sync to exactly the height of the peer's checkpoint, resume from it.
    cp = await sync.fetch_checkpoint(lagger.ledger.height)
    assert cp is not None and cp.height == src.ledger.height
    assert await sync.sync(until=cp.height - 5) == cp.height - 5 - stuck_at
    assert lagger.ledger.height == cp.height - 5
    await sync.sync(until=cp.height)
    assert lagger.ledger.height == cp.height
    assert lagger.ledger.app_hash() == src.ledger.app_hash()
    _restart(chain, 3, cp.data)
    # Back in consensus: it decides new heights with the others, on the same chain.
    resumed = lagger.ledger.height
    _run(chain, lambda: min(chain.heights()) >= resumed + 5, None)
    for h in range(1, resumed + 6):
        assert len({n.ledger.store.block(h).hash for n in chain.nodes}) == 1  # type: ignore[union-attr]


async def test_lying_peers_prove_nothing(tmp_path: Path, hosts: list[Host]) -> None:
    chain = Chain.build(tmp_path)
    _run(chain, lambda: min(chain.heights()) >= 3, None)
    src = chain.nodes[0]
    b1, b2 = src.ledger.store.block(1), src.ledger.store.block(2)
    assert b1 is not None and b2 is not None and src.app.commits is not None
    c1, c2 = src.app.commits.commit(1), src.app.commits.commit(2)
    assert c1 is not None and c2 is not None
    forged = Commit(c2.height, c2.round, c2.block_hash, c2.signatures[:1])
    answers = {
        "claims": BlocksResponse(2**63, ()).encode(),
        "forges": BlocksResponse(2**63, (SyncedBlock(b1, c1), SyncedBlock(b2, forged))).encode(),
        "junk": b"\x93\x00",
    }
    probe_answers = {
        "claims": ProbeResponse(2**63, ()).encode(),
        "forges": ProbeResponse(
            2**63, (CertifiedHeader(b1.header, c1), CertifiedHeader(b2.header, forged))
        ).encode(),
        "junk": b"\x93\x00",
    }
    lie = ["claims"]

    async def serve(peer: PeerID, request: bytes) -> bytes:
        return answers[lie[0]]

    async def serve_probe(peer: PeerID, request: bytes) -> bytes:
        return probe_answers[lie[0]]

    RequestResponse(hosts[0], BLOCKS_PROTOCOL, serve)
    RequestResponse(hosts[0], PROBE_PROTOCOL, serve_probe)
    fresh = Chain.build(tmp_path / "fresh").nodes[0]
    assert fresh.app.commits is not None
    sync = _block_sync(hosts[1], fresh)
    await connect(hosts[1], hosts[0])
    detector = LagDetector(CatchUpPolicy(patience=0.0))
    # A huge claimed height with no certificate: no reason to pause, nothing applied.
    probe = await sync.probe(hosts[0].peer_id)
    assert probe.proven == 0 and probe.tip == 2**63
    assert not detector.observe(0, probe, 100.0)
    # A certificate that does not verify, or bytes that do not decode: the peer is bad.
    for lie[0] in ("forges", "junk"):
        with pytest.raises(BadSyncPeer):
            await sync.probe(hosts[0].peer_id)
    assert sync.counters["probe_bad_peer"] == 1
    # Syncing from such a peer ends at once with nothing applied.
    lie[0] = "claims"
    assert await sync.sync() == 0
    assert fresh.ledger.height == 0
    # A peer that does not speak the protocol at all is just as useless, and no worse.
    await connect(hosts[1], hosts[2])
    with pytest.raises(BadSyncPeer):
        await sync.probe(hosts[2].peer_id)
    assert await sync.fetch_checkpoint(0) is None
    assert await sync.sync() == 0


async def test_resume_skips_lying_checkpoints(tmp_path: Path, hosts: list[Host]) -> None:
    chain = Chain.build(tmp_path)
    _run(chain, lambda: min(chain.heights()) >= 6, None)
    src = chain.nodes[0]
    src_eng = _engine(src)
    assert src.app.commits is not None
    _block_sync(hosts[0], src, lambda: (src_eng.height - 1, src_eng.checkpoint().encode()))
    lie = ["far"]

    async def blocks(peer: PeerID, request: bytes) -> bytes:
        return BlocksResponse(2**62, ()).encode()

    async def checkpoint(peer: PeerID, request: bytes) -> bytes:
        if lie[0] == "far":  # a height it cannot take us to
            return CheckpointResponse(2**62, b"junk").encode()
        return CheckpointResponse(0, b"junk").encode()  # our height, unusable bytes

    RequestResponse(hosts[2], BLOCKS_PROTOCOL, blocks)
    RequestResponse(hosts[2], CHECKPOINT_PROTOCOL, checkpoint)
    fresh = Chain.build(tmp_path / "fresh").nodes[0]
    assert fresh.app.commits is not None
    sync = _block_sync(hosts[1], fresh)

    # What the daemon does with a peer's checkpoint bytes.
    engines = EngineFactory(
        chain.genesis,
        fresh.ledger,
        fresh.app.commits,
        fresh.key,
        tmp_path / "privval.json",
        block_id=fresh.app.block_id,
    )

    def build(cp: PeerCheckpoint) -> Engine | None:
        return engines.from_checkpoint(cp.data, cp.height)

    await connect(hosts[1], hosts[2])
    assert await sync.resume_from_checkpoint(build, tries=2, pause=0) is None
    assert sync.counters["checkpoint_unreachable"] == 1  # then never asked again
    lie[0] = "junk"
    assert await sync.resume_from_checkpoint(build, tries=2, pause=0) is None
    assert sync.counters["checkpoint_unusable"] == 1
    # At its own height, a checkpoint that does not build is the peer's fault: blamed.
    assert sync.counters["sync_invalid_data"] == 1
    assert fresh.ledger.height == 0
    # With an honest peer beside the liar: synced to exactly its checkpoint, resumed.
    lie[0] = "far"
    await connect(hosts[1], hosts[0])
    engine = await sync.resume_from_checkpoint(build, tries=4, pause=0)
    assert engine is not None
    assert fresh.ledger.height == src.ledger.height
    assert engine.height == src_eng.height
    assert fresh.ledger.app_hash() == src.ledger.app_hash()
