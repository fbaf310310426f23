"""Request/response over libp2p streams, for block sync and model download.

One stream per request: the requester writes a varint-length-prefixed request and
half-closes; the responder answers with one status byte (0 ok, 1 error) followed by a
varint-length-prefixed body (the result, or a UTF-8 error message) and closes. Both sides
bound the sizes before allocating, time out, and cap how many requests run at once per
peer: an inbound request over the cap is refused with a stream reset (and counted), an
outbound one waits for a slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from node.p2p.connection import Stream, StreamReset
from node.p2p.host import Host
from node.p2p.multistream import MultistreamError
from node.p2p.peer_id import PeerID
from node.p2p.streamio import read_length_prefixed, write_length_prefixed
from node.p2p.varint import VarintError, length_prefixed

log = logging.getLogger(__name__)

STATUS_OK = 0
STATUS_ERROR = 1
MAX_ERROR_MESSAGE = 1024

Handler = Callable[[PeerID, bytes], Awaitable[bytes]]


class RequestError(Exception):
    """A request failed: timeout, reset, oversized or malformed response."""


class RemoteError(RequestError):
    """The responder handled the request and reported an error."""


class HandlerError(Exception):
    """Raised by a handler to send its message back to the requester as an error."""


@dataclass(frozen=True)
class ReqRespConfig:
    max_request: int = 1024 * 1024
    max_response: int = 64 * 1024 * 1024
    timeout: float = 30.0
    max_inbound_per_peer: int = 4
    max_outbound_per_peer: int = 4


class RequestResponse:
    """A request/response protocol on ``host``; ``handler`` serves inbound requests."""

    def __init__(
        self,
        host: Host,
        protocol: str,
        handler: Handler | None = None,
        config: ReqRespConfig | None = None,
    ) -> None:
        self.host = host
        self.protocol = protocol
        self.handler = handler
        self.config = config or ReqRespConfig()
        self._inbound: dict[PeerID, int] = {}
        self._outbound: dict[PeerID, asyncio.Semaphore] = {}
        if handler is not None:
            host.set_stream_handler(protocol, self._serve)
        host.add_notifee(lambda _p: None, self._forget_peer)

    def _forget_peer(self, peer: PeerID) -> None:
        sem = self._outbound.get(peer)
        if sem is not None and not sem.locked():
            del self._outbound[peer]

    async def request(self, peer: PeerID, data: bytes, *, timeout: float | None = None) -> bytes:
        """Send ``data`` to ``peer`` and return its response body."""
        if len(data) > self.config.max_request:
            raise RequestError(f"request of {len(data)} bytes exceeds {self.config.max_request}")
        sem = self._outbound.get(peer)
        if sem is None:
            sem = self._outbound[peer] = asyncio.Semaphore(self.config.max_outbound_per_peer)
        async with sem:
            try:
                async with asyncio.timeout(timeout or self.config.timeout):
                    return await self._do_request(peer, data)
            except TimeoutError as e:
                raise RequestError(f"request to {peer} timed out") from e
            except MultistreamError as e:
                # The peer does not serve this protocol (or garbled the negotiation):
                # callers try another peer rather than treat it as a local failure.
                raise RequestError(f"{peer} does not speak {self.protocol}: {e}") from e
            except (StreamReset, EOFError, ConnectionError, VarintError) as e:
                raise RequestError(f"request to {peer} failed: {e}") from e

    async def _do_request(self, peer: PeerID, data: bytes) -> bytes:
        stream = await self.host.new_stream(peer, [self.protocol], dial=True)
        try:
            await write_length_prefixed(stream, data)
            await stream.close()
            status = await stream.readexactly(1)
            limit = self.config.max_response if status[0] == STATUS_OK else MAX_ERROR_MESSAGE
            body = await read_length_prefixed(stream, limit)
        except BaseException:
            stream.reset()
            raise
        if body is None:
            raise RequestError(f"{peer} closed the stream without a response")
        if status[0] == STATUS_OK:
            return body
        if status[0] == STATUS_ERROR:
            raise RemoteError(body.decode("utf-8", "replace"))
        raise RequestError(f"{peer} sent unknown status {status[0]}")

    async def _serve(self, stream: Stream) -> None:
        assert self.handler is not None
        peer = stream.peer
        active = self._inbound.get(peer, 0)
        if active >= self.config.max_inbound_per_peer:
            self.host.count("reqresp_busy", peer, self.protocol)
            stream.reset()
            return
        self._inbound[peer] = active + 1
        try:
            async with asyncio.timeout(self.config.timeout):
                try:
                    request = await read_length_prefixed(stream, self.config.max_request)
                except VarintError as e:
                    self.host.count("reqresp_bad_request", peer, str(e))
                    stream.reset()
                    return
                if request is None:
                    stream.reset()
                    return
                try:
                    response = await self.handler(peer, request)
                    status = STATUS_OK
                except HandlerError as e:
                    response = str(e).encode()[:MAX_ERROR_MESSAGE]
                    status = STATUS_ERROR
                if status == STATUS_OK and len(response) > self.config.max_response:
                    self.host.count("reqresp_response_too_large", peer, self.protocol)
                    response = b"response too large"
                    status = STATUS_ERROR
                await stream.write(bytes([status]) + length_prefixed(response))
                await stream.close()
        except TimeoutError:
            self.host.count("reqresp_timeout", peer, self.protocol)
            stream.reset()
        finally:
            left = self._inbound[peer] - 1
            if left:
                self._inbound[peer] = left
            else:
                del self._inbound[peer]
