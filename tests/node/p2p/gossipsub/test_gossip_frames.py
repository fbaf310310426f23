"""The chunked varint frame reader under arbitrary chunking, oversize and truncation."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.p2p.gossipsub.frames import FrameParser
from node.p2p.streamio import ByteStream, MessageTooLarge
from node.p2p.varint import encode_uvarint, length_prefixed


class FrameReader:
    """Varint-length-prefixed frames from a stream, read in large chunks: a FrameParser
    driven by ``read`` (the service feeds its parser from the stream's receiver instead).

    A length above ``max_size`` raises MessageTooLarge as soon as the prefix is complete,
    before any of the announced bytes are awaited.
    """

    CHUNK = 1 << 20

    def __init__(self, stream: ByteStream, max_size: int) -> None:
        self._stream = stream
        self._parser = FrameParser(max_size)
        self._ready: deque[memoryview] = deque()

    async def next(self) -> bytes | None:
        """The next frame; None at a clean EOF between frames."""
        while not self._ready:
            chunk = await self._stream.read(self.CHUNK)
            if not chunk:
                if not self._parser.at_boundary():
                    raise EOFError("stream ended inside an RPC")
                return None
            self._ready.extend(self._parser.feed(chunk))
        return bytes(self._ready.popleft())


class ChunkStream:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    async def read(self, max_bytes: int = 65536) -> bytes:
        if not self.chunks:
            return b""
        c = self.chunks.pop(0)
        if len(c) > max_bytes:
            self.chunks.insert(0, c[max_bytes:])
            c = c[:max_bytes]
        return c


def chop(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


async def read_all(reader: FrameReader) -> list[bytes]:
    out = []
    while (f := await reader.next()) is not None:
        out.append(f)
    return out


@given(st.lists(st.binary(max_size=300), max_size=20), st.lists(st.integers(0, 10_000)))
def test_frames_survive_any_chunking(frames: list[bytes], cuts: list[int]) -> None:
    data = b"".join(length_prefixed(f) for f in frames)
    reader = FrameReader(ChunkStream(chop(data, cuts)), 1000)  # type: ignore[arg-type]
    assert asyncio.run(read_all(reader)) == frames


def test_oversize_prefix_is_refused_before_its_bytes_arrive() -> None:
    reader = FrameReader(ChunkStream([encode_uvarint(2**32 - 1)]), 1000)  # type: ignore[arg-type]
    with pytest.raises(MessageTooLarge):
        asyncio.run(reader.next())


def test_truncated_frame_is_an_eof_error() -> None:
    reader = FrameReader(ChunkStream([encode_uvarint(10) + b"abc"]), 1000)  # type: ignore[arg-type]
    with pytest.raises(EOFError):
        asyncio.run(reader.next())


@given(st.lists(st.binary(max_size=300), max_size=20), st.lists(st.integers(0, 10_000)))
def test_returned_frames_stay_intact_while_later_chunks_are_fed(
    frames: list[bytes], cuts: list[int]
) -> None:
    """A frame completed in the parser's buffer is handed out as a view of a buffer the
    parser retires: feeding more chunks must never change a frame returned earlier."""
    parser = FrameParser(1000)
    got: list[memoryview] = []
    for chunk in chop(b"".join(length_prefixed(f) for f in frames), cuts):
        got += parser.feed(bytearray(chunk))
    assert [bytes(v) for v in got] == frames
    assert parser.at_boundary()
