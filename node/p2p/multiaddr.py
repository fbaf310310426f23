"""Multiaddrs: the self-describing addresses libp2p exchanges (``/ip4/1.2.3.4/tcp/26656/p2p/...``).

Both forms are supported: text (config files, logs, CLI) and binary (identify messages).
Only the protocols this node can use are known (ip4, ip6, dns, dns4, dns6, tcp, udp, p2p,
quic-v1); anything else raises MultiaddrError, so a peer advertising an exotic address is
simply not dialed there.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from node.p2p.peer_id import PeerID, PeerIDError
from node.p2p.varint import VarintError, decode_uvarint, encode_uvarint

MAX_MULTIADDR_BYTES = 1024


class MultiaddrError(ValueError):
    """Text or bytes that are not a multiaddr this node understands."""


# name -> (code, fixed size in bytes, or -1 for varint-length-prefixed, 0 for no value)
_PROTOCOLS: dict[str, tuple[int, int]] = {
    "ip4": (4, 4),
    "tcp": (6, 2),
    "udp": (273, 2),
    "ip6": (41, 16),
    "dns": (53, -1),
    "dns4": (54, -1),
    "dns6": (55, -1),
    "p2p": (421, -1),
    "quic-v1": (461, 0),
}
_BY_CODE = {code: (name, size) for name, (code, size) in _PROTOCOLS.items()}
_ALIASES = {"ipfs": "p2p"}


def _value_to_bytes(name: str, value: str) -> bytes:
    try:
        if name == "ip4":
            return ipaddress.IPv4Address(value).packed
        if name == "ip6":
            return ipaddress.IPv6Address(value).packed
        if name in ("tcp", "udp"):
            if not value.isdigit() or int(value) > 65535:
                raise MultiaddrError(f"bad port {value!r}")
            return int(value).to_bytes(2, "big")
        if name in ("dns", "dns4", "dns6"):
            if not value or len(value) > 255 or "/" in value:
                raise MultiaddrError(f"bad DNS name {value!r}")
            return value.encode("idna")
        if name == "p2p":
            return PeerID.from_base58(value).to_bytes()
    except (ValueError, UnicodeError) as e:
        if isinstance(e, MultiaddrError):
            raise
        raise MultiaddrError(f"bad /{name} value {value!r}: {e}") from e
    raise MultiaddrError(f"unknown protocol /{name}")


def _value_to_text(name: str, raw: bytes) -> str:
    try:
        if name == "ip4":
            return str(ipaddress.IPv4Address(raw))
        if name == "ip6":
            return str(ipaddress.IPv6Address(raw))
        if name in ("tcp", "udp"):
            return str(int.from_bytes(raw, "big"))
        if name in ("dns", "dns4", "dns6"):
            text = raw.decode("ascii")
            if not text or "/" in text:
                raise MultiaddrError(f"bad DNS name {text!r}")
            return text
        if name == "p2p":
            return PeerID(raw).to_base58()
    except (ValueError, UnicodeError) as e:
        if isinstance(e, MultiaddrError):
            raise
        raise MultiaddrError(f"bad /{name} value: {e}") from e
    raise MultiaddrError(f"unknown protocol /{name}")


@dataclass(frozen=True, slots=True)
class Multiaddr:
    """An immutable, parsed multiaddr: a tuple of (protocol name, text value) pairs."""

    parts: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, text: str) -> Multiaddr:
        if not text.startswith("/"):
            raise MultiaddrError(f"multiaddr {text!r} must start with '/'")
        tokens = text.split("/")[1:]
        if tokens and tokens[-1] == "":
            tokens.pop()
        if not tokens:
            raise MultiaddrError("empty multiaddr")
        parts: list[tuple[str, str]] = []
        i = 0
        while i < len(tokens):
            name = _ALIASES.get(tokens[i], tokens[i])
            spec = _PROTOCOLS.get(name)
            if spec is None:
                raise MultiaddrError(f"unknown protocol /{tokens[i]} in {text!r}")
            if spec[1] == 0:
                parts.append((name, ""))
                i += 1
                continue
            if i + 1 >= len(tokens):
                raise MultiaddrError(f"/{name} needs a value in {text!r}")
            value = tokens[i + 1]
            # Normalise through the binary form so equal addresses compare equal.
            parts.append((name, _value_to_text(name, _value_to_bytes(name, value))))
            i += 2
        return cls(tuple(parts))

    @classmethod
    def from_bytes(cls, data: bytes) -> Multiaddr:
        if not data or len(data) > MAX_MULTIADDR_BYTES:
            raise MultiaddrError("binary multiaddr is empty or too long")
        parts: list[tuple[str, str]] = []
        pos = 0
        try:
            while pos < len(data):
                head = decode_uvarint(data, pos)
                if head is None:
                    raise MultiaddrError("truncated protocol code")
                code, pos = head
                spec = _BY_CODE.get(code)
                if spec is None:
                    raise MultiaddrError(f"unknown protocol code {code}")
                name, size = spec
                if size == -1:
                    ln = decode_uvarint(data, pos)
                    if ln is None:
                        raise MultiaddrError("truncated value length")
                    size, pos = ln
                if pos + size > len(data):
                    raise MultiaddrError(f"truncated /{name} value")
                raw = data[pos : pos + size]
                pos += size
                parts.append((name, _value_to_text(name, raw) if spec[1] != 0 else ""))
        except VarintError as e:
            raise MultiaddrError(f"bad varint: {e}") from e
        return cls(tuple(parts))

    def to_bytes(self) -> bytes:
        out = bytearray()
        for name, value in self.parts:
            code, size = _PROTOCOLS[name]
            out += encode_uvarint(code)
            if size == 0:
                continue
            raw = _value_to_bytes(name, value)
            if size == -1:
                out += encode_uvarint(len(raw))
            out += raw
        return bytes(out)

    def __str__(self) -> str:
        return "".join(f"/{n}/{v}" if _PROTOCOLS[n][1] != 0 else f"/{n}" for n, v in self.parts)

    def __repr__(self) -> str:
        return f"Multiaddr({self!s})"

    def value_for(self, name: str) -> str | None:
        for n, v in self.parts:
            if n == name:
                return v
        return None

    @property
    def peer_id(self) -> PeerID | None:
        v = self.value_for("p2p")
        return PeerID.from_base58(v) if v is not None else None

    def with_peer_id(self, peer: PeerID) -> Multiaddr:
        return Multiaddr((*self.without_peer_id().parts, ("p2p", peer.to_base58())))

    def without_peer_id(self) -> Multiaddr:
        return Multiaddr(tuple(p for p in self.parts if p[0] != "p2p"))

    def tcp_endpoint(self) -> tuple[str, int]:
        """(host, port) for dialing over TCP; MultiaddrError when the address is not TCP."""
        if len(self.parts) < 2 or self.parts[1][0] != "tcp":
            raise MultiaddrError(f"{self} is not a TCP address")
        name, host = self.parts[0]
        if name not in ("ip4", "ip6", "dns", "dns4", "dns6"):
            raise MultiaddrError(f"{self} has no IP or DNS host")
        return host, int(self.parts[1][1])

    @classmethod
    def from_tcp(cls, host: str, port: int) -> Multiaddr:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return cls.parse(f"/dns4/{host}/tcp/{port}")
        return cls.parse(f"/{'ip4' if ip.version == 4 else 'ip6'}/{ip}/tcp/{port}")


def try_parse_peer(text: str) -> PeerID | None:
    """Parse a base58 peer ID, or None; a helper for config values."""
    try:
        return PeerID.from_base58(text)
    except PeerIDError:
        return None
