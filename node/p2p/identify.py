"""Identify (``/ipfs/id/1.0.0``): peers tell each other who they are and where they listen.

The responder writes one Identify protobuf (varint-length-prefixed, as go-libp2p and
py-libp2p do) and closes the stream; the requester also accepts the older unprefixed form.
Everything in a received message is validated: a public key that does not match the
authenticated peer ID is misbehaviour, unparseable listen addresses are skipped (counted),
and sizes are bounded.

``Identify`` is the host's identify behaviour: it asks every new connection's peer, answers
requests, takes pushes, records what peers say in the host's ``PeerStore``, and pushes our
own message to connected peers when our protocols change (identify push).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from node.p2p.behaviour import Behaviour, HostAPI
from node.p2p.connection import Connection, Stream
from node.p2p.multiaddr import Multiaddr, MultiaddrError
from node.p2p.multistream import MultistreamError
from node.p2p.pb import identify_pb2
from node.p2p.peer_id import PeerID
from node.p2p.streamio import MessageTooLarge, read_to_eof, write_length_prefixed
from node.p2p.varint import VarintError, decode_uvarint

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


def build_message(host: HostAPI, observed: Multiaddr | None) -> bytes:
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


async def request(host: HostAPI, conn: Connection) -> IdentifyInfo:
    """Ask the peer on ``conn`` to identify itself (raises IdentifyError and stream errors)."""
    stream = await host.new_stream_on(conn, [PROTOCOL_ID])
    try:
        await stream.close()
        data = await read_to_eof(stream, MAX_IDENTIFY_BYTES)
    except MessageTooLarge as e:
        stream.reset()
        raise IdentifyError(str(e)) from e
    return parse_message(data, conn.peer)


async def push(host: HostAPI, conn: Connection) -> None:
    """Send our current identify message to the peer on ``conn``."""
    stream = await host.new_stream_on(conn, [PUSH_PROTOCOL_ID])
    body = build_message(host, conn.remote_addr)
    await write_length_prefixed(stream, body)
    await stream.close()


class Identify(Behaviour):
    """The identify protocol of one host (``handle_request`` and ``handle_push`` are its
    stream handlers)."""

    def __init__(self, host: HostAPI) -> None:
        self.host = host
        self._push_pending = False

    # -- events from the host -----------------------------------------------------------------

    def on_connection_established(self, conn: Connection, *, first: bool) -> None:
        if self.host.config.identify_on_connect:
            conn.tasks.spawn(self.identify_peer(conn), name="identify")

    def on_local_protocols_changed(self) -> None:
        """Tell connected peers that our protocols changed (batched per event-loop turn)."""
        if self._push_pending or not self.host.connected_peers():
            return
        try:
            self.host.spawn(self._push_all(), name="identify push")
        except RuntimeError:  # the host is closing
            return
        self._push_pending = True

    # -- stream handlers ----------------------------------------------------------------------

    async def handle_request(self, stream: Stream) -> None:
        body = build_message(self.host, stream.conn.remote_addr)
        await write_length_prefixed(stream, body)
        await stream.close()

    async def handle_push(self, stream: Stream) -> None:
        """Identify push: a peer announces changed protocols or addresses unprompted."""
        conn = stream.conn
        try:
            data = await read_to_eof(stream, MAX_IDENTIFY_BYTES)
            info = parse_message(data, conn.peer)
        except (IdentifyError, MessageTooLarge) as e:
            self._invalid(conn, str(e))
            return
        self._record(conn, info)

    # -- identifying peers --------------------------------------------------------------------

    async def identify_peer(self, conn: Connection) -> None:
        """Identify a new connection's peer and record what it told us."""
        try:
            info = await request(self.host, conn)
        except IdentifyError as e:
            self._invalid(conn, str(e))
            return
        except (ConnectionError, EOFError, TimeoutError, asyncio.IncompleteReadError) as e:
            log.debug("identify of %s failed: %r", conn.peer, e)
            return
        except Exception as e:  # NegotiationFailed and friends: the peer lacks identify
            log.debug("identify of %s not possible: %r", conn.peer, e)
            return
        self._record(conn, info)

    def _invalid(self, conn: Connection, detail: str) -> None:
        self.host.count("identify_invalid", conn.peer, detail)
        self.host.report_misbehaviour(conn.peer, "identify_invalid")
        conn.close("invalid identify")

    def _record(self, conn: Connection, info: IdentifyInfo) -> None:
        if info.bad_addrs:
            self.host.count(
                "identify_bad_addr", conn.peer, f"{info.bad_addrs} unparseable addresses"
            )
        store = self.host.peerstore
        store.set_identified(conn.peer, info.protocols, info.agent_version)
        store.add_addrs(conn.peer, info.listen_addrs)
        if info.signed_record:
            store.consume_record(conn.peer, info.signed_record)
        if info.observed_addr is not None:
            store.add_observed(info.observed_addr)

    # -- identify push ------------------------------------------------------------------------

    async def _push_all(self) -> None:
        await asyncio.sleep(0)  # let a burst of handler registrations land first
        self._push_pending = False
        for peer in self.host.connected_peers():
            for conn in self.host.connections(peer):
                if not conn.closed and not conn.tasks.closed:
                    conn.tasks.spawn(self._push_to(conn), name="identify push")

    async def _push_to(self, conn: Connection) -> None:
        try:
            async with asyncio.timeout(self.host.config.negotiate_timeout):
                await push(self.host, conn)
        except (ConnectionError, EOFError, TimeoutError, MultistreamError) as e:
            log.debug("identify push to %s failed: %r", conn.peer, e)
