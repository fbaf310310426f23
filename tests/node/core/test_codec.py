"""The canonical codec: one encoding per value, and a typed, located error for anything else."""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.core.codec import (
    I64,
    U8,
    U64,
    Bytes,
    Bytes20,
    CodecError,
    Record,
    Seq,
    Str,
    decode,
    sha256,
)


class Inner(Record):
    TAG: ClassVar[str] = "inner"
    n: U8


class Other(Record):
    TAG: ClassVar[str] = "other"
    s: Annotated[str, Str(8, "abc")]


class Sample(Record):
    MAX_SIZE: ClassVar[int] = 512
    a: U64
    b: I64
    flag: bool
    addr: Bytes20
    blob: Annotated[bytes, Bytes(0, 16)]
    maybe: U8 | None
    items: Annotated[tuple[Inner, ...], Seq(3)]
    kind: Inner | Other


def packed(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


samples = st.builds(
    Sample,
    st.integers(0, (1 << 64) - 1),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.booleans(),
    st.binary(min_size=20, max_size=20),
    st.binary(max_size=16),
    st.one_of(st.none(), st.integers(0, 255)),
    st.lists(st.builds(Inner, st.integers(0, 255)), max_size=3).map(tuple),
    st.one_of(st.builds(Inner, st.integers(0, 255)), st.builds(Other, st.text("abc", max_size=8))),
)


@settings(max_examples=300)
@given(samples)
def test_roundtrip_is_canonical(s: Sample) -> None:
    data = s.encode()
    assert Sample.decode(data) == s
    assert s.hash == sha256(data)
    # Field order is declaration order, so the encoding is a pure function of the value.
    assert list(msgpack.unpackb(data)) == [
        "a",
        "b",
        "flag",
        "addr",
        "blob",
        "maybe",
        "items",
        "kind",
    ]


BASE = Sample(1, -1, True, b"\x01" * 20, b"", None, (Inner(1),), Other("ab"))


def variant(**changes: object) -> bytes:
    obj = BASE._to_obj()
    obj.update(changes)
    return packed(obj)


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        (variant(a=-1), "a", "outside"),
        (variant(b="x"), "b", "expected integer"),
        (variant(flag=1), "flag", "expected bool"),
        (variant(addr=b"\x01" * 19), "addr", "expected 20 bytes"),
        (variant(addr="x" * 20), "addr", "expected bytes"),
        (variant(blob=b"x" * 17), "blob", "outside"),
        (variant(maybe=256), "maybe", "outside"),
        (variant(items=[{"n": 1}] * 4), "items", "at most 3"),
        (variant(items=[{"n": "x"}]), "items[0].n", "expected integer"),
        (variant(kind=["nope", {}]), "kind", "unknown kind"),
        (variant(kind=["other", {"s": "xyz"}]), "kind<other>.s", "outside the allowed"),
        (variant(kind=["inner", {"n": 1, "m": 2}]), "kind<inner>", "unknown field"),
        (variant(kind={"n": 1}), "kind", "expected [tag, body]"),
        (variant(extra=1), "", "unknown field"),
        (packed({k: v for k, v in BASE._to_obj().items() if k != "a"}), "", "missing field"),
        (packed([1, 2]), "", "expected Sample map"),
        (BASE.encode() + b"\x00", "", "trailing"),
        (b"\xc1", "", "malformed"),
        (b"", "", "malformed"),
        (b"\x00" * 513, "", "exceeds"),
        (variant(b=1.5), "b", "expected integer"),
    ],
)
def test_malformed_inputs_raise_codec_error_with_path(data: bytes, path: str, reason: str) -> None:
    with pytest.raises(CodecError) as ei:
        Sample.decode(data)
    assert ei.value.path == path
    assert reason in str(ei.value)


def test_non_canonical_forms_are_rejected() -> None:
    obj = BASE._to_obj()
    # A long integer encoding (uint64 for the value 1).
    long_int = BASE.encode().replace(b"\xa1a\x01", b"\xa1a\xcf" + (1).to_bytes(8, "big"), 1)
    assert msgpack.unpackb(long_int) == msgpack.unpackb(BASE.encode())
    with pytest.raises(CodecError, match="non-canonical"):
        Sample.decode(long_int)
    with pytest.raises(CodecError, match="non-canonical"):
        Sample.decode(packed(dict(reversed(list(obj.items())))))
    # An extension type is never accepted.
    with pytest.raises(CodecError, match="extension"):
        decode(Sample, msgpack.packb(msgpack.ExtType(1, b"x")))


def test_decode_rejects_non_bytes_and_honours_max_size() -> None:
    with pytest.raises(CodecError, match="expected bytes"):
        Sample.decode("text")  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="exceeds 10"):
        decode(Sample, BASE.encode(), max_size=10)
    assert decode(Sample, bytearray(BASE.encode())) == BASE


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        got = Sample.decode(data)
    except CodecError:
        return
    assert got.encode() == data
