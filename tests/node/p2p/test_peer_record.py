from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.p2p.multiaddr import Multiaddr
from node.p2p.pb import envelope_pb2
from node.p2p.peer_id import IdentityKey
from node.p2p.peer_record import PeerRecordError, open_record, seal
from tests.helpers import dial_addr, wait_for

KEY = IdentityKey.from_seed(bytes(32))
ADDR = Multiaddr.parse("/ip4/10.1.2.3/tcp/26656")


def test_seal_and_open() -> None:
    rec = open_record(seal(KEY, [ADDR, ADDR.with_peer_id(KEY.peer_id)], 5))
    assert rec.peer == KEY.peer_id and rec.seq == 5 and rec.addrs == [ADDR, ADDR]


def test_tampered_or_foreign_records_are_rejected() -> None:
    env = envelope_pb2.Envelope()
    env.ParseFromString(seal(KEY, [ADDR], 1))
    env.payload = env.payload.replace(
        ADDR.to_bytes(), Multiaddr.parse("/ip4/6.6.6.6/tcp/1").to_bytes()
    )
    with pytest.raises(PeerRecordError, match="signature"):
        open_record(env.SerializeToString())
    # A record for peer A signed (validly) with B's key.
    other = IdentityKey.generate()
    env.ParseFromString(seal(other, [ADDR], 1))
    forged = envelope_pb2.Envelope()
    forged.ParseFromString(seal(KEY, [ADDR], 1))
    forged.public_key.CopyFrom(env.public_key)
    with pytest.raises(PeerRecordError):
        open_record(forged.SerializeToString())
    with pytest.raises(PeerRecordError):
        open_record(b"\x12\x02\x03\x02")  # wrong payload type


@given(st.binary(max_size=300))
def test_fuzz_open_record(data: bytes) -> None:
    with contextlib.suppress(PeerRecordError):
        open_record(data)


async def test_identify_carries_records_and_px_uses_them(make_host: Any) -> None:
    a, b, c = await make_host(), await make_host(), await make_host()
    await b.connect(dial_addr(c))
    record = await wait_for(lambda: b.peerstore.record(c.peer_id), what="c's record")
    assert open_record(record).addrs == c.listen_addrs
    # b prunes a and suggests c (GossipSub PX): a knew nothing about c before.
    assert a.peerstore.addrs(c.peer_id) == []
    a.add_px_peers([(c.peer_id, record), (a.peer_id, None)])
    await wait_for(lambda: c.peer_id in a.connected_peers(), what="a dialing c")
    # A record that does not belong to the suggested peer is refused and counted.
    a.add_px_peers([(b.peer_id, record)])
    assert a.counters["peer_record_invalid"] == 1
