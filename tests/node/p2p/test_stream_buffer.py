"""Property test of a stream's receive buffer: any chunking, any read sizes, pushed-back
bytes: the reader sees exactly the bytes sent, in order, and every byte is credited back
to the sender's window exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from node.p2p.connection import Stream
from node.p2p.peer_id import IdentityKey

PEER = IdentityKey.from_seed(bytes(32)).peer_id


class FakeConn:
    def __init__(self) -> None:
        self.peer = PEER
        self.credited = 0

    def consumed(self, sid: int, n: int) -> None:
        self.credited += n


@given(
    chunks=st.lists(st.binary(min_size=1, max_size=50), max_size=12),
    sizes=st.lists(st.integers(1, 70), min_size=1, max_size=20),
    unread=st.binary(max_size=10),
)
def test_reads_return_the_stream_in_order(
    chunks: list[bytes], sizes: list[int], unread: bytes
) -> None:
    async def go() -> None:
        conn: Any = FakeConn()
        s = Stream(conn, 1)
        for c in chunks:
            s._feed(c)
        s._feed_eof()
        out = bytearray()
        first = await s.read(sizes[0])
        s._unread(first[len(first) // 2 :] if unread == b"" else first)  # push back a tail
        pushed = len(first[len(first) // 2 :]) if unread == b"" else len(first)
        out += first[: len(first) - pushed]
        i = 1
        while data := await s.read(sizes[i % len(sizes)]):
            assert len(data) <= sizes[i % len(sizes)]
            out += data
            i += 1
        assert bytes(out) == b"".join(chunks)
        assert conn.credited == len(out)
        assert s._buffered == 0

    asyncio.run(go())
