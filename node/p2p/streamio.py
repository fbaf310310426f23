"""Length-prefixed message I/O on streams, bounded before anything is allocated."""

from __future__ import annotations

from typing import Protocol

from node.p2p.varint import MAX_VARINT_BYTES, VarintError, decode_uvarint, encode_uvarint


class ByteStream(Protocol):
    async def read(self, max_bytes: int = 65536) -> bytes: ...
    async def readexactly(self, n: int) -> bytes: ...
    async def write(self, data: bytes) -> None: ...


class MessageTooLarge(VarintError):
    """A length prefix announced more bytes than the protocol allows."""


async def read_uvarint(stream: ByteStream) -> int | None:
    """A varint from the stream; None on a clean EOF before its first byte."""
    buf = bytearray()
    for _ in range(MAX_VARINT_BYTES):
        b = await stream.read(1)
        if not b:
            if buf:
                raise EOFError("stream ended inside a varint")
            return None
        buf += b
        if not b[0] & 0x80:
            head = decode_uvarint(buf, 0)
            assert head is not None
            return head[0]
    raise VarintError(f"varint longer than {MAX_VARINT_BYTES} bytes")


async def read_length_prefixed(stream: ByteStream, max_size: int) -> bytes | None:
    """One varint-length-prefixed message; None on EOF at a message boundary."""
    n = await read_uvarint(stream)
    if n is None:
        return None
    if n > max_size:
        raise MessageTooLarge(f"message of {n} bytes exceeds the limit of {max_size}")
    if n == 0:
        return b""
    return await stream.readexactly(n)


async def write_length_prefixed(stream: ByteStream, data: bytes) -> None:
    await stream.write(encode_uvarint(len(data)) + data)


async def read_to_eof(stream: ByteStream, max_size: int) -> bytes:
    """Everything until the remote closes; MessageTooLarge beyond ``max_size``."""
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return b"".join(parts)
        total += len(chunk)
        if total > max_size:
            raise MessageTooLarge(f"more than {max_size} bytes before end of stream")
        parts.append(chunk)
