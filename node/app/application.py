"""The node's consensus application: ledger + mempool + FL aggregation behind ABCI++.

``NodeApp`` implements ``consensus.app.Application``. The engine only sees opaque block
bytes and their hash; everything about blocks, transactions and models is decided here:

* ``prepare_proposal`` reaps ordinary transactions and, when the FL round can close
  (``min_updates`` usable updates for the current round, or at least one once
  ``round_timeout_blocks`` have passed), includes those updates, aggregates them with the
  genesis rule (inputs sorted by tx hash, bit-exact integer arithmetic in ``fl.aggregate``)
  and puts the new model's hash in the header; the model bytes go to the blob store.
* ``block_id`` says whether bytes are a block and which (its header hash; the engine asks
  before it takes a proposal's bytes). ``process_proposal`` checks that first, and bytes
  that are not the block of the proposed id are refused without a verdict on that id: a
  relay that pairs a genuine signed id with other bytes must not get the genuine block
  rejected when it arrives. It then dry-runs the block on the
  ledger (``State.simulate_block``), and for a round-closing block re-aggregates the
  included payloads and rejects any model hash mismatch. Payloads are looked up locally
  only: the driver fetches missing ones from peers *before* asking (``missing_payloads``),
  so this method stays synchronous and deterministic.
* ``finalize_block`` records the block's certificate, applies and persists the block
  (rewards are ledger rules), and updates the mempool; listeners (FL worker, RPC view,
  metrics) are told.

It runs on the event loop thread, as the mempool and RPC do, so the ledger is only ever
touched from one thread; the expensive part (aggregating the round's updates) is short
next to training, the truly heavy work, which runs elsewhere (``node.services.fl_worker``).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from consensus.app import Block as AppBlock
from consensus.app import FinalizeResult, PrepareProposalRequest
from consensus.types import Commit
from fl.aggregate import AggregationConfig, AggregationError, AggregationResult, aggregate
from fl.update import DecodedUpdate
from node.app.mempool import Mempool
from node.app.updates import BadPayload, MissingPayload, PayloadMismatch, WrongBase, check_update
from node.core.codec import CodecError
from node.ledger.block import (
    MAX_BLOCK_BYTES,
    MAX_BLOCK_TXS,
    Block,
    BlockError,
    Header,
    commit_hash,
    txs_root,
)
from node.ledger.genesis import FLParams, params_dict
from node.ledger.tx import ModelUpdate, Tx
from node.store.blobs import BlobError
from node.store.commits import CommitStore
from node.store.ledger import Ledger
from node.store.models import ModelBytesError, ModelStore

__all__ = ["AppError", "CommittedBlock", "NodeApp", "aggregation_config"]

log = logging.getLogger(__name__)

MAX_ROUND_UPDATES = 256  # fl.aggregate.MAX_UPDATES


class AppError(RuntimeError):
    """The application cannot do what the engine asked (a bug or a corrupt store)."""


def aggregation_config(fl: FLParams) -> AggregationConfig:
    """The genesis rule and its parameters as an ``fl.aggregate.AggregationConfig``.

    The rule's class declares its parameters (``fl.rules``); genesis only carries them.
    """
    cfg = AggregationConfig.from_genesis(fl.aggregation, params_dict(fl.aggregation_params))
    if cfg.server_momentum:
        # The momentum state would have to be part of the chain state to stay reproducible
        # for late joiners; until it is, refuse rather than fork.
        raise AggregationError("server_momentum is not supported by the node")
    return cfg


@dataclass(frozen=True)
class CommittedBlock:
    """What listeners learn after each committed block."""

    block: Block
    commit: Commit
    app_hash: bytes
    new_round: bool  # the block closed an FL round (a new global model)
    updates: int  # model updates included
    # Seconds from this node first seeing the block (building or checking it) to its
    # commit, and seconds this node spent aggregating it (0 without updates).
    consensus_seconds: float = 0.0
    aggregation_seconds: float = 0.0


class NodeApp:
    def __init__(
        self,
        ledger: Ledger,
        mempool: Mempool,
        models: ModelStore,
        commits: CommitStore | None = None,
        *,
        max_block_bytes: int = MAX_BLOCK_BYTES // 2,
        max_block_txs: int = MAX_BLOCK_TXS,
    ) -> None:
        self.ledger = ledger
        self.mempool = mempool
        self.models = models
        self.commits = commits
        self.genesis = ledger.state.genesis
        self.agg = aggregation_config(self.genesis.fl)
        self.max_block_bytes = max_block_bytes
        self.max_block_txs = max_block_txs
        self.listeners: list[Callable[[CommittedBlock], None]] = []
        self._verdicts: OrderedDict[bytes, bool] = OrderedDict()
        # The last blocks built or decoded, by their bytes: the engine's block_id, the
        # driver's missing_payloads, process_proposal and finalize_block all look at the
        # same bytes.
        self._by_bytes: OrderedDict[bytes, Block] = OrderedDict()
        self.counters: dict[str, int] = {}
        self._first_seen: OrderedDict[bytes, float] = OrderedDict()
        self._agg_seconds: dict[bytes, float] = {}
        # The round and pending updates of the last proposal that should have closed the
        # round but did not (see has_work).
        self._unclosable: tuple[int, frozenset[bytes]] | None = None

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1

    # ----------------------------------------------------------------- payloads

    def payload(self, tx: Tx) -> bytes | None:
        """The update payload of ``tx`` if this node holds it (mempool or blob store)."""
        body = tx.body
        assert isinstance(body, ModelUpdate)
        p = self.mempool.payload(tx.hash)
        if p is not None:
            return p
        try:
            return self.models.blobs.get(body.payload_hash)
        except (KeyError, BlobError):
            return None

    def missing_payloads(self, data: bytes) -> list[bytes]:
        """Payload hashes a proposed block needs that this node lacks (for the driver to
        fetch before calling ``process_proposal``)."""
        block = self._decode(data)
        if block is None:
            return []
        return [
            tx.body.payload_hash
            for tx in block.txs
            if isinstance(tx.body, ModelUpdate) and self.payload(tx) is None
        ]

    def _decode_payload(self, tx: Tx) -> DecodedUpdate | None:
        """The update ``tx``'s payload holds, if this node has a usable one, else None.

        The ledger checks the tx itself (round, base model) when the block is built or
        simulated; ``check_update`` ties the payload to the tx. Mempool payloads passed the
        same check on admission; payloads fetched from peers for a proposal did not."""
        body = tx.body
        assert isinstance(body, ModelUpdate)
        try:
            return check_update(self.genesis.fl, body, self.payload(tx))
        except MissingPayload:
            return None
        except WrongBase:
            self._count("payload_wrong_base")
        except BadPayload:
            self._count("payload_malformed")
        except PayloadMismatch:
            self._count("payload_mismatch")
        return None

    # ----------------------------------------------------------------- proposer

    def prepare_proposal(self, req: PrepareProposalRequest) -> AppBlock:
        state = self.ledger.state
        meta = state.meta
        height = meta.height + 1
        if req.height != height:
            raise AppError(f"asked to propose height {req.height}, ledger is at {meta.height}")
        last_commit = req.last_commit
        if height > 1 and self.commits is not None:
            # The certificate this node stored with the block (verified when it was
            # decided or synced) wins over the engine's: an engine restarted without its
            # checkpoint knows none, and one resumed from a peer's got it from that peer.
            last_commit = self.commits.commit(height - 1) or last_commit
        started = time.monotonic()
        ordinary = self.mempool.reap(self.max_block_bytes, self.max_block_txs)
        fl_round, model = meta.fl_round, meta.global_model
        txs = list(ordinary)
        closing = self._closing_updates(height)
        if closing:
            candidate = state.select_valid([*ordinary, *(tx for tx, _ in closing)])
            kept = {tx.hash for tx in candidate}
            closing = [(tx, u) for tx, u in closing if tx.hash in kept]
            if self._may_close(height, len(closing)):
                try:
                    new_params = self._aggregate(meta.global_model, closing).params
                except AggregationError as e:
                    log.warning("cannot aggregate round %d: %s", meta.fl_round, e)
                    self._count("aggregation_failed")
                else:
                    txs = candidate
                    fl_round = meta.fl_round + 1
                    model = self.models.put(new_params, round=fl_round)
        if fl_round == meta.fl_round and self._may_close(height, len(self._round_updates())):
            # has_work() counted these updates as a round-closing block, but they did not
            # close the round (the rule refused them, say): they are no block's work until
            # the set changes, or a validator alone would cut empty blocks back to back.
            self._unclosable = self._pending_key()
        time_ms = max(req.time_ms, meta.time_ms + 1)
        header = Header(
            chain_id=state.chain_id,
            height=height,
            time_ms=time_ms,
            prev_hash=meta.last_block_hash,
            proposer=req.proposer,
            txs_root=txs_root(txs),
            last_commit_hash=commit_hash(last_commit),
            app_hash=state.app_hash(),
            validators_hash=state.validator_set(height).hash,
            fl_round=fl_round,
            global_model_hash=model,
        )
        block = Block(header, tuple(txs), last_commit)
        data = block.encode()
        self._seen(block.hash)
        if fl_round != meta.fl_round:
            self._agg_seconds[block.hash] = time.monotonic() - started
        self._remember(block)
        self._verdicts[block.hash] = True  # our own block: no need to re-check it
        return AppBlock(block.hash, data)

    def has_work(self) -> bool:
        """Whether the next block would carry something: an ordinary tx, or enough updates
        to close the FL round. Consensus engines that wait for transactions before an
        empty block (``timeout_empty_blocks``) start a height when this turns true; pending
        updates alone do not count until the round may close, or every update's arrival
        would cut an empty block.

        Only includable work counts: every pending update passed the full payload check on
        admission (``node.app.updates``), and a set of updates this node already failed to
        close the round with does not count again until it changes."""
        if self.mempool.has_ordinary():
            return True
        meta = self.ledger.state.meta
        if not self._may_close(meta.height + 1, len(self._round_updates())):
            return False
        return self._unclosable != self._pending_key()

    def _round_updates(self) -> list[Tx]:
        return self.mempool.model_updates(self.ledger.state.meta.fl_round)[:MAX_ROUND_UPDATES]

    def _pending_key(self) -> tuple[int, frozenset[bytes]]:
        """The current round and the updates pending for it (what ``_unclosable`` records)."""
        round = self.ledger.state.meta.fl_round
        return round, frozenset(tx.hash for tx in self._round_updates())

    def _closing_updates(self, height: int) -> list[tuple[Tx, DecodedUpdate]]:
        out = []
        for tx in self._round_updates():
            upd = self._decode_payload(tx)
            if upd is not None:
                out.append((tx, upd))
        return out if self._may_close(height, len(out)) else []

    def _may_close(self, height: int, n: int) -> bool:
        fl = self.genesis.fl
        meta = self.ledger.state.meta
        if n >= fl.min_updates:
            return True
        return n >= 1 and height - meta.round_start_height >= fl.round_timeout_blocks

    def _seen(self, block_hash: bytes) -> None:
        self._first_seen.setdefault(block_hash, time.monotonic())
        while len(self._first_seen) > 64:
            self._first_seen.popitem(last=False)

    def _aggregate(
        self, base_hash: bytes, updates: list[tuple[Tx, DecodedUpdate]]
    ) -> AggregationResult:
        try:
            base = self.models.resolve(base_hash)
        except (KeyError, BlobError, ModelBytesError) as e:
            raise AggregationError(f"base model {base_hash.hex()[:16]} unavailable: {e}") from e
        try:
            result = aggregate(
                base, [(tx.hash, u) for tx, u in updates], self.agg, arch=self.models.arch
            )
        except ValueError as e:  # AggregationError, or ModelFormatError from the checks
            raise AggregationError(str(e)) from e
        return result

    # ----------------------------------------------------------------- validators

    def _remember(self, block: Block) -> None:
        self._by_bytes[block.encode()] = block
        while len(self._by_bytes) > 8:
            self._by_bytes.popitem(last=False)

    def _decode(self, data: bytes) -> Block | None:
        """The block ``data`` is, when it is one in canonical form (so no other bytes are
        that block); decoded blocks are remembered by hash only then."""
        block = self._by_bytes.get(data)
        if block is not None:
            return block
        try:
            block = Block.decode(data)
        except CodecError:
            return None
        if block.encode() != data:
            return None
        self._remember(block)
        return block

    def block_id(self, data: bytes) -> bytes | None:
        """The id (header hash) of the block ``data`` is, or None for bytes that are no
        block: the engine's ``EngineConfig.block_id``. The header commits to the
        transactions and the last commit, so exactly one byte string has a given id."""
        block = self._decode(data)
        return None if block is None else block.hash

    def process_proposal(self, height: int, block: AppBlock) -> bool:
        if self.block_id(block.data) != block.hash:
            # Not the block of that id: no verdict on the id is cached (see module doc).
            self._count("proposal_bytes_mismatch")
            return False
        cached = self._verdicts.get(block.hash)
        if cached is not None:
            return cached
        try:
            ok = self._check(height, block)
        except Exception:
            # A validation bug must cost this node its vote, never its process.
            log.exception("checking proposal %d failed", height)
            ok = False
        self._verdicts[block.hash] = ok
        while len(self._verdicts) > 64:
            self._verdicts.popitem(last=False)
        if not ok:
            self._count("proposal_rejected")
        return ok

    def _check(self, height: int, app_block: AppBlock) -> bool:
        self._seen(app_block.hash)
        block = self._decode(app_block.data)
        if block is None or block.hash != app_block.hash or block.height != height:
            return False
        state = self.ledger.state
        try:
            state.simulate_block(block)
        except BlockError as e:
            log.info("rejecting block %d: %s", height, e)
            return False
        updates = [tx for tx in block.txs if isinstance(tx.body, ModelUpdate)]
        if not updates:
            return True
        meta = state.meta
        decoded = []
        for tx in updates:
            u = self._decode_payload(tx)
            if u is None:
                log.info("rejecting block %d: update %s unusable", height, tx.hash.hex()[:16])
                return False
            decoded.append((tx, u))
        t0 = time.monotonic()
        try:
            result = self._aggregate(meta.global_model, decoded)
        except AggregationError as e:
            log.info("rejecting block %d: %s", height, e)
            return False
        self._agg_seconds[app_block.hash] = time.monotonic() - t0
        if result.model_hash != block.header.global_model_hash:
            log.warning("rejecting block %d: aggregated model hash mismatch", height)
            self._count("model_mismatch")
            return False
        self.models.put(result.params, round=block.header.fl_round)
        return True

    # ----------------------------------------------------------------- commit

    def finalize_block(self, height: int, block: AppBlock, commit: Commit) -> FinalizeResult:
        decoded = self._decode(block.data)
        if decoded is None or decoded.hash != block.hash or decoded.height != height:
            raise AppError(f"decided block {height} does not decode to its hash")
        # A block that passed process_proposal at this height had its last_commit
        # signatures verified against this very state (verdicts are cleared per block).
        checked = self._verdicts.get(block.hash) is True
        return self.apply_committed(decoded, commit, verify_commit=not checked)

    def apply_committed(
        self, block: Block, commit: Commit, *, verify_commit: bool = True
    ) -> FinalizeResult:
        """Apply a block proven by ``commit`` (consensus decision or block sync).

        The certificate is stored before the block: a process killed in between leaves a
        certificate for a height the ledger has not reached, which nothing reads and the
        block's commit replaces. The other order could leave the ledger's tip without a
        certificate anywhere on disk, and a lone validator could then never propose the
        next block (its ``last_commit`` is that certificate)."""
        prev_round = self.ledger.state.meta.fl_round
        if self.commits is not None:
            self.commits.put_commit(commit)
        try:
            app_hash, vupdates = self.ledger.commit_block(block, verify_commit=verify_commit)
        except BlockError as e:
            raise AppError(f"committed block {block.height} does not apply: {e}") from e
        self.mempool.update(block)
        self._verdicts.clear()
        n_updates = sum(1 for tx in block.txs if isinstance(tx.body, ModelUpdate))
        now = time.monotonic()
        event = CommittedBlock(
            block,
            commit,
            app_hash,
            block.header.fl_round != prev_round,
            n_updates,
            now - self._first_seen.get(block.hash, now),
            self._agg_seconds.pop(block.hash, 0.0),
        )
        self._agg_seconds.clear()
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("commit listener failed")
        return FinalizeResult(app_hash, tuple(vupdates))

    def commit(self) -> None:
        """Nothing left to do: ``Ledger.commit_block`` persisted the block atomically."""
