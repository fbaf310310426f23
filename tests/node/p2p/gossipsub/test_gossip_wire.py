"""RPC codec: round trips, interop with plain protobuf, and fuzzing of the decoder."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.p2p.gossipsub.messages import RPC, IHave, Message, PeerInfo, Prune, SubOpt
from node.p2p.gossipsub.wire import (
    MAX_CONTROL_ENTRIES,
    RPCDecodeError,
    decode_rpc,
    encode_rpc,
)
from node.p2p.pb import rpc_pb2
from node.p2p.varint import encode_uvarint

topics = st.text(min_size=1, max_size=20)
ids = st.binary(min_size=1, max_size=40)
opt_bytes = st.none() | st.binary(max_size=40)
messages = st.builds(
    Message,
    topic=topics,
    data=st.binary(max_size=200),
    from_=opt_bytes,
    seqno=opt_bytes,
    signature=opt_bytes,
    key=opt_bytes,
)
rpcs = st.builds(
    RPC,
    subscriptions=st.lists(st.builds(SubOpt, st.booleans(), topics), max_size=4),
    publish=st.lists(messages, max_size=4),
    ihave=st.lists(st.builds(IHave, topics, st.lists(ids, max_size=4)), max_size=3),
    iwant=st.lists(ids, max_size=4),
    graft=st.lists(topics, max_size=3),
    prune=st.lists(
        st.builds(
            Prune,
            topics,
            st.lists(st.builds(PeerInfo, ids, opt_bytes), max_size=3),
            st.none() | st.integers(0, 2**32),
        ),
        max_size=3,
    ),
    idontwant=st.lists(ids, max_size=3),
)


def message_to_pb(msg: Message, *, for_signing: bool = False) -> rpc_pb2.Message:
    """The protobuf runtime's Message for ``msg``: the reference the hand-spliced encoding
    must equal byte for byte."""
    m = rpc_pb2.Message()
    if msg.from_ is not None:
        setattr(m, "from", msg.from_)
    m.data = msg.data
    if msg.seqno is not None:
        m.seqno = msg.seqno
    m.topic = msg.topic
    if not for_signing:
        if msg.signature is not None:
            m.signature = msg.signature
        if msg.key is not None:
            m.key = msg.key
    return m


@given(rpcs)
def test_roundtrip(rpc: RPC) -> None:
    assert decode_rpc(encode_rpc(rpc)) == rpc


@given(rpcs)
def test_spliced_encoding_is_standard_protobuf(rpc: RPC) -> None:
    """Our per-message splicing parses exactly like a protobuf-built RPC."""
    pb = rpc_pb2.RPC.FromString(encode_rpc(rpc))
    assert len(pb.publish) == len(rpc.publish)
    for got, want in zip(pb.publish, rpc.publish, strict=True):
        assert got.data == want.data and got.topic == want.topic
        assert got.HasField("signature") == (want.signature is not None)


@given(st.binary(max_size=300))
def test_decoder_never_raises_anything_but_rpcdecodeerror(data: bytes) -> None:
    with contextlib.suppress(RPCDecodeError):
        decode_rpc(data)


@given(rpcs, st.data())
def test_mutated_valid_rpcs_are_decoded_or_rejected(rpc: RPC, data: st.DataObject) -> None:
    raw = bytearray(encode_rpc(rpc))
    if raw:
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(raw)))
        extra = data.draw(st.binary(max_size=8))
        raw = raw[:cut] + extra + raw[cut:] if data.draw(st.booleans()) else raw[:cut]
    with contextlib.suppress(RPCDecodeError):
        decode_rpc(bytes(raw))


def test_non_canonical_messages_decode_as_protobuf_says() -> None:
    """Fields out of order, repeated or unknown are what protobuf makes of them."""
    swapped = b"\x12\x06" + b"\x22\x01t" + b"\x12\x01x"  # topic before data
    repeated = b"\x12\x09" + b"\x12\x01x\x12\x01y\x22\x01t"
    unknown_field = b"\x22\x01z" + encode_rpc(RPC(publish=[Message("t", b"x")]))
    bad_control = encode_rpc(RPC(publish=[Message("t", b"x")])) + b"\x1a\x02\x0a\x05"
    assert decode_rpc(swapped).publish == [Message("t", b"x")]
    assert decode_rpc(repeated).publish == [Message("t", b"y")]
    assert decode_rpc(unknown_field).publish == [Message("t", b"x")]
    with pytest.raises(RPCDecodeError):
        decode_rpc(bad_control)


def test_topics_that_are_not_utf8_are_rejected() -> None:
    """proto2 strings are not checked by the runtime (it hands back bytes): a topic, a
    subscription or a control entry that is not UTF-8 is a malformed RPC, not a bytes
    topic for the router."""
    bad = b"\xff\xfe"
    pb = rpc_pb2.RPC()
    pb.publish.add(data=b"x").topic = "t"
    raw = pb.SerializeToString()
    for frame in (
        b"\x12\x04\x22\x02" + bad,  # a message's topic
        b"\x0a\x04\x12\x02" + bad,  # a subscription's topic
        b"\x1a\x06\x1a\x04\x0a\x02" + bad,  # a GRAFT's topic
        raw + b"\x0a\x04\x12\x02" + bad,
    ):
        with pytest.raises(RPCDecodeError):
            decode_rpc(frame)


def test_limits_are_enforced() -> None:
    with pytest.raises(RPCDecodeError):
        decode_rpc(encode_rpc(RPC(publish=[Message("t", b"x" * 101)])), max_message_size=100)
    with pytest.raises(RPCDecodeError):
        decode_rpc(b"\x00" * (17 * 1024 * 1024))
    with pytest.raises(RPCDecodeError):
        decode_rpc(encode_rpc(RPC(iwant=[b"i"] * (MAX_CONTROL_ENTRIES + 1))))
    with pytest.raises(RPCDecodeError):
        decode_rpc(encode_rpc(RPC(iwant=[b"i" * 300])))
    with pytest.raises(RPCDecodeError):
        decode_rpc(encode_rpc(RPC(graft=["t" * 2000])))
    # A message without a topic, and a field length prefix near 2**32.
    no_topic = rpc_pb2.RPC()
    no_topic.publish.add(data=b"x")
    with pytest.raises(RPCDecodeError):
        decode_rpc(no_topic.SerializeToString())
    with pytest.raises(RPCDecodeError):
        decode_rpc(b"\x12" + encode_uvarint(2**32 - 1) + b"abc")
    with pytest.raises(RPCDecodeError):
        decode_rpc(b"\x12\x05\xff\xff\xff\xff\xff")  # py-libp2p crashes on frames like this


def test_signed_encoding_matches_protobuf_and_framing() -> None:
    from node.p2p.gossipsub.signing import IdentitySigner, verify_message
    from node.p2p.gossipsub.wire import encode_rpc_framed, message_parts
    from node.p2p.peer_id import IdentityKey
    from node.p2p.varint import split_length_prefixed

    key = IdentityKey.from_seed(b"\x05" * 32)
    msg = Message("t", b"payload" * 100, from_=key.peer_id.to_bytes(), seqno=b"\0" * 7 + b"\1")
    IdentitySigner(key).sign(msg)
    want = message_to_pb(msg).SerializeToString(deterministic=True)
    assert b"".join(message_parts(msg)) == want
    assert verify_message(msg)
    rpc = RPC(publish=[msg], graft=["t"])
    framed = encode_rpc_framed(rpc)
    got = split_length_prefixed(framed, 1 << 20)
    assert got is not None and got[1] == len(framed) and decode_rpc(got[0]) == rpc


@given(messages)
def test_hand_spliced_message_fields_equal_protobuf_serialisation(msg: Message) -> None:
    from node.p2p.gossipsub.signing import SIGNING_PREFIX, signing_payload
    from node.p2p.gossipsub.wire import message_parts

    want = message_to_pb(msg).SerializeToString(deterministic=True)
    assert b"".join(message_parts(msg)) == want
    unsigned = message_to_pb(msg, for_signing=True).SerializeToString(deterministic=True)
    assert signing_payload(msg) == SIGNING_PREFIX + unsigned


@given(rpcs, st.lists(st.integers(0, 5000), max_size=3))
def test_framed_encoding_is_the_length_prefixed_rpc(rpc: RPC, sizes: list[int]) -> None:
    """What a stream carries is the varint length of the protobuf RPC, then the RPC."""
    from node.p2p.gossipsub.wire import encode_rpc_framed

    rpc.publish += [Message("big", bytes([n % 251]) * n, from_=b"a", seqno=b"s") for n in sizes]
    body = encode_rpc(rpc)
    assert encode_rpc_framed(rpc) == encode_uvarint(len(body)) + body
    assert decode_rpc(body) == rpc


@given(messages)
def test_cached_field_encoding_follows_changes_to_the_message(msg: Message) -> None:
    """The encoding of fields 1-4 is cached on the message (signing, verifying and each
    relay need it); it equals a fresh encoding, and a later change to a field is not
    masked by it."""
    from node.p2p.gossipsub.wire import signed_field_parts

    got = decode_rpc(encode_rpc(RPC(publish=[msg]))).publish[0]
    fresh = Message(got.topic, got.data, got.from_, got.seqno, got.signature, got.key)
    assert b"".join(signed_field_parts(got)) == b"".join(signed_field_parts(fresh))
    assert got.encoded is not None
    got.seqno = (got.seqno or b"") + b"\x01"
    changed = Message(got.topic, got.data, got.from_, got.seqno)
    assert b"".join(signed_field_parts(got)) == b"".join(signed_field_parts(changed))
    got.data = got.data + b"!"
    assert b"".join(signed_field_parts(got)) == b"".join(
        signed_field_parts(Message(got.topic, got.data, got.from_, got.seqno))
    )


def test_messages_of_every_size_sign_and_verify() -> None:
    """Every payload size signs and verifies, and a message changed after signing no
    longer verifies."""
    from node.p2p.gossipsub import signing
    from node.p2p.peer_id import IdentityKey

    signer = signing.IdentitySigner(IdentityKey.from_seed(b"\x07" * 32))
    for n in (0, 10, 5000, 60_000, 300_000):
        msg = Message("t", bytes([n % 251]) * n, from_=signer.author, seqno=n.to_bytes(8, "big"))
        signer.sign(msg)
        assert signing.verify_message(msg)
        msg.data = msg.data + b"!"
        assert not signing.verify_message(msg)
