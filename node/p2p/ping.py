"""Ping (``/ipfs/ping/1.0.0``): echo 32-byte payloads to measure round trips and liveness."""

from __future__ import annotations

import asyncio
import os

from node.p2p.behaviour import HostAPI
from node.p2p.connection import Stream
from node.p2p.peer_id import PeerID

PROTOCOL_ID = "/ipfs/ping/1.0.0"
PING_LENGTH = 32


class PingError(ConnectionError):
    """The peer echoed something other than what we sent."""


async def handle_ping(stream: Stream) -> None:
    """Echo every 32-byte payload until the remote closes its side."""
    while True:
        try:
            payload = await stream.readexactly(PING_LENGTH)
        except asyncio.IncompleteReadError:
            return
        await stream.write(payload)


async def ping(host: HostAPI, peer: PeerID, count: int = 1, timeout: float = 10.0) -> list[float]:
    """Ping ``peer`` ``count`` times over one stream; returns the round-trip times in seconds."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        stream = await host.new_stream(peer, [PROTOCOL_ID])
        rtts: list[float] = []
        try:
            for _ in range(count):
                payload = os.urandom(PING_LENGTH)
                start = loop.time()
                await stream.write(payload)
                echo = await stream.readexactly(PING_LENGTH)
                if echo != payload:
                    raise PingError(f"{peer} echoed a different payload")
                rtts.append(loop.time() - start)
        except BaseException:
            stream.reset()
            raise
        await stream.close()
        return rtts
