"""Unsigned LEB128 varints and varint-length-prefixed messages, as every libp2p protocol uses.

Decoders are bounded: a varint longer than 9 bytes (more than 63 bits) or a length above
the caller's limit raises VarintError before any buffer of that size is allocated, so a
hostile length prefix near 2**32 or 2**64 costs the node nothing.
"""

from __future__ import annotations

MAX_VARINT_BYTES = 9


class VarintError(ValueError):
    """A varint is malformed, non-minimal, too long, or announces too large a message."""


_ONE_BYTE = [bytes([i]) for i in range(0x80)]


def encode_uvarint(n: int) -> bytes:
    # Lengths of up to 16 KiB (two bytes) are nearly every call; skip the loop for them.
    if 0 <= n < 0x80:
        return _ONE_BYTE[n]
    if 0x80 <= n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0:
        raise ValueError("uvarint must be non-negative")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_uvarint(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int] | None:
    """Decode a varint at ``pos``; return (value, next_pos), or None if ``buf`` ends first.

    Raises VarintError for more than 9 bytes or a non-minimal encoding (trailing 0x00
    continuation), which the multiformats spec forbids.
    """
    result = 0
    shift = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            return None
        b = buf[pos + i]
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and i > 0:
                raise VarintError("non-minimal varint encoding")
            return result, pos + i + 1
        shift += 7
    raise VarintError(f"varint longer than {MAX_VARINT_BYTES} bytes")


def length_prefixed(data: bytes) -> bytes:
    return encode_uvarint(len(data)) + data


def split_length_prefixed(
    buf: bytes | bytearray | memoryview, max_size: int
) -> tuple[bytes, int] | None:
    """Take one length-prefixed message from the start of ``buf``.

    Returns (message, bytes_consumed), or None if more bytes are needed; raises
    VarintError when the announced length exceeds ``max_size``.
    """
    head = decode_uvarint(buf, 0)
    if head is None:
        return None
    length, start = head
    if length > max_size:
        raise VarintError(f"message of {length} bytes exceeds the limit of {max_size}")
    if len(buf) - start < length:
        return None
    return bytes(buf[start : start + length]), start + length
