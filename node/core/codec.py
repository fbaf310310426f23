"""Canonical, schema-checked msgpack encoding for everything that is hashed or signed.

Consensus needs every node to derive the same bytes (and so the same hash) from the same
object, and it must never trust what arrives from the network. So each wire type is a frozen
dataclass whose annotations are its schema:

    class Transfer(Record):
        to: Bytes20
        amount: U64

A record encodes as a msgpack map whose keys are the field names in declaration order.
Integers use msgpack's shortest form, byte strings use ``bin``, text uses ``str``; floats,
extension types and maps with other keys are never produced and never accepted. Decoding
checks the whole-message size, every field's type and bounds, rejects unknown and missing
fields and trailing bytes, and finally re-encodes the result and compares it with the input,
which rejects every non-canonical form (long integer encodings, reordered keys, ``str`` for
``bin`` ...) with a single rule instead of a list of special cases.

Unions of records (``A | B``) encode as ``[tag, map]`` using each record's ``TAG``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, ClassVar, TypeVar, dataclass_transform

import msgpack

__all__ = [
    "I64",
    "U8",
    "U16",
    "U32",
    "U64",
    "Bytes",
    "Bytes20",
    "Bytes32",
    "Bytes64",
    "CodecError",
    "Int",
    "Record",
    "Seq",
    "Str",
    "decode",
    "encode",
    "sha256",
]


class CodecError(ValueError):
    """Raised for any input that is not the canonical encoding of a valid object.

    ``path`` names the offending field (``"txs[3].body.amount"``) so that logs and RPC
    errors say exactly what was wrong.
    """

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message)


# --------------------------------------------------------------------------- constraints


@dataclass(frozen=True)
class Int:
    """Integer bounds (inclusive)."""

    lo: int
    hi: int


@dataclass(frozen=True)
class Bytes:
    """Byte-string length bounds (inclusive)."""

    min_len: int = 0
    max_len: int = 1 << 20


@dataclass(frozen=True)
class Str:
    """Text length bound in UTF-8 bytes, optionally restricted to an alphabet."""

    max_len: int = 256
    charset: str | None = None


@dataclass(frozen=True)
class Seq:
    """Bound on the number of elements of a tuple field."""

    max_items: int


U8 = Annotated[int, Int(0, (1 << 8) - 1)]
U16 = Annotated[int, Int(0, (1 << 16) - 1)]
U32 = Annotated[int, Int(0, (1 << 32) - 1)]
U64 = Annotated[int, Int(0, (1 << 64) - 1)]
I64 = Annotated[int, Int(-(1 << 63), (1 << 63) - 1)]
Bytes20 = Annotated[bytes, Bytes(20, 20)]
Bytes32 = Annotated[bytes, Bytes(32, 32)]
Bytes64 = Annotated[bytes, Bytes(64, 64)]

DEFAULT_MAX_MESSAGE = 4 << 20

# A converter turns a decoded msgpack value into a checked Python value, or raises.
_Conv = Callable[[Any, str], Any]
# An unconverter turns a Python value into the msgpack value that encodes it.
_Unconv = Callable[[Any], Any]


def _type_name(v: Any) -> str:
    return type(v).__name__


def _int_conv(lo: int, hi: int) -> _Conv:
    def conv(v: Any, path: str) -> int:
        if type(v) is not int:
            raise CodecError(f"expected integer, got {_type_name(v)}", path)
        if v < lo or v > hi:
            raise CodecError(f"integer {v} outside [{lo}, {hi}]", path)
        return v

    return conv


def _bool_conv(v: Any, path: str) -> bool:
    if type(v) is not bool:
        raise CodecError(f"expected bool, got {_type_name(v)}", path)
    return v


def _bytes_conv(c: Bytes) -> _Conv:
    def conv(v: Any, path: str) -> bytes:
        if type(v) is not bytes:
            raise CodecError(f"expected bytes, got {_type_name(v)}", path)
        if not c.min_len <= len(v) <= c.max_len:
            if c.min_len == c.max_len:
                raise CodecError(f"expected {c.min_len} bytes, got {len(v)}", path)
            raise CodecError(f"byte length {len(v)} outside [{c.min_len}, {c.max_len}]", path)
        return v

    return conv


def _str_conv(c: Str) -> _Conv:
    allowed = frozenset(c.charset) if c.charset is not None else None

    def conv(v: Any, path: str) -> str:
        if type(v) is not str:
            raise CodecError(f"expected text, got {_type_name(v)}", path)
        if len(v.encode("utf-8")) > c.max_len:
            raise CodecError(f"text longer than {c.max_len} bytes", path)
        if allowed is not None and not allowed.issuperset(v):
            raise CodecError("text contains characters outside the allowed set", path)
        return v

    return conv


def _identity(v: Any) -> Any:
    return v


def _build(tp: Any, owner: str) -> tuple[_Conv, _Unconv]:
    """Compile a type annotation into a (decode-converter, encode-unconverter) pair."""
    constraint: Any = None
    if typing.get_origin(tp) is Annotated:
        args = typing.get_args(tp)
        tp, constraint = args[0], args[1]
    origin = typing.get_origin(tp)

    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        if type(None) in members:
            rest = [m for m in members if m is not type(None)]
            inner_tp: Any = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007
            if constraint is not None:
                inner_tp = Annotated[inner_tp, constraint]
            iconv, iun = _build(inner_tp, owner)

            def opt_conv(v: Any, path: str) -> Any:
                return None if v is None else iconv(v, path)

            def opt_un(v: Any) -> Any:
                return None if v is None else iun(v)

            return opt_conv, opt_un
        return _union(members, owner)

    if tp is bool:
        return _bool_conv, _identity
    if tp is int:
        if not isinstance(constraint, Int):
            raise TypeError(f"{owner}: int fields need an Int bound (use U64, I64 ...)")
        return _int_conv(constraint.lo, constraint.hi), _identity
    if tp is bytes:
        return _bytes_conv(constraint if isinstance(constraint, Bytes) else Bytes()), _identity
    if tp is str:
        return _str_conv(constraint if isinstance(constraint, Str) else Str()), _identity
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{owner}: only tuple[T, ...] sequences are supported")
        if not isinstance(constraint, Seq):
            raise TypeError(f"{owner}: tuple fields need a Seq(max_items) bound")
        econv, eun = _build(args[0], owner)
        limit = constraint.max_items
        plain_elements = eun is _identity

        def seq_conv(v: Any, path: str) -> tuple[Any, ...]:
            if type(v) is not list:
                raise CodecError(f"expected array, got {_type_name(v)}", path)
            if len(v) > limit:
                raise CodecError(f"{len(v)} items, at most {limit} allowed", path)
            return tuple(econv(x, f"{path}[{i}]") for i, x in enumerate(v))

        def seq_un(v: Any) -> list[Any]:
            return list(v) if plain_elements else [eun(x) for x in v]

        return seq_conv, seq_un
    if isinstance(tp, type) and issubclass(tp, Record):
        rec: type[Record] = tp

        def rec_conv(v: Any, path: str) -> Record:
            return rec._from_obj(v, path)

        def rec_un(v: Any) -> Any:
            return v._to_obj()

        return rec_conv, rec_un
    raise TypeError(f"{owner}: unsupported field type {tp!r}")


def _union(members: tuple[Any, ...], owner: str) -> tuple[_Conv, _Unconv]:
    by_tag: dict[str, type[Record]] = {}
    for m in members:
        if not (isinstance(m, type) and issubclass(m, Record)) or not getattr(m, "TAG", ""):
            raise TypeError(f"{owner}: union members must be Records with a TAG")
        if m.TAG in by_tag:
            raise TypeError(f"{owner}: duplicate union tag {m.TAG!r}")
        by_tag[m.TAG] = m

    def conv(v: Any, path: str) -> Record:
        if type(v) is not list or len(v) != 2 or type(v[0]) is not str:
            raise CodecError("expected [tag, body]", path)
        cls = by_tag.get(v[0])
        if cls is None:
            raise CodecError(f"unknown kind {v[0]!r}", path)
        return cls._from_obj(v[1], f"{path}<{v[0]}>")

    def un(v: Any) -> list[Any]:
        return [v.TAG, v._to_obj()]

    return conv, un


# --------------------------------------------------------------------------- records

R = TypeVar("R", bound="Record")


@dataclass_transform(frozen_default=True)
class Record:
    """Base for every canonically encoded type. Subclasses become frozen dataclasses."""

    TAG: ClassVar[str] = ""
    MAX_SIZE: ClassVar[int] = DEFAULT_MAX_MESSAGE
    _schema: ClassVar[tuple[tuple[str, _Conv, _Unconv], ...] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclass(frozen=True)(cls)
        cls._schema = None

    @classmethod
    def _fields(cls) -> tuple[tuple[str, _Conv, _Unconv], ...]:
        schema = cls.__dict__.get("_schema")
        if schema is None:
            hints = typing.get_type_hints(cls, include_extras=True)
            built = []
            for f in dataclasses.fields(cls):  # type: ignore[arg-type]
                conv, un = _build(hints[f.name], f"{cls.__name__}.{f.name}")
                built.append((f.name, conv, un))
            schema = tuple(built)
            cls._schema = schema
        return schema

    @classmethod
    def _from_obj(cls: type[R], obj: Any, path: str = "") -> R:
        if type(obj) is not dict:
            raise CodecError(f"expected {cls.__name__} map, got {_type_name(obj)}", path)
        fields = cls._fields()
        if len(obj) != len(fields):
            known = {name for name, _, _ in fields}
            unknown = [k for k in obj if k not in known]
            if unknown:
                raise CodecError(f"unknown field {unknown[0]!r} in {cls.__name__}", path)
        values = {}
        for name, conv, _ in fields:
            if name not in obj:
                raise CodecError(f"missing field {name!r} in {cls.__name__}", path)
            values[name] = conv(obj[name], f"{path}.{name}" if path else name)
        if len(obj) != len(fields):
            raise CodecError(f"unexpected fields in {cls.__name__}", path)
        inst = cls(**values)
        inst._check(path)
        return inst

    def _check(self, path: str) -> None:
        """Cross-field validation hook for subclasses; raise CodecError on failure."""

    def _to_obj(self) -> dict[str, Any]:
        return {name: un(getattr(self, name)) for name, _, un in self._fields()}

    def encode(self) -> bytes:
        """The canonical bytes of this object."""
        return _pack(self._to_obj())

    @classmethod
    def decode(cls: type[R], data: bytes) -> R:
        """Parse canonical bytes, raising CodecError for anything else."""
        return decode(cls, data)

    @cached_property
    def hash(self) -> bytes:
        """SHA-256 of the canonical encoding; the identity of this object everywhere."""
        return sha256(self.encode())

    def replace(self: R, **changes: Any) -> R:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


_packer_opts: dict[str, Any] = {"use_bin_type": True, "strict_types": True}


def _pack(obj: Any) -> bytes:
    try:
        return msgpack.packb(obj, **_packer_opts)
    except (TypeError, ValueError, OverflowError) as e:  # a bug in our own object
        raise CodecError(f"cannot encode: {e}") from e


def _reject_ext(code: int, data: bytes) -> Any:
    raise CodecError(f"msgpack extension type {code} is not allowed")


def decode(cls: type[R], data: bytes, *, max_size: int | None = None) -> R:
    """Decode ``data`` as ``cls``; every failure is a CodecError naming the cause."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {_type_name(data)}")
    limit = cls.MAX_SIZE if max_size is None else max_size
    if len(data) > limit:
        raise CodecError(f"{cls.__name__} message of {len(data)} bytes exceeds {limit}")
    data = bytes(data)
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_reject_ext,
        )
    except CodecError:
        raise
    except msgpack.ExtraData as e:
        raise CodecError(f"trailing bytes after {cls.__name__}") from e
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as e:
        raise CodecError(f"malformed msgpack: {str(e) or type(e).__name__}") from e
    inst = cls._from_obj(obj)
    # Re-encoding the checked record (not the raw map) also catches reordered keys.
    if inst.encode() != data:
        raise CodecError(f"non-canonical encoding of {cls.__name__}")
    return inst


def encode(obj: Record) -> bytes:
    return obj.encode()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
