"""Block sync: fetch missing blocks by height from peers, verify, apply; and checkpoints.

A late or restarted node asks peers for ``BlocksRequest(start, count)`` and gets blocks
with their commit certificates. Nothing a peer sends is trusted: each block must be the
next height, its certificate must be for exactly that block and carry precommits of more
than 2/3 of the power of the validator set the ledger itself says is in effect at that
height (``ValidatorSet.verify_commit``), and the block must then apply to the ledger. A
peer that fails any check is dropped from this sync pass and counted.

Block sync runs while the consensus engine is stopped: the engine then needs its state
for the height reached. A node that restarts resumes from its own checkpoint; one that
synced past it asks peers for theirs (``CHECKPOINT_PROTOCOL``) and syncs up to exactly the
checkpoint's height, so a chain that keeps moving cannot leave it one block off. That
opaque engine state (the proposer schedule) is trusted from the peer, the one place sync
does not verify; the validator sets always come from our ledger (a checkpoint naming
others is refused and its peer blamed), and every vote and commit is still verified
against them.

A running node can fall behind (a partition, a paused process, gossip lost in a
reconnect) further than the engine's own catch-up messages reach. ``BlockSync.probe``
asks one peer (``PROBE_PROTOCOL``) for the headers and certificates of the next
``PROBE_BLOCKS`` heights and checks the certificates without applying anything, and
``LagDetector`` decides from such probes when pausing consensus for a block sync is worth
it. Only certificates count as evidence, never a claimed tip alone: a peer that claims a
huge height without the certificates to back it makes this node do nothing but one small
request. A probe needs no blocks, so its replies are bounded by what a header and a
certificate of the largest validator set can take (``PROBE_MAX_BYTES``): any peer may be
asked once a second, and a reply of tens of MiB from each would stall the event loop.

What a peer sends is decoded and its certificates are checked off the event loop when
it is large (a batch of blocks), so consensus timers, gossip and RPC keep running while a
node syncs. A peer whose reply does not decode or does not verify misbehaved (an honest
one never serves that; a slow or unreachable one only fails): it is reported to the host
(``report_misbehaviour``, the scoring hooks) and disconnected.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Annotated, ClassVar, TypeVar

from consensus.types import Commit, CommitError
from node.core.codec import U32, U64, Bytes, CodecError, Record, Seq
from node.ledger.block import Block, Header
from node.p2p.host import Host
from node.p2p.multistream import MultistreamError
from node.p2p.peer_id import PeerID
from node.p2p.reqresp import HandlerError, ReqRespConfig, RequestError, RequestResponse
from node.store.commits import CommitStore
from node.store.ledger import Ledger

__all__ = [
    "BLOCKS_PROTOCOL",
    "CHECKPOINT_PROTOCOL",
    "PROBE_PROTOCOL",
    "BadSyncPeer",
    "BlockSync",
    "BlocksRequest",
    "BlocksResponse",
    "CatchUpPolicy",
    "CertifiedHeader",
    "CheckpointResponse",
    "InvalidSyncData",
    "LagDetector",
    "PeerCheckpoint",
    "Probe",
    "ProbeResponse",
    "SyncedBlock",
]

log = logging.getLogger(__name__)

BLOCKS_PROTOCOL = "/fedchain/blocks/1"
CHECKPOINT_PROTOCOL = "/fedchain/checkpoint/1"
PROBE_PROTOCOL = "/fedchain/probe/1"
MAX_BATCH = 64
RESPONSE_BUDGET = 16 << 20
MAX_RESPONSE = 64 << 20
# What a request to a peer can fail with because of that peer (or the link to it): a
# peer that does not speak the protocol at all fails negotiation, not the request.
PEER_FAULTS = (RequestError, CodecError, MultistreamError, ConnectionError, TimeoutError)
# Blocks a probe asks for. One certified block ahead is normal for a moment (the fastest
# peer committed first); two prove a real gap, and only then is a peer's claimed tip
# believed enough to sync at once.
PROBE_BLOCKS = 2
# A probe reply: PROBE_BLOCKS headers with certificates signed by up to MAX_VALIDATORS
# (about 110 KiB each at that size). Not a setting: less refuses honest replies of a big
# validator set, more serves nobody.
PROBE_MAX_BYTES = 256 << 10
# Replies at least this large are decoded in a worker thread: below it, decoding costs
# less than the hop to the thread.
DECODE_IN_THREAD_BYTES = 256 << 10


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


class CertifiedHeader(Record):
    header: Header
    commit: Commit


class ProbeResponse(Record):
    MAX_SIZE: ClassVar[int] = PROBE_MAX_BYTES
    tip: U64
    heights: Annotated[tuple[CertifiedHeader, ...], Seq(PROBE_BLOCKS)]


class CheckpointResponse(Record):
    height: U64
    data: Annotated[bytes, Bytes(0, 16 << 20)]


class BadSyncPeer(Exception):
    """A peer could not serve this node: unreachable, slow, or it sent something invalid."""


class InvalidSyncData(BadSyncPeer):
    """What the peer sent does not decode or does not verify: the peer misbehaved."""


Apply = Callable[[Block, Commit], object]
T = TypeVar("T")


@dataclass(frozen=True)
class Probe:
    """One peer's answer about the blocks after ``base`` (this node's height when asked).

    ``tip`` is the peer's claim and proves nothing; ``proven`` is the highest height whose
    certificate (for the block the peer sent) verified, ``base`` when none did.
    """

    peer: PeerID
    base: int
    tip: int
    proven: int


@dataclass(frozen=True)
class PeerCheckpoint:
    peer: PeerID
    height: int
    data: bytes


@dataclass(frozen=True)
class CatchUpPolicy:
    """When a running node should stop consensus and block-sync (see LagDetector).

    Behind means a peer proved a later height with a certificate. A gap the engine closes
    by itself (its peers answer a lagging node with decisions) shows as our height moving
    on, so we sync only when it has not moved for ``patience`` seconds while behind, or at
    once when two blocks are certified and the peer claims ``far_lag`` or more. After a
    sync that applied nothing the detector waits ``backoff`` seconds, doubling up to
    ``max_backoff``, so a vanishing peer cannot keep consensus paused.
    """

    patience: float = 4.0
    far_lag: int = 8
    backoff: float = 2.0
    max_backoff: float = 60.0


class LagDetector:
    """Sans-I/O: fed probe results and sync outcomes, says when to block-sync."""

    def __init__(self, policy: CatchUpPolicy | None = None) -> None:
        self.policy = policy or CatchUpPolicy()
        self.behind_since: float | None = None  # first proof of being behind at...
        self.behind_at = -1  # ...this height of ours
        self.failures = 0
        self.not_before = 0.0

    def observe(self, height: int, probe: Probe, now: float) -> bool:
        """True when this node, now at ``height``, should pause consensus and sync."""
        p = self.policy
        if self.behind_at != height:
            self.behind_since = None  # we moved on since the last proof
        lag = probe.proven - height
        if lag < 1:
            # This peer proves nothing (it may be as far behind as we are); a proof that
            # a later height is decided stays true until our height moves.
            return False
        if self.behind_since is None:
            self.behind_since, self.behind_at = now, height
        if now < self.not_before:
            return False
        if lag >= PROBE_BLOCKS and probe.tip - height >= p.far_lag:
            return True
        return now - self.behind_since >= p.patience

    def synced(self, applied: int, now: float) -> None:
        """Record the outcome of a sync started on our advice."""
        self.behind_since = None
        if applied > 0:
            self.failures = 0
            self.not_before = now
            return
        self.failures += 1
        p = self.policy
        self.not_before = now + min(p.max_backoff, p.backoff * 2 ** (self.failures - 1))


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
        probe_cfg = ReqRespConfig(max_request=64, max_response=PROBE_MAX_BYTES, timeout=timeout)
        self.probe_rr = RequestResponse(host, PROBE_PROTOCOL, self._serve_probe, probe_cfg)

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1

    # ----------------------------------------------------------------- serving

    def commit_for(self, height: int) -> Commit | None:
        c = self.commits.commit(height)
        if c is not None:
            return c
        nxt = self.ledger.store.block(height + 1)
        return None if nxt is None else nxt.last_commit

    def _served_heights(self, request: bytes, most: int) -> range:
        """The heights a blocks or probe request asks for, clamped to ``most`` and our tip."""
        try:
            req = BlocksRequest.decode(request)
        except CodecError as e:
            raise HandlerError(f"bad blocks request: {e}") from None
        end = min(req.start + min(req.count, most), self.ledger.height + 1)
        return range(max(1, req.start), end)

    async def _serve_blocks(self, peer: PeerID, request: bytes) -> bytes:
        tip = self.ledger.height
        out: list[SyncedBlock] = []
        used = 0
        for h in self._served_heights(request, MAX_BATCH):
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

    async def _serve_probe(self, peer: PeerID, request: bytes) -> bytes:
        tip = self.ledger.height
        out: list[CertifiedHeader] = []
        for h in self._served_heights(request, PROBE_BLOCKS):
            block = self.ledger.store.block(h)
            commit = self.commit_for(h)
            if block is None or commit is None:
                break
            out.append(CertifiedHeader(block.header, commit))
        return ProbeResponse(tip, tuple(out)).encode()

    async def _serve_checkpoint(self, peer: PeerID, request: bytes) -> bytes:
        cp = self.local_checkpoint()
        if cp is None:
            raise HandlerError("no checkpoint yet")
        return CheckpointResponse(cp[0], cp[1]).encode()

    # ----------------------------------------------------------------- syncing

    async def _verify(self, header: Header, commit: Commit, expected: int) -> None:
        """Raise InvalidSyncData unless ``header`` is of height ``expected`` and ``commit``
        certifies it with more than 2/3 of the power the ledger says is in effect there."""
        if header.height != expected:
            raise InvalidSyncData(f"block {header.height} where {expected} was asked")
        if commit.height != header.height or commit.block_hash != header.hash:
            raise InvalidSyncData(f"certificate is not for block {header.height}")
        try:
            vset = self.ledger.validator_set(header.height)
        except KeyError as e:  # our ledger cannot judge it: not the peer's fault
            raise BadSyncPeer(f"certificate of block {header.height}: {e}") from e
        try:
            await asyncio.to_thread(vset.verify_commit, self.ledger.state.chain_id, commit)
        except CommitError as e:
            raise InvalidSyncData(f"certificate of block {header.height}: {e}") from e

    async def _verify_and_apply(self, item: SyncedBlock) -> None:
        await self._verify(item.block.header, item.commit, self.ledger.height + 1)
        self.apply(item.block, item.commit)

    async def _request(
        self, rr: RequestResponse, peer: PeerID, start: int, count: int, timeout: float | None
    ) -> bytes:
        try:
            return await rr.request(peer, BlocksRequest(start, count).encode(), timeout=timeout)
        except PEER_FAULTS as e:
            raise BadSyncPeer(f"blocks from {start}: {e}") from e

    async def _blocks(self, peer: PeerID, start: int, count: int) -> BlocksResponse:
        raw = await self._request(self.blocks_rr, peer, start, count, None)
        try:
            if len(raw) < DECODE_IN_THREAD_BYTES:
                return BlocksResponse.decode(raw)
            return await asyncio.to_thread(BlocksResponse.decode, raw)
        except CodecError as e:
            raise InvalidSyncData(f"blocks from {start}: {e}") from e

    def _blame(self, peer: PeerID, error: InvalidSyncData) -> None:
        """A peer served sync data that does not decode or verify: report and drop it."""
        self._count("sync_invalid_data")
        log.warning("%s served invalid sync data, disconnecting: %s", peer, error)
        self.host.report_misbehaviour(peer, "sync_invalid_data")
        self.host.disconnect(peer, "sync_invalid_data")

    async def sync_from(self, peer: PeerID, until: int | None = None) -> int:
        """Pull blocks from ``peer`` until it has no more (or height ``until`` is
        reached); returns how many applied."""
        applied = 0
        while until is None or self.ledger.height < until:
            start = self.ledger.height + 1
            count = MAX_BATCH if until is None else min(MAX_BATCH, until - start + 1)
            resp = await self._blocks(peer, start, count)
            for item in resp.blocks[:count]:
                await self._verify_and_apply(item)
                applied += 1
            if not resp.blocks or self.ledger.height >= resp.tip:
                break
        return applied

    async def sync(self, until: int | None = None) -> int:
        """One pass over the connected peers in random order, stopping at height
        ``until`` when given; returns blocks applied."""
        peers = self.host.connected_peers()
        random.shuffle(peers)
        total = 0
        for peer in peers:
            if until is not None and self.ledger.height >= until:
                break
            try:
                total += await self.sync_from(peer, until)
            except BadSyncPeer as e:
                self._count("sync_bad_peer")
                log.warning("block sync with %s failed: %s", peer, e)
                if isinstance(e, InvalidSyncData):
                    self._blame(peer, e)
        return total

    async def probe(self, peer: PeerID, timeout: float = 5.0) -> Probe:
        """Ask ``peer`` for the headers and certificates after ours and verify them,
        applying nothing; raises BadSyncPeer when the peer cannot answer, InvalidSyncData
        (after blaming the peer) when its answer does not decode or verify."""
        base = self.ledger.height
        raw = await self._request(self.probe_rr, peer, base + 1, PROBE_BLOCKS, timeout)
        try:
            try:
                resp = ProbeResponse.decode(raw)
            except CodecError as e:
                raise InvalidSyncData(f"probe reply: {e}") from e
            proven = base
            if self.ledger.height != base:
                # We moved on while asking: the answer is about heights we have.
                return Probe(peer, base, resp.tip, proven)
            for item in resp.heights:
                # The ledger at ``base`` knows the validator sets of base+1 and base+2 (set
                # changes take effect two heights after the block deciding them).
                try:
                    await self._verify(item.header, item.commit, proven + 1)
                except InvalidSyncData:
                    self._count("probe_bad_peer")
                    raise
                proven += 1
        except InvalidSyncData as e:
            self._blame(peer, e)
            raise
        return Probe(peer, base, resp.tip, proven)

    async def fetch_checkpoint(
        self, min_height: int, exclude: Collection[PeerID] = ()
    ) -> PeerCheckpoint | None:
        """A peer's engine checkpoint for ``min_height`` or later (see the module
        docstring), from the first connected peer not in ``exclude`` that has one."""
        peers = [p for p in self.host.connected_peers() if p not in exclude]
        random.shuffle(peers)
        for peer in peers:
            try:
                resp = CheckpointResponse.decode(await self.checkpoint_rr.request(peer, b"?"))
            except PEER_FAULTS as e:
                log.debug("checkpoint from %s: %s", peer, e)
                continue
            if resp.height >= min_height:
                return PeerCheckpoint(peer, resp.height, resp.data)
        return None

    async def resume_from_checkpoint(
        self,
        build: Callable[[PeerCheckpoint], T | None],
        *,
        local: Callable[[], T | None] = lambda: None,
        tries: int = 10,
        pause: float = 0.5,
    ) -> T | None:
        """Sync to a peer's checkpoint and ``build`` the engine from it (see the module
        docstring); ``local`` is asked first each try (our own state may do). A peer whose
        checkpoint height we cannot reach, or whose bytes ``build`` refuses (None), is not
        asked again. Bounded by ``tries``; None when every try failed."""
        bad: set[PeerID] = set()
        for _ in range(tries):
            made = local()
            if made is not None:
                return made
            height = self.ledger.height
            cp = await self.fetch_checkpoint(height, exclude=bad)
            if cp is None:
                await self.sync()  # peers moved on, or none has a checkpoint yet
                await asyncio.sleep(pause)
                continue
            if cp.height > height:
                await self.sync(until=cp.height)
            if self.ledger.height != cp.height:
                log.info("could not sync to %s's checkpoint at height %d", cp.peer, cp.height)
                self._count("checkpoint_unreachable")
                bad.add(cp.peer)
                continue
            made = build(cp)
            if made is not None:
                return made
            # We are at exactly its height, so an honest peer's checkpoint matches our
            # ledger (its validator sets) and builds: these bytes are the peer's fault.
            self._count("checkpoint_unusable")
            self._blame(cp.peer, InvalidSyncData(f"checkpoint for height {cp.height} refused"))
            bad.add(cp.peer)
        return None
