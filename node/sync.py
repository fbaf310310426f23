"""Block sync: fetch missing blocks by height from peers, verify, apply; and checkpoints.

A late or restarted node asks peers for ``BlocksRequest(start, count)`` and gets blocks
with their commit certificates. Nothing a peer sends is trusted: each block must be the
next height, its certificate must be for exactly that block and carry precommits of more
than 2/3 of the power of the validator set the ledger itself says is in effect at that
height (``ValidatorSet.verify_commit``), and the block must then apply to the ledger. A
peer that fails any check is dropped from this sync pass and counted.

Block sync runs before the consensus engine starts: the engine then needs its state for
the height reached. A node that restarts resumes from its own checkpoint; one that synced
past it asks peers for theirs (``CHECKPOINT_PROTOCOL``). That opaque engine state (the
proposer schedule) is trusted from the peer, the one place sync does not verify; every
vote and commit is still verified against the ledger's validator sets.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Annotated, ClassVar

from consensus.types import Commit, CommitError
from node.codec import U32, U64, Bytes, CodecError, Record, Seq
from node.commit_store import CommitStore
from node.ledger.block import Block
from node.ledger.ledger import Ledger
from node.p2p.host import Host
from node.p2p.peer_id import PeerID
from node.p2p.reqresp import HandlerError, ReqRespConfig, RequestError, RequestResponse

__all__ = [
    "BLOCKS_PROTOCOL",
    "CHECKPOINT_PROTOCOL",
    "BadSyncPeer",
    "BlockSync",
    "BlocksRequest",
    "BlocksResponse",
    "CheckpointResponse",
    "SyncedBlock",
]

log = logging.getLogger(__name__)

BLOCKS_PROTOCOL = "/fedchain/blocks/1"
CHECKPOINT_PROTOCOL = "/fedchain/checkpoint/1"
MAX_BATCH = 64
RESPONSE_BUDGET = 16 << 20
MAX_RESPONSE = 64 << 20


class BlocksRequest(Record):
    start: U64
    count: U32


class SyncedBlock(Record):
    block: Block
    commit: Commit


class BlocksResponse(Record):
    MAX_SIZE: ClassVar[int] = MAX_RESPONSE
    tip: U64
    blocks: Annotated[tuple[SyncedBlock, ...], Seq(MAX_BATCH)]


class CheckpointResponse(Record):
    height: U64
    data: Annotated[bytes, Bytes(0, 16 << 20)]


class BadSyncPeer(Exception):
    """A peer served something that does not verify."""


Apply = Callable[[Block, Commit], None]


class BlockSync:
    def __init__(
        self,
        host: Host,
        ledger: Ledger,
        commits: CommitStore,
        apply: Apply,
        *,
        checkpoint: Callable[[], tuple[int, bytes] | None],
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.ledger = ledger
        self.commits = commits
        self.apply = apply
        self.local_checkpoint = checkpoint
        self.counters: dict[str, int] = {}
        cfg = ReqRespConfig(max_request=64, max_response=MAX_RESPONSE, timeout=timeout)
        self.blocks_rr = RequestResponse(host, BLOCKS_PROTOCOL, self._serve_blocks, cfg)
        self.checkpoint_rr = RequestResponse(host, CHECKPOINT_PROTOCOL, self._serve_checkpoint, cfg)

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1

    # ----------------------------------------------------------------- serving

    def commit_for(self, height: int) -> Commit | None:
        c = self.commits.commit(height)
        if c is not None:
            return c
        nxt = self.ledger.store.block(height + 1)
        return None if nxt is None else nxt.last_commit

    async def _serve_blocks(self, peer: PeerID, request: bytes) -> bytes:
        try:
            req = BlocksRequest.decode(request)
        except CodecError as e:
            raise HandlerError(f"bad blocks request: {e}") from None
        tip = self.ledger.height
        out: list[SyncedBlock] = []
        used = 0
        for h in range(max(1, req.start), min(req.start + min(req.count, MAX_BATCH), tip + 1)):
            block = self.ledger.store.block(h)
            commit = self.commit_for(h)
            if block is None or commit is None:
                break
            item = SyncedBlock(block, commit)
            size = len(item.encode())
            if out and used + size > RESPONSE_BUDGET:
                break
            out.append(item)
            used += size
        return BlocksResponse(tip, tuple(out)).encode()

    async def _serve_checkpoint(self, peer: PeerID, request: bytes) -> bytes:
        cp = self.local_checkpoint()
        if cp is None:
            raise HandlerError("no checkpoint yet")
        return CheckpointResponse(cp[0], cp[1]).encode()

    # ----------------------------------------------------------------- syncing

    def _verify_and_apply(self, item: SyncedBlock) -> None:
        block, commit = item.block, item.commit
        expected = self.ledger.height + 1
        if block.height != expected:
            raise BadSyncPeer(f"block {block.height} where {expected} was asked")
        if commit.height != block.height or commit.block_hash != block.hash:
            raise BadSyncPeer(f"certificate is not for block {block.height}")
        try:
            vset = self.ledger.validator_set(block.height)
            vset.verify_commit(self.ledger.state.chain_id, commit)
        except (CommitError, KeyError) as e:
            raise BadSyncPeer(f"certificate of block {block.height}: {e}") from e
        self.apply(block, commit)

    async def sync_from(self, peer: PeerID) -> int:
        """Pull blocks from ``peer`` until it has no more; returns how many applied."""
        applied = 0
        while True:
            start = self.ledger.height + 1
            try:
                raw = await self.blocks_rr.request(peer, BlocksRequest(start, MAX_BATCH).encode())
                resp = BlocksResponse.decode(raw)
            except (RequestError, CodecError) as e:
                raise BadSyncPeer(f"blocks from {start}: {e}") from e
            for item in resp.blocks:
                self._verify_and_apply(item)
                applied += 1
            if not resp.blocks or self.ledger.height >= resp.tip:
                return applied

    async def sync(self) -> int:
        """One pass over the connected peers in random order; returns blocks applied."""
        peers = self.host.connected_peers()
        random.shuffle(peers)
        total = 0
        for peer in peers:
            try:
                total += await self.sync_from(peer)
            except BadSyncPeer as e:
                self._count("sync_bad_peer")
                log.warning("block sync with %s failed: %s", peer, e)
        return total

    async def fetch_checkpoint(self, height: int) -> bytes | None:
        """A peer's engine checkpoint for exactly ``height`` (see the module docstring)."""
        peers = self.host.connected_peers()
        random.shuffle(peers)
        for peer in peers:
            try:
                resp = CheckpointResponse.decode(await self.checkpoint_rr.request(peer, b"?"))
            except (RequestError, CodecError) as e:
                log.debug("checkpoint from %s: %s", peer, e)
                continue
            if resp.height == height:
                return resp.data
        return None
