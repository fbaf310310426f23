"""One full node in one asyncio process: ``fedchain start --home DIR``.

This module is the composition root and nothing else: ``Daemon`` builds every part of a
node from its home directory and wires them together, ``start`` starts them in order and
``close`` stops them in reverse. What the parts do lives in the parts: the catch-up
supervisor (``node.services.catchup``) keeps consensus running at the chain's height, the
round tracker (``node.services.rounds``) follows FL rounds and keeps the FL status, the
gossip handlers (``node.services.gossip``) admit and publish, and the evidence reporter
and the per-round benchmark log own their small jobs.

Shutdown (SIGTERM/SIGINT): stop the catch-up watcher, consensus and training first, so
nothing new is committed, then close the network (peers see the connections close), then
the stores (every committed block is already durable: one SQLite transaction per block).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from consensus.engine import Engine, MemoVerifier
from fl.train import TrainConfig, TrainingStopped
from node.app.application import NodeApp
from node.app.mempool import Mempool
from node.home import Home
from node.p2p.gossipsub.service import GossipSub
from node.p2p.host import Host, HostConfig
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import IdentityKey
from node.p2p.yamux import YamuxConfig
from node.rpc.metrics import NodeMetrics
from node.rpc.server import RPCServer
from node.rpc.view import LocalView
from node.services.blob_sync import BlobSync
from node.services.block_sync import BlockSync, CatchUpPolicy
from node.services.catchup import CatchUp
from node.services.consensus_driver import AsyncConsensus, ConsensusHandle
from node.services.engine_factory import EngineFactory
from node.services.evidence import EvidenceReporter
from node.services.fl_worker import FLWorker, TrainingSlot, load_shard
from node.services.gossip import CONSENSUS_DIRECT_PROTOCOL, NodeGossip
from node.services.gossip_topics import Topics
from node.services.round_log import RoundLog
from node.services.rounds import RoundTracker
from node.services.status import peer_infos, peer_standing
from node.store.blobs import BlobStore
from node.store.commits import CommitStore
from node.store.ledger import Ledger
from node.store.models import ModelStore
from node.testnet.code_pages import release_startup_code_pages
from node.testnet.train_slots import SlotWaitAborted, TrainSlots, pin_to_slot

__all__ = ["CONSENSUS_DIRECT_PROTOCOL", "Daemon", "DaemonOptions", "run_daemon", "training_slot"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DaemonOptions:
    dev: bool = False  # single-node chain: no peer wait, no sync
    bootstrap: tuple[str, ...] = ()
    peer_wait: float = 5.0  # seconds to wait for a first peer before syncing
    max_train_samples: int | None = None
    eval_samples: int | None = None  # None: config.toml's fl.eval_samples
    train: TrainConfig | None = None
    fsync: bool = True
    catchup_interval: float = 1.0  # seconds between lag probes (one peer each)
    catchup: CatchUpPolicy = field(default_factory=CatchUpPolicy)
    # Process-wide, so only the `fedchain start` process does it (see node.testnet.code_pages).
    release_code_pages: bool = False


class Daemon:
    """A node's parts, built in ``__init__``, started by ``start``, stopped by ``close``.

    Owns, in build order: the stores (ledger, blobs, commits, models), the mempool and the
    ABCI++ application, the metrics, the libp2p host and GossipSub, the consensus handle,
    the gossip handlers, block and blob sync, the round tracker (with the benchmark log),
    the RPC view, the evidence reporter, the engine factory, the catch-up supervisor and
    the RPC server. Only the FL worker is built in ``start``: its training data is loaded off
    the event loop, and a node that is not a trainer has none.

    ``start``: the worker first, so a trainer whose training data is missing or malformed
    stops (``fl.data.DataError``) before it binds a port or talks to a peer; then host,
    GossipSub, topic subscriptions, RPC server; then the catch-up supervisor's start-up
    sync and consensus (with its watcher); then the current global model is announced and
    the worker attached to the round tracker.

    ``close`` (idempotent, also after a failed start): the catch-up supervisor (watcher
    and engine), the worker, the round tracker's and evidence reporter's tasks; then the
    RPC server, GossipSub and the host; then the stores. Each awaits its own children.
    """

    def __init__(self, home: Path, options: DaemonOptions | None = None) -> None:
        self.home = Home(Path(home))
        self.opts = opts = options or DaemonOptions()
        self.stopped = asyncio.Event()
        self.exit_code = 0
        self._closing = False
        self.config = cfg = self.home.config()
        self.genesis = genesis = self.home.genesis()
        self.vkey = self.home.validator_key()
        node_key = self.home.node_key()
        data = cfg.data_path(self.home.path)
        data.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as opened:  # closes the stores if a later part fails
            check = cfg.db_check_seconds
            self.ledger = Ledger.open(
                data / "chain.sqlite", genesis, fsync=opts.fsync, check_seconds=check
            )
            opened.callback(self.ledger.close)
            self.blobs = BlobStore(data / "blobs", check_seconds=check)
            opened.callback(self.blobs.close)
            self.commits = CommitStore(
                data / "commits.sqlite", fsync=opts.fsync, check_seconds=check
            )
            opened.callback(self.commits.close)
            self.models = ModelStore(self.blobs, genesis.fl)
            self.mempool = Mempool(self.ledger.state)
            self.app = NodeApp(self.ledger, self.mempool, self.models, self.commits)
            self.metrics = NodeMetrics()

            p2p = cfg.p2p
            self.host = Host(
                IdentityKey.from_seed(node_key.seed),
                listen=[Multiaddr.parse(p2p.listen)],
                config=HostConfig(
                    persistent=tuple(Multiaddr.parse(a) for a in p2p.persistent_peers),
                    bootstrap=tuple(Multiaddr.parse(a) for a in (*p2p.bootstrap, *opts.bootstrap)),
                    announce=(Multiaddr.parse(p2p.external),) if p2p.external else (),
                    max_peers=p2p.max_peers,
                    target_peers=min(16, p2p.max_peers),
                    first_byte_timeout=p2p.first_byte_timeout,
                    handshake_timeout=p2p.handshake_timeout,
                    max_pending_upgrades=p2p.max_pending_upgrades,
                    max_pending_upgrades_per_ip=p2p.max_pending_upgrades_per_ip,
                    max_connections_per_peer=p2p.max_connections_per_peer,
                    yamux=YamuxConfig(
                        max_inbound_streams=p2p.max_inbound_streams,
                        max_buffered=p2p.connection_buffer_bytes,
                    ),
                ),
            )
            # One memo for consensus signatures: gossip validation and the engine check
            # the same messages.
            self.verifier = MemoVerifier()
            self.topics = Topics(genesis.chain_id)
            self.gossipsub = GossipSub(self.host, msg_id_fn=self.topics.message_id)
            self.consensus = ConsensusHandle(catching_up=not opts.dev)
            self.gossip = NodeGossip(
                self.host,
                self.gossipsub,
                self.topics,
                app=self.app,
                blobs=self.blobs,
                consensus=self.consensus,
                metrics=self.metrics,
                verifier=self.verifier,
            )
            self.blobsync = BlobSync(self.host, self.blobs)
            self.blocksync = BlockSync(
                self.host,
                self.ledger,
                self.commits,
                self.app.apply_committed,
                checkpoint=self.commits.checkpoint,
            )

            self.rounds = RoundTracker(
                self.ledger,
                self.models,
                self.blobs,
                self.blobsync,
                syncing=self.consensus.is_catching_up,
                metrics=self.metrics,
                round_log=RoundLog(data / "rounds.jsonl", self.gossip.traffic),
            )
            self.app.listeners.append(self.rounds.on_commit)
            self.view = LocalView(
                node_id=self.host.peer_id.to_base58(),
                moniker=cfg.moniker,
                ledger=self.ledger,
                mempool=self.mempool,
                metrics=self.metrics,
                on_tx=self.gossip.publish_tx,
                fl=self.rounds.status,
                list_peers=functools.partial(peer_infos, self.host),
                standing_of=functools.partial(peer_standing, self.host, self.gossipsub),
                is_syncing=self.consensus.is_catching_up,
            )
            self.next_nonce = functools.partial(self.mempool.next_nonce, self.vkey.address)
            self.evidence = EvidenceReporter(
                self.vkey, genesis, next_nonce=self.next_nonce, submit=self.view.submit_tx
            )
            drive: Callable[[Engine], AsyncConsensus] = functools.partial(
                AsyncConsensus,
                app=self.app,
                publish=self.gossip.publish_consensus,
                send=self.gossip.send_direct,
                fetch_payloads=self.blobsync.fetch_into_store,
                on_checkpoint=self.commits.put_checkpoint,
                on_evidence=self.evidence.report,
                on_failure=self._consensus_failed,
            )
            self.catchup = CatchUp(
                self.consensus,
                host=self.host,
                ledger=self.ledger,
                models=self.models,
                blocksync=self.blocksync,
                blobsync=self.blobsync,
                engines=EngineFactory(
                    genesis,
                    self.ledger,
                    self.commits,
                    self.vkey,
                    data / "privval.json",
                    block_id=self.app.block_id,
                    verifier=self.verifier,
                ),
                drive=drive,
                on_resumed=self.rounds.resumed,
                on_failure=self._consensus_failed,
                metrics=self.metrics,
                watch=not opts.dev,
                peer_wait=opts.peer_wait,
                interval=opts.catchup_interval,
                policy=opts.catchup,
            )

            m = self.metrics
            m.add_event_source("p2p", lambda: self.host.counters)
            m.add_event_source("gossipsub", self.gossipsub.all_counters)
            m.add_event_source("blocksync", lambda: self.blocksync.counters)
            m.add_event_source("blobsync", lambda: self.blobsync.counters)
            m.add_event_source("app", lambda: self.app.counters)
            self.rpc = RPCServer.from_config(self.view, cfg.rpc)
            m.add_event_source("rpc", lambda: self.rpc.guard.counters)
            self.worker: FLWorker | None = None  # built by start() (see the class docstring)
            opened.pop_all()

    # ----------------------------------------------------------------- start

    async def start(self) -> None:
        self.worker = await self._load_worker()
        await self.host.start()
        await self.gossipsub.start()
        self.gossip.start()
        await self.rpc.start()
        log.info(
            "node %s (%s) listening on %s, rpc %s, height %d",
            self.config.moniker,
            self.host.peer_id,
            ", ".join(str(a) for a in self.host.listen_addrs),
            self.rpc.url,
            self.ledger.height,
        )
        await self.catchup.sync_at_start()
        self.catchup.start()
        self.rounds.announce_model()
        if self.worker is not None:
            self.rounds.attach_worker(self.worker)
        if self.opts.release_code_pages:
            kb = release_startup_code_pages()
            log.info("released %.0f MB of start-up code pages", kb / 1024)

    async def _load_worker(self) -> FLWorker | None:
        """The FL worker, when this node is a genesis trainer with training enabled."""
        cfg = self.config
        if not cfg.fl.trainer or self.vkey.address not in self.genesis.trainers:
            return None
        loop = asyncio.get_running_loop()
        shard = await loop.run_in_executor(
            None,
            lambda: load_shard(
                cfg.fl_data_path(self.home.path),
                max_samples=self.opts.max_train_samples,
                eval_samples=self.opts.eval_samples or cfg.fl.eval_samples,
            ),
        )
        train = self.opts.train or TrainConfig(threads=cfg.fl.torch_threads, device=cfg.fl.device)
        return FLWorker(
            self.genesis,
            self.vkey,
            shard,
            submit=self.view.submit_tx,
            next_nonce=self.next_nonce,
            current_round=lambda: self.ledger.state.meta.fl_round,
            train_config=train,
            slot=(
                training_slot(TrainSlots(Path(cfg.fl.train_slots_dir), cfg.fl.train_slots))
                if cfg.fl.train_slots
                else None
            ),
        )

    # ----------------------------------------------------------------- stop

    def request_stop(self) -> None:
        self.stopped.set()

    def _consensus_failed(self, error: BaseException) -> None:
        # The node can no longer follow the chain (a decided block did not apply, the
        # store failed): stop with an error instead of lingering as a silent zombie.
        log.error("consensus failed, stopping the node: %s", error)
        self.exit_code = 1
        self.stopped.set()

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        await self.catchup.close()
        if self.worker is not None:
            await self.worker.close()
        await self.rounds.close()
        await self.evidence.close()
        for name, part in (("rpc", self.rpc), ("gossipsub", self.gossipsub), ("host", self.host)):
            try:
                await part.close()
            except Exception:
                log.exception("closing %s failed", name)
        with contextlib.suppress(sqlite3.Error):
            self.ledger.store.checkpoint()  # fold the WAL into the database file
        for store in (self.commits, self.blobs, self.ledger):
            store.close()
        log.info("node stopped")


def training_slot(slots: TrainSlots) -> TrainingSlot:
    """The worker's ``TrainingSlot`` over a machine's shared slots: wait for one, run on
    its core, and end the job as stopped when the node stops first."""

    @contextlib.contextmanager
    def hold(stop: threading.Event) -> Iterator[None]:
        try:
            with slots.hold(stop) as index, pin_to_slot(index):
                yield
        except SlotWaitAborted as e:
            raise TrainingStopped from e

    return hold


async def run_daemon(home: Path, options: DaemonOptions | None = None) -> int:
    """Run a node until SIGTERM/SIGINT; returns the process exit code."""
    daemon = Daemon(home, options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    try:
        try:
            await daemon.start()
        except BaseException:
            await daemon.close()
            raise
        await daemon.stopped.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    await daemon.close()
    return daemon.exit_code
