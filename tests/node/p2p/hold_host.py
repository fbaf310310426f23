"""A victim host in its own process, for memory measurements from outside.

Listens on 127.0.0.1 with default limits and a ``/hold/1`` handler that never reads (an
application that has stopped reading: only the host's own limits bound what it keeps),
prints its dial address with peer ID on one line, and runs until its stdin closes.

    python -m tests.node.p2p.hold_host
"""

from __future__ import annotations

import asyncio
import sys

from node.p2p.connection import Stream
from node.p2p.host import Host
from node.p2p.multiaddr import Multiaddr
from node.p2p.peer_id import IdentityKey

HOLD = "/hold/1"


async def hold(stream: Stream) -> None:
    await asyncio.Event().wait()


async def main() -> None:
    host = Host(IdentityKey.generate(), listen=[Multiaddr.parse("/ip4/127.0.0.1/tcp/0")])
    host.set_stream_handler(HOLD, hold)
    async with host:
        print(host.listen_addrs[0].with_peer_id(host.peer_id), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
