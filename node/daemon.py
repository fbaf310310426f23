"""One full node in one asyncio process: ``fedchain start --home DIR``.

Owns, starts in order, and closes in reverse order: the stores (chain, commits, blobs),
the libp2p host and GossipSub, request/response services (block sync, checkpoints, blobs,
direct consensus messages), the RPC server, the consensus engine driver and the FL worker.

Start-up: connect to the configured peers (persistent + bootstrap, waiting a few seconds
for the first), pull missing blocks (``node.services.block_sync``), then build the engine
for the height reached, from this node's own checkpoint or, if sync went past it, a
peer's, and start consensus. A new node also fetches the current global model by hash rather than
replaying every round.

Running: the engine's own catch-up only reaches as far back as its peers remember
decisions, so a node that falls further behind (partitioned, paused, or it lost the
messages of a height in a reconnect) would otherwise stay at its height forever. A
watcher probes one peer a second for certified blocks past our height
(``BlockSync.probe``); when ``LagDetector`` says we are really behind, it stops the
engine, block-syncs, fetches the current global model, and rebuilds the engine from a
peer's checkpoint at the height reached (``catching_up`` in /status meanwhile). It also
starts the engine when start-up could not (no peer checkpoint yet).

Shutdown (SIGTERM/SIGINT): stop the watcher, consensus and training first, so nothing new
is committed, then close the network (peers see the connections close), then the stores
(every committed block is already durable: one SQLite transaction per block).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import resource
import signal
import sqlite3
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from consensus.engine import Engine, MessageReceived, TxsAvailable
from consensus.privval import FileStateStore, GuardedSigner
from consensus.registry import EngineConfig, create_engine
from consensus.types import Commit, DuplicateVoteEvidence
from fl.models import Params
from fl.train import Evaluation, TrainConfig, TrainingStopped
from node.app.application import AppError, CommittedBlock, NodeApp
from node.app.mempool import Mempool
from node.core.codec import Record
from node.home import Home
from node.ledger.block import Block
from node.ledger.tx import Evidence, ModelUpdate, Tx, sign_tx
from node.p2p.gossipsub.service import GossipSub, Received
from node.p2p.host import Host, HostConfig
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import IdentityKey, PeerID
from node.p2p.reqresp import ReqRespConfig, RequestResponse
from node.rpc.server import RPCServer
from node.rpc.view import LocalView
from node.services.blob_sync import BlobSync, BlobUnavailable
from node.services.block_sync import BadSyncPeer, BlockSync, CatchUpPolicy, LagDetector, Probe
from node.services.consensus_driver import AsyncConsensus
from node.services.fl_worker import FLWorker, TrainingSlot, load_shard
from node.services.gossip_topics import (
    MAX_CONSENSUS_BYTES,
    Topics,
    UpdateGossip,
    consensus_validator,
    tx_validator,
    update_validator,
)
from node.services.status import ModelSnapshot, RoundStats, peer_infos
from node.store.blobs import BlobStore
from node.store.chain import StoreError
from node.store.commits import CommitStore
from node.store.ledger import Ledger
from node.store.models import ModelBytesError, ModelStore
from node.testnet.code_pages import release_startup_code_pages
from node.testnet.train_slots import SlotWaitAborted, TrainSlots, pin_to_slot

__all__ = ["CONSENSUS_DIRECT_PROTOCOL", "Daemon", "DaemonOptions"]

log = logging.getLogger(__name__)

CONSENSUS_DIRECT_PROTOCOL = "/fedchain/consensus/1"
KEEP_ROUNDS = 3
# Peer checkpoints tried per attempt to (re)start the engine; the watcher tries again a
# second later when all fail, so a node never gives up on consensus for good.
RESUME_TRIES = 10
PROBE_TIMEOUT = 5.0


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
    def __init__(self, home: Path, options: DaemonOptions | None = None) -> None:
        self.home = Home(Path(home))
        self.opts = options or DaemonOptions()
        self.stopped = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.consensus: AsyncConsensus | None = None
        self._paused: AsyncConsensus | None = None  # being stopped by the watcher
        self._watcher: asyncio.Task[None] | None = None
        self.worker: FLWorker | None = None
        self._round_started = time.monotonic()
        self._last_block = time.monotonic()
        self._closing = False
        self._syncing = not self.opts.dev
        self.exit_code = 0
        self._bytes_in = 0  # gossip message bytes delivered to / published by this node
        self._bytes_out = 0

    # ----------------------------------------------------------------- start

    async def start(self) -> None:
        home = self.home
        self.config = cfg = home.config()
        self.genesis = genesis = home.genesis()
        self.vkey = home.validator_key()
        nkey = home.node_key()
        data = cfg.data_path(home.path)
        data.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger.open(data / "chain.sqlite", genesis, fsync=self.opts.fsync)
        self.blobs = BlobStore(data / "blobs")
        self.commits = CommitStore(data / "commits.sqlite", fsync=self.opts.fsync)
        self.models = ModelStore(self.blobs, genesis.fl)
        self.mempool = Mempool(self.ledger.state)
        self.app = NodeApp(self.ledger, self.mempool, self.models, self.commits)
        self.app.listeners.append(self._on_commit)
        self.topics = Topics(genesis.chain_id)

        p2p = cfg.p2p
        hc = HostConfig(
            persistent=tuple(Multiaddr.parse(a) for a in p2p.persistent_peers),
            bootstrap=tuple(Multiaddr.parse(a) for a in (*p2p.bootstrap, *self.opts.bootstrap)),
            announce=(Multiaddr.parse(p2p.external),) if p2p.external else (),
            max_peers=p2p.max_peers,
            target_peers=min(16, p2p.max_peers),
        )
        self.host = Host(
            IdentityKey.from_seed(nkey.seed), listen=[Multiaddr.parse(p2p.listen)], config=hc
        )
        self.peer_id = self.host.peer_id
        self.view = LocalView(
            node_id=self.peer_id.to_base58(),
            moniker=cfg.moniker,
            ledger=self.ledger,
            mempool=self.mempool,
            on_tx=self._publish_tx,
            list_peers=lambda: peer_infos(self.host),
            is_syncing=lambda: self._syncing,
        )
        self.view.metrics.height.set(self.ledger.height)
        self.view.metrics.fl_round.set(self.ledger.state.meta.fl_round)
        await self.host.start()
        self.gossip = GossipSub(self.host, msg_id_fn=self.topics.message_id)
        await self.gossip.start()
        me = self.peer_id
        self.gossip.add_validator(self.topics.txs, tx_validator(me, self._admit))
        self.gossip.add_validator(
            self.topics.updates,
            update_validator(
                me,
                self._admit,
                arch=genesis.fl.model,
                max_update_bytes=genesis.fl.max_update_bytes,
                current_round=lambda: self.ledger.state.meta.fl_round,
            ),
        )
        self.gossip.add_validator(self.topics.consensus, consensus_validator(me))
        self.gossip.subscribe(self.topics.txs, self._on_gossip)
        self.gossip.subscribe(self.topics.updates, self._on_gossip)
        self.gossip.subscribe(self.topics.consensus, self._on_consensus_gossip)
        self.direct = RequestResponse(
            self.host,
            CONSENSUS_DIRECT_PROTOCOL,
            self._on_direct,
            ReqRespConfig(max_request=MAX_CONSENSUS_BYTES, max_response=16, timeout=30.0),
        )
        self.blobsync = BlobSync(self.host, self.blobs)
        self.blocksync = BlockSync(
            self.host,
            self.ledger,
            self.commits,
            self._apply_synced,
            checkpoint=self.commits.checkpoint,
        )
        m = self.view.metrics
        m.add_event_source("p2p", lambda: self.host.counters)
        m.add_event_source("gossipsub", self.gossip.all_counters)
        m.add_event_source("blocksync", lambda: self.blocksync.counters)
        m.add_event_source("blobsync", lambda: self.blobsync.counters)
        m.add_event_source("app", lambda: self.app.counters)
        self.rpc = RPCServer.from_config(self.view, cfg.rpc)
        await self.rpc.start()
        log.info(
            "node %s (%s) listening on %s, rpc %s, height %d",
            cfg.moniker,
            me,
            ", ".join(str(a) for a in self.host.listen_addrs),
            self.rpc.url,
            self.ledger.height,
        )
        await self._catch_up()
        self._start_consensus()
        if not self.opts.dev:
            self._watcher = asyncio.create_task(self._watch(), name="catch-up")
        self._model_available()
        await self._start_worker()
        if self.opts.release_code_pages:
            kb = release_startup_code_pages()
            log.info("released %.0f MB of start-up code pages", kb / 1024)

    async def _catch_up(self) -> None:
        if self.opts.dev:
            return
        if self.host.config.persistent or self.host.config.bootstrap:
            deadline = time.monotonic() + self.opts.peer_wait
            while not self.host.connected_peers() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        await self._sync_passes()
        meta = self.ledger.state.meta
        if not self.models.has(meta.global_model):
            await self._fetch_model(meta.global_model, meta.fl_round)

    async def _sync_passes(self, passes: int = 5) -> int:
        """Block-sync until a pass applies nothing (at most ``passes``); blocks applied."""
        applied = 0
        for _ in range(passes):
            n = await self.blocksync.sync()
            if n == 0:
                break
            applied += n
            self.view.metrics.blocks_synced.inc(n)
            log.info("block sync applied %d blocks, now at height %d", n, self.ledger.height)
        return applied

    def _start_consensus(self) -> None:
        """Start the engine from local state when that is enough; otherwise the watcher
        starts it from a peer's checkpoint (``_resume``) as soon as it runs."""
        engine = self._local_engine()
        if engine is not None:
            self._run_engine(engine)

    def _local_engine(self) -> Engine | None:
        """An engine for the next height from this node's own state, when it has it."""
        height = self.ledger.height
        own = self.commits.checkpoint()
        if own is not None and own[0] == height:
            engine = self._engine_from(own[1], height)
            if engine is not None:
                return engine
        if height == 0:
            return self._make_engine(None)
        if len(self.ledger.validator_set().validators) == 1:
            # A lone validator (a dev chain) has nothing to learn from peers: its engine
            # state is just the height, and NodeApp supplies the last commit itself.
            log.warning("no checkpoint for height %d: starting the engine afresh", height)
            return self._make_engine(None)
        return None

    def _engine_from(self, recovery: bytes, height: int) -> Engine | None:
        """An engine resuming at ``height + 1`` from checkpoint bytes, or None when they
        are unusable (corrupt, hostile, or for another height)."""
        try:
            engine = self._make_engine(recovery)
        except Exception as e:  # hostile or corrupt bytes: the caller asks elsewhere
            log.warning("unusable checkpoint for height %d: %s", height, e)
            return None
        if engine.height != height + 1:
            log.warning("checkpoint resumes at %d, not %d", engine.height, height + 1)
            return None
        return engine

    async def _engine_from_peers(self) -> Engine | None:
        """Synced past our own checkpoint: resume from a peer's, syncing up to exactly its
        height (peers keep committing meanwhile); bounded, None when every try failed."""
        return await self.blocksync.resume_from_checkpoint(
            lambda cp: self._engine_from(cp.data, cp.height),
            local=self._local_engine,
            tries=RESUME_TRIES,
        )

    def _make_engine(self, recovery: bytes | None) -> Engine:
        g = self.genesis
        height = self.ledger.height
        signer = GuardedSigner(
            self.vkey, FileStateStore(self.config.data_path(self.home.path) / "privval.json")
        )
        engine = create_engine(
            g.consensus_engine,
            EngineConfig(
                chain_id=g.chain_id,
                signer=signer,
                validators=self.ledger.validator_set(height + 1),
                initial_height=height + 1,
                recovery=recovery,
                options=g.consensus_params_dict,
            ),
        )
        return engine

    def _run_engine(self, engine: Engine) -> None:
        if self._closing:
            return
        g = self.genesis
        height = self.ledger.height
        self.consensus = AsyncConsensus(
            engine,
            self.app,
            publish=lambda d: self._publish(self.topics.consensus, d),
            send=self._send_direct,
            fetch_payloads=self.blobsync.fetch_into_store,
            on_checkpoint=self.commits.put_checkpoint,
            on_evidence=self._on_evidence,
            on_failure=self._consensus_failed,
        )
        self.consensus.start()
        self._syncing = False
        log.info("consensus (%s) started at height %d", g.consensus_engine, height + 1)

    # ----------------------------------------------------------------- falling behind

    async def _watch(self) -> None:
        """Keep consensus running at the chain's height (see the module docstring)."""
        detector = LagDetector(self.opts.catchup)
        while True:
            try:
                if self.consensus is None:
                    await self._resume()
                else:
                    probe = await self._probe()
                    now = time.monotonic()
                    if probe is not None and detector.observe(self.ledger.height, probe, now):
                        await self._resync(detector, probe)
            except (AppError, StoreError, sqlite3.Error) as e:
                # A certified block that does not apply, or a failing store: this node
                # cannot follow the chain; stop loudly rather than idle without consensus.
                log.exception("catching up failed")
                self._consensus_failed(e)
                return
            except Exception:
                # Peers' faults end as BadSyncPeer inside sync; whatever else went wrong,
                # the next round of the loop tries again (and restarts the engine).
                log.exception("catching up failed; trying again")
            await asyncio.sleep(self.opts.catchup_interval)

    async def _probe(self) -> Probe | None:
        peers = self.host.connected_peers()
        if not peers:
            return None
        peer = random.choice(peers)
        try:
            return await self.blocksync.probe(peer, timeout=PROBE_TIMEOUT)
        except BadSyncPeer as e:
            log.info("lag probe of %s: %s", peer, e)
            return None

    async def _resync(self, detector: LagDetector, probe: Probe) -> None:
        """Stop the engine, block-sync, and start a new engine at the height reached."""
        log.warning(
            "behind the chain at height %d (%s has certified blocks to %d, claims %d): "
            "pausing consensus to sync",
            self.ledger.height,
            probe.peer,
            probe.proven,
            probe.tip,
        )
        self._syncing = True
        self.view.metrics.catchups.inc()
        consensus, self.consensus = self.consensus, None
        if consensus is not None:
            self._paused = consensus
            await consensus.close()
            self._paused = None
        applied = await self._sync_passes()
        detector.synced(applied, time.monotonic())
        log.info("caught up %d blocks, now at height %d", applied, self.ledger.height)
        meta = self.ledger.state.meta
        if not self.models.has(meta.global_model):
            # One try only while consensus is paused (a round-closing proposal needs it
            # as the base); _resume keeps trying with the engine running.
            await self._fetch_model(meta.global_model, meta.fl_round, tries=1)
        await self._resume()

    async def _resume(self) -> None:
        """(Re)start the engine at our height; if the worker and RPC view were not told
        about the current round's model (its rounds closed by sync), fetch and announce it."""
        self._syncing = True
        engine = await self._engine_from_peers()
        if engine is None:
            log.warning("no usable checkpoint for height %d yet: retrying", self.ledger.height)
            return
        self._run_engine(engine)
        meta = self.ledger.state.meta
        snapshot = self.view.fl.snapshot
        if snapshot is None or snapshot.round != meta.fl_round:
            if not self.models.has(meta.global_model):
                await self._fetch_model(meta.global_model, meta.fl_round)
            self._round_started = time.monotonic()
            self._model_available()

    async def _start_worker(self) -> None:
        cfg = self.config
        if not cfg.fl.trainer or self.vkey.address not in self.genesis.trainers:
            return
        loop = asyncio.get_running_loop()
        shard = await loop.run_in_executor(
            None,
            lambda: load_shard(
                self.genesis,
                self.vkey.address,
                cfg.fl.data_dir or None,
                max_samples=self.opts.max_train_samples,
                eval_samples=self.opts.eval_samples or cfg.fl.eval_samples,
            ),
        )
        train = self.opts.train or TrainConfig(threads=cfg.fl.torch_threads, device=cfg.fl.device)
        self.worker = FLWorker(
            self.genesis,
            self.vkey,
            shard,
            submit=self.view.submit_tx,
            next_nonce=self._next_nonce,
            current_round=lambda: self.ledger.state.meta.fl_round,
            train_config=train,
            slot=(
                training_slot(TrainSlots(Path(cfg.fl.train_slots_dir), cfg.fl.train_slots))
                if cfg.fl.train_slots
                else None
            ),
        )
        self._model_available()

    # ----------------------------------------------------------------- ledger events

    def _next_nonce(self) -> int:
        addr = self.vkey.address
        return self.ledger.account(addr).nonce + len(self.mempool.pending(addr))

    def _admit(self, tx: Tx, payload: bytes | None) -> None:
        self.mempool.add(tx, payload)
        if payload is not None and isinstance(tx.body, ModelUpdate):
            self.blobs.put(payload, round=tx.body.round, durable=False)
        self._txs_changed()

    async def _publish_tx(self, tx: Tx, payload: bytes | None) -> None:
        if payload is not None and isinstance(tx.body, ModelUpdate):
            self.blobs.put(payload, round=tx.body.round, durable=False)
            await self._publish(self.topics.updates, UpdateGossip(tx.encode(), payload).encode())
        else:
            await self._publish(self.topics.txs, tx.encode())
        self._txs_changed()

    def _txs_changed(self) -> None:
        # Only work for a block wakes an engine that waits for transactions: an update
        # that does not yet let the round close would just cut an empty block.
        if self.consensus is not None and self.app.has_work():
            self.consensus.feed(TxsAvailable())

    def _apply_synced(self, block: Block, commit: Commit) -> None:
        self.app.apply_committed(block, commit)

    def _on_commit(self, ev: CommittedBlock) -> None:
        m = self.view.metrics
        m.height.set(ev.block.height)
        m.fl_round.set(ev.block.header.fl_round)
        m.txs_committed.inc(len(ev.block.txs))
        now = time.monotonic()
        m.block_seconds.observe(now - self._last_block)
        self._last_block = now
        if ev.new_round and not self._syncing:
            # While syncing, intermediate models are skipped: only the final one is
            # fetched (by hash) once sync is done.
            seconds = time.monotonic() - self._round_started
            self._round_started = time.monotonic()
            m.round_seconds.observe(seconds)
            log.info(
                "height %d closed FL round %d with %d updates (%.1fs)",
                ev.block.height,
                ev.block.header.fl_round - 1,
                ev.updates,
                seconds,
            )
            closed_at = self._round_started
            self._spawn(self._new_round(ev, seconds, closed_at), "new-round")

    async def _new_round(self, ev: CommittedBlock, seconds: float, closed_at: float) -> None:
        h = ev.block.header
        # Payloads and models of rounds long closed are no longer needed by anyone
        # (late joiners fetch only the current model); keep a few rounds for stragglers.
        with contextlib.suppress(OSError, sqlite3.Error):
            self.blobs.prune(h.fl_round, KEEP_ROUNDS, pinned=[h.global_model_hash])
        if not self.models.has(h.global_model_hash):
            await self._fetch_model(h.global_model_hash, h.fl_round)
        row = RoundStats(
            h.fl_round - 1, h.height, ev.updates, None, None, seconds, h.global_model_hash.hex()
        )
        accuracy = self._model_available(row)
        if accuracy is None:
            self.view.fl.history.append(row)  # no evaluation here: the row has no accuracy
        result = await accuracy if accuracy is not None else None
        self._log_round(ev, seconds, result.accuracy if result else None, closed_at)

    def _log_round(
        self, ev: CommittedBlock, seconds: float, acc: float | None, closed_at: float
    ) -> None:
        """One JSON line per closed round in ``<data>/rounds.jsonl`` (for benchmarks)."""
        closed = ev.block.header.fl_round - 1
        mine = [o for o in (self.worker.outcomes if self.worker else []) if o.round == closed]
        rec = {
            "round": closed,
            "height": ev.block.height,
            "updates": ev.updates,
            "round_seconds": round(seconds, 3),
            "train_seconds": round(mine[-1].seconds, 3) if mine else None,
            "submit_to_commit_seconds": (
                round(closed_at - mine[-1].submitted_at, 3) if mine else None
            ),
            "consensus_seconds": round(ev.consensus_seconds, 3),
            "aggregation_seconds": round(ev.aggregation_seconds, 4),
            "accuracy": acc,
            "gossip_bytes_in": self._bytes_in,
            "gossip_bytes_out": self._bytes_out,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "unix_time": round(time.time(), 3),
        }
        self._bytes_in = self._bytes_out = 0
        path = self.config.data_path(self.home.path) / "rounds.jsonl"
        try:
            with path.open("a") as f:
                f.write(json.dumps(rec) + "\n")
        except OSError as e:
            log.warning("cannot write %s: %s", path, e)

    async def _fetch_model(self, digest: bytes, round: int, tries: int = 20) -> None:
        for _ in range(tries):
            try:
                data = await self.blobsync.fetch(digest)
                self.models.put_bytes(data, digest, round=round)
                log.info("fetched global model %s for round %d", digest.hex()[:16], round)
                return
            except (BlobUnavailable, ModelBytesError) as e:
                log.info("global model %s not fetched yet: %s", digest.hex()[:16], e)
                await asyncio.sleep(1.0)

    def _model_available(
        self, row: RoundStats | None = None
    ) -> asyncio.Task[Evaluation | None] | None:
        """Tell the worker and the RPC view about the current global model; the returned
        evaluation appends ``row`` (the round that made the model) to the history."""
        meta = self.ledger.state.meta
        try:
            params: Params = self.models.resolve(meta.global_model)
        except (KeyError, ModelBytesError, OSError) as e:
            log.info("global model of round %d not available: %s", meta.fl_round, e)
            return None
        self.view.fl.snapshot = ModelSnapshot.from_params(meta.fl_round, self.models.arch, params)
        if self.worker is None:
            return None
        # Created first, so its job reaches the worker's thread before the training job
        # (tasks start in creation order): the accuracy does not wait for an epoch.
        task = asyncio.create_task(self._evaluate(params, meta.fl_round, row), name="evaluate")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.worker.on_model(meta.fl_round, meta.global_model, params)
        return task

    async def _evaluate(
        self, params: Params, round: int, row: RoundStats | None = None
    ) -> Evaluation | None:
        assert self.worker is not None
        result = await self.worker.evaluate(params)
        # The history row and /status change in the same step, so a client that sees the
        # accuracy in one sees it in the other.
        if row is not None:
            if result is not None:
                row = replace(row, accuracy=result.accuracy, loss=result.loss)
            self.view.fl.history.append(row)
        # /status keeps the newest evaluated model's accuracy together with its round (the
        # evaluation may finish after later rounds closed; it may also have been skipped).
        seen = self.view.fl.test_accuracy_round
        if result is not None and (seen is None or round >= seen):
            self.view.fl.test_accuracy, self.view.fl.test_accuracy_round = result.accuracy, round
            self.view.metrics.test_accuracy.set(result.accuracy)
        return result

    def _on_evidence(self, evidence: Record) -> None:
        if not isinstance(evidence, DuplicateVoteEvidence):
            return
        g = self.genesis
        tx = sign_tx(self.vkey, g.chain_id, self._next_nonce(), g.fees, Evidence(evidence))
        self._spawn(self._submit_quietly(tx), "evidence")

    async def _submit_quietly(self, tx: Tx) -> None:
        try:
            await self.view.submit_tx(tx, None)
        except Exception as e:
            log.info("evidence tx not submitted: %s", e)

    # ----------------------------------------------------------------- network events

    def _on_gossip(self, rec: Received) -> None:
        self.view.metrics.gossip_messages.labels(topic=rec.topic, direction="in").inc()
        self.view.metrics.gossip_bytes.labels(topic=rec.topic, direction="in").inc(len(rec.data))
        self._bytes_in += len(rec.data)

    async def _publish(self, topic: str, data: bytes) -> None:
        await self.gossip.publish(topic, data)
        m = self.view.metrics
        m.gossip_messages.labels(topic=topic, direction="out").inc()
        m.gossip_bytes.labels(topic=topic, direction="out").inc(len(data))
        self._bytes_out += len(data)

    def _on_consensus_gossip(self, rec: Received) -> None:
        self._bytes_in += len(rec.data)
        if rec.source is None or self.consensus is None:
            return  # our own message (the engine has it) or consensus not running yet
        # Replies (SendTo) go to the message's author, who may not be our direct neighbour.
        author = rec.source
        if rec.author:
            with contextlib.suppress(ValueError):
                author = PeerID.from_bytes(rec.author)
        self.consensus.feed(MessageReceived(author.to_base58(), rec.data))

    async def _on_direct(self, peer: PeerID, data: bytes) -> bytes:
        if self.consensus is not None:
            self.consensus.feed(MessageReceived(peer.to_base58(), data))
        return b""

    async def _send_direct(self, peer: str, data: bytes) -> None:
        await self.direct.request(PeerID.from_base58(peer), data, timeout=10.0)

    # ----------------------------------------------------------------- stop

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """A child task the daemon owns: awaited (cancelled) on close, forgotten when done."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
        if self._paused is not None:
            await self._paused.close()
        if self.worker is not None:
            await self.worker.close()
        if self.consensus is not None:
            await self.consensus.close()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for name in ("rpc", "gossip", "host"):
            part = getattr(self, name, None)
            if part is not None:
                try:
                    await part.close()
                except Exception:
                    log.exception("closing %s failed", name)
        ledger = getattr(self, "ledger", None)
        if ledger is not None:
            with contextlib.suppress(sqlite3.Error):
                ledger.store.checkpoint()  # fold the WAL into the database file
        for name in ("commits", "blobs", "ledger"):
            store = getattr(self, name, None)
            if store is not None:
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
