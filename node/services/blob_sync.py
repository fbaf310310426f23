"""Fetch blobs (update payloads, global models) from peers by their SHA-256, verified.

The name of a blob is its hash, so verification is one hash: a peer that answers with
other bytes is counted, skipped, and the next peer is asked. Requests go to connected
peers in random order, so one slow or lying peer cannot stall a validator that needs a
payload to vote.

A global model is a blob too: ``fetch_model`` also checks that the bytes parse as a model
of the chain's architecture before the model store keeps them, and keeps asking for a
while, because right after a round closes most peers are still aggregating it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Callable, Iterable

from node.p2p.host import Host
from node.p2p.peer_id import PeerID
from node.p2p.reqresp import HandlerError, ReqRespConfig, RequestError, RequestResponse
from node.store.blobs import BlobError, BlobStore
from node.store.models import ModelBytesError, ModelStore

__all__ = ["BLOB_PROTOCOL", "BlobSync", "BlobUnavailable"]

log = logging.getLogger(__name__)

BLOB_PROTOCOL = "/fedchain/blob/1"


class BlobUnavailable(Exception):
    """No connected peer served the blob with the right hash."""


class BlobSync:
    def __init__(
        self,
        host: Host,
        blobs: BlobStore,
        *,
        peers: Callable[[], list[PeerID]] | None = None,
        timeout: float = 20.0,
    ) -> None:
        self.host = host
        self.blobs = blobs
        self.peers = peers or host.connected_peers
        self.timeout = timeout
        self.counters: dict[str, int] = {}
        self.rr = RequestResponse(
            host,
            BLOB_PROTOCOL,
            self._serve,
            ReqRespConfig(max_request=32, max_response=blobs.max_blob_bytes, timeout=timeout),
        )

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1

    async def _serve(self, peer: PeerID, request: bytes) -> bytes:
        if len(request) != 32:
            raise HandlerError("a blob request is a 32-byte SHA-256")
        try:
            return self.blobs.get(request)
        except KeyError:
            raise HandlerError("blob not found") from None
        except BlobError as e:
            raise HandlerError(f"blob unavailable: {e}") from None

    async def fetch(self, digest: bytes) -> bytes:
        """The blob's bytes from some peer (not stored); raises BlobUnavailable."""
        peers = list(self.peers())
        random.shuffle(peers)
        for peer in peers:
            try:
                data = await self.rr.request(peer, digest, timeout=self.timeout)
            except RequestError as e:
                log.debug("blob %s from %s: %s", digest.hex()[:16], peer, e)
                continue
            if hashlib.sha256(data).digest() != digest:
                self._count("blob_wrong_bytes")
                self.host.count("blob_wrong_bytes", peer, digest.hex()[:16])
                continue
            self._count("blob_fetched")
            return data
        raise BlobUnavailable(f"no peer served blob {digest.hex()}")

    async def fetch_into_store(self, digests: Iterable[bytes], *, round: int | None = None) -> None:
        """Fetch every blob the store lacks and store it; raises BlobUnavailable.

        For update payloads, which peers can serve again: stored without fsync."""
        for d in digests:
            if not self.blobs.has(d):
                self.blobs.put(await self.fetch(d), round=round, durable=False)

    async def fetch_model(
        self, models: ModelStore, digest: bytes, round: int, *, tries: int = 20, pause: float = 1.0
    ) -> bool:
        """Fetch global model ``digest`` into ``models``, up to ``tries`` times ``pause``
        seconds apart; True once it is stored."""
        for _ in range(tries):
            try:
                data = await self.fetch(digest)
                models.put_bytes(data, digest, round=round)
                log.info("fetched global model %s for round %d", digest.hex()[:16], round)
                return True
            except (BlobUnavailable, ModelBytesError) as e:
                log.info("global model %s not fetched yet: %s", digest.hex()[:16], e)
                await asyncio.sleep(pause)
        return False
