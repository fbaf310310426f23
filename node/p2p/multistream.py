"""multistream-select 1.0, sans-I/O.

Every libp2p connection and stream starts by agreeing on a protocol: both sides send
``/multistream/1.0.0``, the dialer proposes protocols one at a time and the listener echoes
the one it accepts or answers ``na``. Each message is a uvarint length, the UTF-8 text and a
trailing newline. The negotiators here are fed received bytes and return bytes to send, so
the same code drives TCP connections and yamux streams, and hostile input is fuzzed without
sockets. Bytes that arrive after the final answer belong to the selected protocol and are
handed back as ``leftover``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from node.p2p.varint import VarintError, decode_uvarint, encode_uvarint

PROTOCOL_ID = "/multistream/1.0.0"
NA = "na"
MAX_MESSAGE_LEN = 1024
MAX_PROPOSALS = 32


class MultistreamError(Exception):
    """The peer broke the multistream-select protocol (garbage, oversized, bad header)."""


class NegotiationFailed(MultistreamError):
    """The peers share none of the proposed protocols."""


def encode_message(text: str) -> bytes:
    body = text.encode() + b"\n"
    if len(body) > MAX_MESSAGE_LEN:
        raise ValueError(f"multistream message too long: {text[:40]!r}")
    return encode_uvarint(len(body)) + body


class MessageReader:
    """Splits a byte stream into multistream messages; keeps what follows them."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > 64 * MAX_MESSAGE_LEN:
            raise MultistreamError("too much unanswered negotiation data")

    def next_message(self) -> str | None:
        try:
            head = decode_uvarint(self._buf, 0)
        except VarintError as e:
            raise MultistreamError(f"bad length prefix: {e}") from e
        if head is None:
            return None
        length, start = head
        if length == 0 or length > MAX_MESSAGE_LEN:
            raise MultistreamError(f"message length {length} out of range")
        if len(self._buf) - start < length:
            return None
        body = bytes(self._buf[start : start + length])
        del self._buf[: start + length]
        if not body.endswith(b"\n"):
            raise MultistreamError("message does not end with a newline")
        try:
            return body[:-1].decode()
        except UnicodeDecodeError as e:
            raise MultistreamError("message is not UTF-8") from e

    def take_rest(self) -> bytes:
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


class _Negotiator:
    """What both sides share: the output buffer, the reader and the header check."""

    def __init__(self, first_output: bytes) -> None:
        self._reader = MessageReader()
        self._header_seen = False
        self._out = bytearray(first_output)
        self.selected: str | None = None
        self.leftover = b""

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _messages(self, data: bytes) -> Iterator[str]:
        """Feed ``data`` and yield the messages after the multistream header."""
        if self.selected is not None:
            raise MultistreamError("negotiation already finished")
        self._reader.feed(data)
        while (msg := self._reader.next_message()) is not None:
            if not self._header_seen:
                if msg != PROTOCOL_ID:
                    raise MultistreamError(f"unexpected header {msg[:64]!r}")
                self._header_seen = True
                continue
            yield msg

    def _select(self, protocol: str) -> str:
        self.selected = protocol
        self.leftover = self._reader.take_rest()
        return protocol


class Dialer(_Negotiator):
    """The proposing side. Sends the header and its first proposal at once (pipelined)."""

    def __init__(self, protocols: Sequence[str]) -> None:
        if not protocols:
            raise ValueError("at least one protocol must be proposed")
        super().__init__(encode_message(PROTOCOL_ID) + encode_message(protocols[0]))
        self._protocols = list(protocols)
        self._index = 0

    def receive_data(self, data: bytes) -> str | None:
        """Feed bytes; returns the agreed protocol once known. Raises on failure."""
        for msg in self._messages(data):
            current = self._protocols[self._index]
            if msg == current:
                return self._select(current)
            if msg != NA:
                raise MultistreamError(f"unexpected answer {msg[:64]!r} to {current!r}")
            self._index += 1
            if self._index >= len(self._protocols):
                raise NegotiationFailed(f"peer supports none of {self._protocols}")
            self._out += encode_message(self._protocols[self._index])
        return None


class Listener(_Negotiator):
    """The answering side: accepts the first proposal that ``supports`` says yes to."""

    def __init__(self, supports: Callable[[str], bool]) -> None:
        super().__init__(encode_message(PROTOCOL_ID))
        self._supports = supports
        self._proposals = 0

    def receive_data(self, data: bytes) -> str | None:
        for msg in self._messages(data):
            self._proposals += 1
            if self._proposals > MAX_PROPOSALS:
                raise NegotiationFailed("too many rejected proposals")
            if msg and msg != "ls" and self._supports(msg):
                self._out += encode_message(msg)
                return self._select(msg)
            self._out += encode_message(NA)
        return None
