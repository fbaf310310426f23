"""Fuzzing of the remaining decoders: identify messages and length-prefixed stream reads."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.p2p.identify import IdentifyError, parse_message
from node.p2p.multiaddr import Multiaddr
from node.p2p.pb import identify_pb2
from node.p2p.peer_id import IdentityKey
from node.p2p.streamio import MessageTooLarge, read_length_prefixed
from node.p2p.varint import VarintError, encode_uvarint

KEY = IdentityKey.from_seed(bytes(32))


def identify_bytes(**fields: object) -> bytes:
    return identify_pb2.Identify(**fields).SerializeToString()  # type: ignore[arg-type]


def test_identify_round_trip_prefixed_and_raw() -> None:
    addr = Multiaddr.parse("/ip4/1.2.3.4/tcp/5")
    body = identify_bytes(
        publicKey=KEY.public_key_proto(),
        listenAddrs=[addr.to_bytes(), b"\xff\xff"],
        protocols=["/a"],
        agentVersion="x",
    )
    for data in (body, encode_uvarint(len(body)) + body):
        info = parse_message(data, KEY.peer_id)
        assert info.listen_addrs == [addr]
        assert info.bad_addrs == 1
        assert info.protocols == ["/a"]


def test_identify_key_must_match_peer() -> None:
    body = identify_bytes(publicKey=IdentityKey.generate().public_key_proto())
    with pytest.raises(IdentifyError, match="does not match"):
        parse_message(body, KEY.peer_id)


def test_identify_limits() -> None:
    body = identify_bytes(protocols=[f"/p{i}" for i in range(1000)])
    with pytest.raises(IdentifyError):
        parse_message(body, KEY.peer_id)


@given(st.binary(max_size=300))
def test_fuzz_identify(data: bytes) -> None:
    with contextlib.suppress(IdentifyError):
        parse_message(data, KEY.peer_id)


class FakeStream:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, max_bytes: int = 65536) -> bytes:
        out, self.data = self.data[:max_bytes], self.data[max_bytes:]
        return out

    async def readexactly(self, n: int) -> bytes:
        if len(self.data) < n:
            raise asyncio.IncompleteReadError(self.data, n)
        return await self.read(n)

    async def write(self, data: bytes) -> None:
        raise AssertionError("read-only")


async def test_length_prefix_near_2_32_is_refused_before_allocation() -> None:
    with pytest.raises(MessageTooLarge):
        await read_length_prefixed(FakeStream(encode_uvarint(2**32 - 1)), 1 << 20)
    with pytest.raises(VarintError):
        await read_length_prefixed(FakeStream(b"\xff" * 12), 1 << 20)
    assert await read_length_prefixed(FakeStream(b""), 10) is None
    assert await read_length_prefixed(FakeStream(b"\x03abcdef"), 10) == b"abc"


@given(st.binary(max_size=64))
def test_fuzz_length_prefixed(data: bytes) -> None:
    async def go() -> None:
        with contextlib.suppress(VarintError, EOFError):
            await read_length_prefixed(FakeStream(data), 32)

    asyncio.run(go())
