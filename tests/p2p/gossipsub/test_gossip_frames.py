"""The chunked varint frame reader under arbitrary chunking, oversize and truncation."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.p2p.gossipsub.service import FrameReader
from node.p2p.streamio import MessageTooLarge
from node.p2p.varint import encode_uvarint, length_prefixed


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
