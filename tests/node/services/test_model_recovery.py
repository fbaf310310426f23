"""A damaged global-model blob at start (issue 15, item 11): it is dropped and fetched
again by its hash from a peer, and without a peer the node goes on without it instead of
stopping with a traceback."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from node.p2p.host import Host
from node.rpc.metrics import NodeMetrics
from node.services.blob_sync import BlobSync
from node.services.block_sync import BlockSync
from node.services.catchup import CatchUp
from node.services.consensus_driver import ConsensusHandle
from node.services.rounds import RoundTracker
from node.store.blobs import BlobStore
from node.store.models import ModelStore
from tests.node.daemon.chainkit import Chain, SimNode, close_round, connect


def _damage_model(node: SimNode) -> tuple[bytes, ModelStore]:
    """Flip a byte in the middle of the blob of ``node``'s current global model; returns
    its hash and the model store of the node restarted (nothing cached in memory)."""
    digest = node.ledger.state.meta.global_model
    path = node.app.models.blobs.path_of(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return digest, ModelStore(BlobStore(node.app.models.blobs.root), node.ledger.state.genesis.fl)


def _tracker(node: SimNode, models: ModelStore, blobsync: BlobSync) -> RoundTracker:
    return RoundTracker(
        node.ledger,
        models,
        models.blobs,
        blobsync,
        syncing=lambda: False,
        metrics=NodeMetrics(),
    )


def _block_sync(host: Host, node: SimNode) -> BlockSync:
    assert node.app.commits is not None
    return BlockSync(
        host, node.ledger, node.app.commits, node.app.apply_committed, checkpoint=lambda: None
    )


def _catchup(host: Host, node: SimNode, models: ModelStore, blobsync: BlobSync) -> CatchUp:
    unused = SimpleNamespace()  # parts sync_at_start does not touch
    return CatchUp(
        ConsensusHandle(catching_up=True),
        host=host,
        ledger=node.ledger,
        models=models,
        blocksync=_block_sync(host, node),
        blobsync=blobsync,
        engines=unused,  # type: ignore[arg-type]
        drive=unused,  # type: ignore[arg-type]
        on_resumed=unused,  # type: ignore[arg-type]
        on_failure=unused,  # type: ignore[arg-type]
        metrics=NodeMetrics(),
    )


async def test_a_damaged_model_is_fetched_again_at_start(tmp_path: Path, hosts: list[Host]) -> None:
    chain = Chain.build(tmp_path, min_updates=1)
    close_round(chain, 0, seed=1)
    source, victim = chain.nodes[0], chain.nodes[1]
    digest, models = _damage_model(victim)
    BlobSync(hosts[0], source.app.models.blobs)
    _block_sync(hosts[0], source)
    blobsync = BlobSync(hosts[1], models.blobs)
    await connect(hosts[1], hosts[0])

    await _catchup(hosts[1], victim, models, blobsync).sync_at_start()

    assert models.blobs.get(digest)  # the right bytes again
    assert blobsync.counters.get("blob_fetched") == 1
    # The node goes on with the model: announced (to /model and the worker).
    tracker = _tracker(victim, models, blobsync)
    tracker.announce_model()
    snap = tracker.status.snapshot
    assert snap is not None and (snap.round, snap.model_hash) == (1, digest)
    await tracker.close()
    models.blobs.close()


async def test_without_a_peer_a_damaged_model_is_dropped_not_fatal(
    tmp_path: Path, hosts: list[Host]
) -> None:
    chain = Chain.build(tmp_path, min_updates=1)
    close_round(chain, 0, seed=2)
    node = chain.nodes[1]
    digest, models = _damage_model(node)
    tracker = _tracker(node, models, BlobSync(hosts[1], models.blobs))
    assert tracker.announce_model() is None  # no model to announce, and no exception
    assert tracker.status.snapshot is None
    assert not models.has(digest)  # removed, so any later look-up fetches it
    assert not models.intact(digest)
    await tracker.close()
    models.blobs.close()
