from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.p2p import multistream as ms


def run(dialer: ms.Dialer, listener: ms.Listener) -> str:
    """Shuttle bytes between the two negotiators until the dialer has an answer."""
    for _ in range(10):
        listener.receive_data(dialer.data_to_send())
        answer = dialer.receive_data(listener.data_to_send())
        if answer is not None:
            return answer
    raise AssertionError("no agreement")


def test_wire_format_matches_spec() -> None:
    assert ms.encode_message("/multistream/1.0.0") == b"\x13/multistream/1.0.0\n"
    assert ms.encode_message("na") == b"\x03na\n"


def test_first_supported_protocol_wins_with_fallback() -> None:
    d = ms.Dialer(["/meshsub/1.1.0", "/meshsub/1.0.0"])
    lst = ms.Listener(lambda p: p == "/meshsub/1.0.0")
    assert run(d, lst) == "/meshsub/1.0.0"
    assert lst.selected == "/meshsub/1.0.0"


def test_no_common_protocol_fails() -> None:
    d = ms.Dialer(["/a", "/b"])
    lst = ms.Listener(lambda p: False)
    with pytest.raises(ms.NegotiationFailed):
        run(d, lst)


def test_bytes_after_agreement_are_left_over() -> None:
    d = ms.Dialer(["/noise"])
    lst = ms.Listener(lambda p: True)
    assert lst.receive_data(d.data_to_send() + b"\x00\x20handshake") == "/noise"
    assert lst.leftover == b"\x00\x20handshake"
    assert d.receive_data(lst.data_to_send() + b"reply") == "/noise"
    assert d.leftover == b"reply"


def test_byte_by_byte_delivery() -> None:
    d = ms.Dialer(["/x"])
    lst = ms.Listener(lambda p: p == "/x")
    for b in d.data_to_send():
        lst.receive_data(bytes([b]))
    assert lst.selected == "/x"
    out = lst.data_to_send()
    results = [d.receive_data(bytes([b])) for b in out]
    assert results[-1] == "/x"


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x0fGET / HTTP/1.1\n",
        b"\x13/multistream/2.0.0\n",
        b"\x05hello",  # no newline
        b"\xff\xff\xff\xff\x0f",  # length near 2**32
        b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80",  # endless varint
        b"\x00",
        b"\x03\xff\xfe\n",  # not UTF-8
    ],
)
def test_garbage_is_a_typed_error(garbage: bytes) -> None:
    lst = ms.Listener(lambda p: True)
    with pytest.raises(ms.MultistreamError):
        lst.receive_data(garbage)


def test_incomplete_message_waits_for_more_bytes() -> None:
    lst = ms.Listener(lambda p: True)
    assert lst.receive_data(b"GET / HTTP/1.1\r\n") is None  # 'G' announces 71 bytes
    assert lst.selected is None


def test_proposal_flood_is_cut_off() -> None:
    lst = ms.Listener(lambda p: False)
    lst.receive_data(ms.encode_message(ms.PROTOCOL_ID))
    with pytest.raises(ms.NegotiationFailed):
        for i in range(ms.MAX_PROPOSALS + 1):
            lst.receive_data(ms.encode_message(f"/p/{i}"))


@given(st.binary(max_size=300))
def test_fuzz_listener(data: bytes) -> None:
    lst = ms.Listener(lambda p: p == "/x")
    with contextlib.suppress(ms.MultistreamError):
        lst.receive_data(data)


@given(st.lists(st.binary(max_size=40), max_size=8))
def test_fuzz_dialer(chunks: list[bytes]) -> None:
    d = ms.Dialer(["/x", "/y"])
    try:
        for c in chunks:
            d.receive_data(c)
    except ms.MultistreamError:
        pass
