"""Identify (``/ipfs/id/1.0.0``): peers tell each other who they are and where they listen.

The responder writes one Identify protobuf (varint-length-prefixed, as go-libp2p and
py-libp2p do) and closes the stream; the requester also accepts the older unprefixed form.
Everything in a received message is validated: a public key that does not match the
authenticated peer ID is misbehaviour, unparseable listen addresses are skipped (counted),
and sizes are bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from node.p2p.connection import Connection, Stream
from node.p2p.multiaddr import Multiaddr, MultiaddrError
from node.p2p.pb import identify_pb2
from node.p2p.peer_id import PeerID
from node.p2p.streamio import MessageTooLarge, read_to_eof, write_length_prefixed
from node.p2p.varint import VarintError, decode_uvarint

if TYPE_CHECKING:
    from node.p2p.host import Host

log = logging.getLogger(__name__)

PROTOCOL_ID = "/ipfs/id/1.0.0"
PUSH_PROTOCOL_ID = "/ipfs/id/push/1.0.0"
MAX_IDENTIFY_BYTES = 64 * 1024
MAX_LISTEN_ADDRS = 64
MAX_PROTOCOLS = 256


class IdentifyError(ValueError):
    """An identify message that is malformed or contradicts the authenticated peer."""


@dataclass(frozen=True)
class IdentifyInfo:
    protocol_version: str
    agent_version: str
    public_key: bytes
    listen_addrs: list[Multiaddr]
    observed_addr: Multiaddr | None
    protocols: list[str]
    bad_addrs: int = 0
    signed_record: bytes = b""


def build_message(host: Host, observed: Multiaddr | None) -> bytes:
    msg = identify_pb2.Identify(
        protocolVersion=host.config.protocol_version,
        agentVersion=host.config.agent_version,
        publicKey=host.identity.public_key_proto(),
        listenAddrs=[a.to_bytes() for a in host.advertised_addrs()],
        protocols=host.supported_protocols(),
        signedPeerRecord=host.signed_peer_record(),
    )
    if observed is not None:
        msg.observedAddr = observed.to_bytes()
    return msg.SerializeToString()


def parse_message(data: bytes, peer: PeerID | None) -> IdentifyInfo:
    """Decode an identify response (length-prefixed or raw) and check it against ``peer``."""
    body = data
    try:
        head = decode_uvarint(data, 0)
    except VarintError:
        head = None
    if head is not None and head[0] > 0 and head[1] + head[0] == len(data):
        body = data[head[1] :]
    msg = identify_pb2.Identify()
    try:
        msg.ParseFromString(body)
    except DecodeError as e:
        raise IdentifyError(f"malformed identify message: {e}") from e
    if len(msg.listenAddrs) > MAX_LISTEN_ADDRS or len(msg.protocols) > MAX_PROTOCOLS:
        raise IdentifyError("identify message lists too many addresses or protocols")
    key = bytes(msg.publicKey)
    if key and peer is not None and not peer.matches_pubkey_proto(key):
        raise IdentifyError("identify public key does not match the peer ID")
    addrs: list[Multiaddr] = []
    bad = 0
    for raw in msg.listenAddrs:
        try:
            addrs.append(Multiaddr.from_bytes(bytes(raw)))
        except MultiaddrError:
            bad += 1
    observed: Multiaddr | None = None
    if msg.observedAddr:
        try:
            observed = Multiaddr.from_bytes(bytes(msg.observedAddr))
        except MultiaddrError:
            bad += 1
    return IdentifyInfo(
        protocol_version=msg.protocolVersion,
        agent_version=msg.agentVersion,
        public_key=key,
        listen_addrs=addrs,
        observed_addr=observed,
        protocols=[p[:256] for p in msg.protocols],
        bad_addrs=bad,
        signed_record=bytes(msg.signedPeerRecord),
    )


def make_handler(host: Host) -> Callable[[Stream], Awaitable[None]]:
    async def handle_identify(stream: Stream) -> None:
        body = build_message(host, stream.conn.remote_addr)
        await write_length_prefixed(stream, body)
        await stream.close()

    return handle_identify


async def request(host: Host, conn: Connection) -> IdentifyInfo:
    """Ask the peer on ``conn`` to identify itself (raises IdentifyError and stream errors)."""
    stream = await host.new_stream_on(conn, [PROTOCOL_ID])
    try:
        await stream.close()
        data = await read_to_eof(stream, MAX_IDENTIFY_BYTES)
    except MessageTooLarge as e:
        stream.reset()
        raise IdentifyError(str(e)) from e
    return parse_message(data, conn.peer)


def make_push_handler(host: Host) -> Callable[[Stream], Awaitable[None]]:
    """Identify push: a peer announces changed protocols or addresses unprompted."""

    async def handle_push(stream: Stream) -> None:
        conn = stream.conn
        try:
            data = await read_to_eof(stream, MAX_IDENTIFY_BYTES)
            info = parse_message(data, conn.peer)
        except (IdentifyError, MessageTooLarge) as e:
            _invalid(host, conn, str(e))
            return
        _record(host, conn, info)

    return handle_push


async def push(host: Host, conn: Connection) -> None:
    """Send our current identify message to the peer on ``conn``."""
    stream = await host.new_stream_on(conn, [PUSH_PROTOCOL_ID])
    body = build_message(host, conn.remote_addr)
    await write_length_prefixed(stream, body)
    await stream.close()


def _invalid(host: Host, conn: Connection, detail: str) -> None:
    host.count("identify_invalid", conn.peer, detail)
    host._misbehaved(conn.peer, "identify_invalid")
    conn.close("invalid identify")


async def identify_peer(host: Host, conn: Connection) -> None:
    """Identify a new connection's peer and record what it told us in the host."""
    try:
        info = await request(host, conn)
    except IdentifyError as e:
        _invalid(host, conn, str(e))
        return
    except (ConnectionError, EOFError, TimeoutError, asyncio.IncompleteReadError) as e:
        log.debug("identify of %s failed: %r", conn.peer, e)
        return
    except Exception as e:  # NegotiationFailed and friends: the peer lacks identify
        log.debug("identify of %s not possible: %r", conn.peer, e)
        return
    _record(host, conn, info)


def _record(host: Host, conn: Connection, info: IdentifyInfo) -> None:
    if info.bad_addrs:
        host.count("identify_bad_addr", conn.peer, f"{info.bad_addrs} unparseable addresses")
    host.peer_protocols[conn.peer] = info.protocols
    host.peer_agents[conn.peer] = info.agent_version[:128]
    host.add_peer_addrs(conn.peer, info.listen_addrs)
    if info.signed_record:
        host.consume_peer_record(conn.peer, info.signed_record)
    if info.observed_addr is not None and len(host.observed_addrs) < 64:
        host.observed_addrs[info.observed_addr] += 1
    host.connmgr.on_identified(conn.peer)
