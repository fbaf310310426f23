from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.p2p.multiaddr import Multiaddr, MultiaddrError
from node.p2p.peer_id import IdentityKey

PEER = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"


@pytest.mark.parametrize(
    ("text", "hexbytes"),
    [
        ("/ip4/127.0.0.1/tcp/4001", "047f000001060fa1"),
        ("/ip6/::1/tcp/80", "2900000000000000000000000000000001060050"),
        ("/dns4/example.com/tcp/443", "360b6578616d706c652e636f6d0601bb"),
    ],
)
def test_known_binary_encodings(text: str, hexbytes: str) -> None:
    ma = Multiaddr.parse(text)
    assert str(ma) == text
    assert ma.to_bytes().hex() == hexbytes
    assert Multiaddr.from_bytes(bytes.fromhex(hexbytes)) == ma


def test_p2p_component_and_helpers() -> None:
    ma = Multiaddr.parse(f"/ip4/10.0.0.1/tcp/26656/p2p/{PEER}")
    assert str(ma.peer_id) == PEER
    assert ma.tcp_endpoint() == ("10.0.0.1", 26656)
    assert str(ma.without_peer_id()) == "/ip4/10.0.0.1/tcp/26656"
    other = IdentityKey.generate().peer_id
    assert ma.with_peer_id(other).peer_id == other
    assert Multiaddr.from_bytes(ma.to_bytes()) == ma
    assert Multiaddr.parse(f"/ip4/10.0.0.1/tcp/26656/ipfs/{PEER}") == ma  # legacy alias
    assert Multiaddr.from_tcp("::1", 5) == Multiaddr.parse("/ip6/::1/tcp/5")
    assert Multiaddr.from_tcp("localhost", 5) == Multiaddr.parse("/dns4/localhost/tcp/5")
    assert Multiaddr.parse("/ip6/0:0::1/tcp/5/") == Multiaddr.parse("/ip6/::1/tcp/5")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ip4/1.2.3.4",
        "/",
        "/ip4/256.0.0.1/tcp/1",
        "/ip4/1.2.3.4/tcp/65536",
        "/ip4/1.2.3.4/tcp/-1",
        "/ip4/1.2.3.4/tcp",
        "/ip6/zz::/tcp/1",
        "/foo/1",
        "/ip4/1.2.3.4/tcp/1/p2p/notapeer",
        "/dns4//tcp/1",
    ],
)
def test_bad_text_raises(text: str) -> None:
    with pytest.raises(MultiaddrError):
        Multiaddr.parse(text)


def test_non_tcp_address_is_not_dialable() -> None:
    with pytest.raises(MultiaddrError):
        Multiaddr.parse("/ip4/1.2.3.4/udp/1/quic-v1").tcp_endpoint()
    with pytest.raises(MultiaddrError):
        Multiaddr.parse(f"/p2p/{PEER}").tcp_endpoint()


@pytest.mark.parametrize(
    "raw", [b"", b"\x04\x7f", b"\x06", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x36\x05ab"]
)
def test_bad_binary_raises(raw: bytes) -> None:
    with pytest.raises(MultiaddrError):
        Multiaddr.from_bytes(raw)


@given(st.binary(max_size=120))
def test_fuzz_binary(raw: bytes) -> None:
    try:
        ma = Multiaddr.from_bytes(raw)
    except MultiaddrError:
        return
    assert Multiaddr.parse(str(ma)) == ma


@given(st.text(alphabet="/ip46dnstcpu0123456789.:abcfz", max_size=60))
def test_fuzz_text(text: str) -> None:
    try:
        ma = Multiaddr.parse(text)
    except MultiaddrError:
        return
    assert Multiaddr.from_bytes(ma.to_bytes()) == ma
