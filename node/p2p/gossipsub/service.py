"""The asyncio driver that attaches the sans-I/O GossipSub router to a Host.

Per peer it keeps one outbound stream (``/meshsub/1.2.0``, falling back to 1.1.0 and 1.0.0)
fed by a writer task from a byte-bounded queue, and reads RPCs from every inbound stream the
peer opens. RPCs are varint-length-prefixed protobuf. Everything the router produces is
taken right after each input (a decoded RPC, a publish, a validation verdict, a heartbeat)
and queued to the peers' writers, so forwarding never waits for a timer.

Failure policy, so that nothing is lost silently and nothing crashes the node:
- a malformed or oversized RPC: the peer gets a behavioural penalty (retained score), is
  disconnected and banned for ``ban_seconds``; the reason is counted and logged once;
- a peer whose outbound queue exceeds ``max_queue_bytes`` cannot keep up: it is penalised
  and disconnected instead of having messages dropped for it;
- our own publish waits (bounded by ``publish_wait``) while any peer queue is above the
  low-water mark, so a burst of publishes is paced by the network instead of being dropped;
- a validator that raises or times out counts as IGNORE (no penalty for the sender).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from node.p2p.connection import Stream, StreamReset
from node.p2p.gossipsub.frames import FrameParser
from node.p2p.gossipsub.messages import Message, MessageIdFn, Verdict, content_message_id
from node.p2p.gossipsub.params import (
    MESH_PROTOCOLS,
    GossipParams,
    PeerScoreParams,
    PeerScoreThresholds,
)
from node.p2p.gossipsub.router import (
    Deliver,
    Disconnect,
    GossipSubRouter,
    PeerExchange,
    Validate,
)
from node.p2p.gossipsub.signing import IdentitySigner, verify_message
from node.p2p.gossipsub.wire import RPCDecodeError, decode_rpc, encode_rpc_framed, max_rpc_size
from node.p2p.host import Host
from node.p2p.multiaddr import MultiaddrError
from node.p2p.multistream import MultistreamError
from node.p2p.peer_id import PeerID, PeerIDError
from node.p2p.tasks import TaskSet
from node.p2p.varint import VarintError

log = logging.getLogger(__name__)

Validator = Callable[[PeerID, Message], Awaitable[Verdict]]
MALFORMED_PENALTY = 10.0  # P7 counter; squared and weighted this graylists at once
SLOW_PEER_PENALTY = 3.0
MESH_TAG = "gossip-mesh"


class PublishRejected(ValueError):
    """Our own validator rejected a message we were about to publish."""


@dataclass(slots=True)
class ServiceConfig:
    protocols: tuple[str, ...] = MESH_PROTOCOLS
    max_queue_bytes: int = 64 * 1024 * 1024
    publish_low_water: int = 8 * 1024 * 1024
    publish_wait: float = 10.0
    validation_timeout: float = 5.0
    subscription_queue: int = 100_000
    # Small RPCs queued together go out in one write (one yamux frame, one Noise frame);
    # large ones are written as they are.
    coalesce_bytes: int = 64 * 1024
    # Malformed-RPC senders and graylisted peers are refused for this long after the
    # disconnect (their score is retained longer, see PeerScoreParams.retain_score).
    ban_seconds: float = 60.0


@dataclass(slots=True)
class Received:
    """A message delivered to the application."""

    msg_id: bytes
    topic: str
    data: bytes
    author: bytes | None
    source: PeerID | None  # the peer that sent it to us; None for our own


class SubscriptionClosed(Exception):
    """The subscription was cancelled (unsubscribe or service shutdown)."""


@dataclass(eq=False)
class Subscription:
    """Messages of one topic; ``async for`` over it, or ``await get()``. Iteration ends and
    ``get`` raises SubscriptionClosed once the subscription is cancelled."""

    topic: str
    queue: asyncio.Queue[Received | None]
    callback: Callable[[Received], None] | None = None
    closed: bool = False

    async def get(self) -> Received:
        if self.closed and self.queue.empty():
            raise SubscriptionClosed(self.topic)
        item = await self.queue.get()
        if item is None:
            raise SubscriptionClosed(self.topic)
        return item

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[Received]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Received]:
        while True:
            try:
                yield await self.get()
            except SubscriptionClosed:
                return


@dataclass(eq=False)
class _PeerOut:
    # Encoded RPCs (``encode_rpc_framed``), in order.
    chunks: deque[bytes] = field(default_factory=deque)
    queued: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    stream: Stream | None = None
    task: asyncio.Task[None] | None = None
    closed: bool = False
    busy: bool = False  # the writer task is inside stream.write


class GossipSub:
    def __init__(
        self,
        host: Host,
        *,
        params: GossipParams | None = None,
        score_params: PeerScoreParams | None = None,
        thresholds: PeerScoreThresholds | None = None,
        msg_id_fn: MessageIdFn = content_message_id,
        config: ServiceConfig | None = None,
    ) -> None:
        self.host = host
        self.config = config or ServiceConfig()
        self.params = params or GossipParams()
        self.router = GossipSubRouter[PeerID](
            signer=IdentitySigner(host.identity),
            verifier=verify_message,
            peer_id_bytes=PeerID.to_bytes,
            params=self.params,
            score_params=score_params,
            thresholds=thresholds,
            msg_id_fn=msg_id_fn,
            peer_record=host.peerstore.record,
            # Like go-libp2p: sequence numbers start at the wall clock in ns, so they keep
            # increasing across restarts of the node.
            seqno_start=time.time_ns(),
        )
        self._tasks = TaskSet("gossipsub")
        self._out: dict[PeerID, _PeerOut] = {}
        self._subs: dict[str, list[Subscription]] = {}
        self._validators: dict[str, Validator] = {}
        self._max_rpc = max_rpc_size(self.params.max_message_size)
        self.counters: dict[str, int] = {}
        self._logged: set[str] = set()
        self._started = False
        self._protected: set[PeerID] = set()
        # Relay backpressure: peers whose outbound queue is above the low-water mark, the
        # inbound streams whose window credit is held meanwhile, and the deadline after
        # which still-congested peers count as slow.
        self._congested: set[PeerID] = set()
        self._held: set[Stream] = set()
        self._relay_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        for proto in self.config.protocols:
            self.host.set_stream_handler(proto, self._handle_stream)
        self.host.add_notifee(self._on_connected, self._on_disconnected)
        for p in self.host.connected_peers():
            self._on_connected(p)
        self._tasks.spawn(self._heartbeat_loop(), name="gossipsub heartbeat")

    async def close(self) -> None:
        if self._relay_timer is not None:
            self._relay_timer.cancel()
            self._relay_timer = None
        for proto in self.config.protocols:
            with contextlib.suppress(KeyError, AttributeError):
                self.host.remove_stream_handler(proto)
        for po in self._out.values():
            po.closed = True
            po.drained.set()
        await self._tasks.aclose()
        self._out.clear()
        for subs in self._subs.values():
            for sub in subs:
                sub._close()

    async def __aenter__(self) -> GossipSub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def now(self) -> float:
        """The router's clock (monotonic seconds, the same clock asyncio uses)."""
        return time.monotonic()

    def _count(self, reason: str, detail: str = "") -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("gossipsub: %s %s (logged once per reason)", reason, detail)

    def all_counters(self) -> dict[str, int]:
        """Service and router drop/reject counters together (exported as metrics)."""
        out = dict(self.router.counters)
        for k, v in self.counters.items():
            out[k] = out.get(k, 0) + v
        return out

    # ------------------------------------------------------------------ app API
    def subscribe(
        self, topic: str, callback: Callable[[Received], None] | None = None
    ) -> Subscription:
        sub = Subscription(topic, asyncio.Queue(self.config.subscription_queue), callback)
        self._subs.setdefault(topic, []).append(sub)
        self.router.subscribe(topic, self.now())
        self._flush()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.topic, [])
        if sub in subs:
            subs.remove(sub)
        sub._close()
        if not subs:
            self._subs.pop(sub.topic, None)
            self.router.unsubscribe(sub.topic, self.now())
            self._flush()

    def add_validator(self, topic: str, validator: Validator) -> None:
        self._validators[topic] = validator
        self.router.set_validated(topic, True)

    def remove_validator(self, topic: str) -> None:
        self._validators.pop(topic, None)
        self.router.set_validated(topic, False)

    async def publish(self, topic: str, data: bytes) -> bytes:
        """Sign and publish ``data``; returns the message ID. Raises PublishRejected if our
        own validator rejects it and ValueError if it exceeds the maximum message size."""
        validator = self._validators.get(topic)
        if validator is not None:
            probe = Message(topic=topic, data=data, from_=self.host.peer_id.to_bytes())
            verdict = await validator(self.host.peer_id, probe)
            if verdict is not Verdict.ACCEPT:
                raise PublishRejected(f"local validator returned {verdict.value}")
        await self._wait_low_water()
        mid = self.router.publish(topic, data, self.now())
        self._flush()
        return mid

    async def _wait_low_water(self) -> None:
        low = self.config.publish_low_water
        busy = [(p, po) for p, po in self._out.items() if po.queued > low and not po.closed]
        if not busy:
            return
        try:
            async with asyncio.timeout(self.config.publish_wait):
                for _p, po in busy:
                    while po.queued > low and not po.closed:
                        po.drained.clear()
                        await po.drained.wait()
        except TimeoutError:
            for p, po in busy:
                if po.queued > low and not po.closed:
                    self._slow_peer(p, "publish_wait_exceeded")

    # ------------------------------------------------------------------ peers
    def _on_connected(self, peer: PeerID) -> None:
        if peer in self._out or self._tasks.closed:
            return
        po = self._out[peer] = _PeerOut()
        po.task = self._tasks.spawn(self._writer(peer, po), name=f"gossipsub writer {peer}")

    def _on_disconnected(self, peer: PeerID) -> None:
        if self.host.is_connected(peer):
            return  # another connection to the peer is still open
        po = self._out.pop(peer, None)
        if po is not None:
            po.closed = True
            po.wake.set()
            po.drained.set()
            if po.task is not None:
                po.task.cancel()
        self._uncongest(peer)
        self.router.remove_peer(peer, self.now())
        self._flush()

    def _peer_ips(self, peer: PeerID) -> tuple[str, bool]:
        """(remote IP, whether we dialed) from the peer's first open connection."""
        for conn in self.host.connections(peer):
            try:
                ip, _port = conn.remote_addr.tcp_endpoint()
            except MultiaddrError:
                ip = ""
            return ip, conn.initiator
        return "", False

    def _ensure_peer(self, peer: PeerID, protocol: str) -> None:
        if peer in self.router.peers:
            return
        ip, outbound = self._peer_ips(peer)
        self.router.add_peer(peer, protocol, outbound, self.now(), (ip,) if ip else ())
        self._flush()

    async def _writer(self, peer: PeerID, po: _PeerOut) -> None:
        try:
            stream = await self.host.new_stream(peer, list(self.config.protocols))
        except (ConnectionError, TimeoutError, EOFError, MultistreamError, VarintError) as e:
            # NegotiationFailed (a MultistreamError): the peer does not speak pubsub.
            self._count("outbound_stream_failed", f"{peer}: {e!r}")
            self._out.pop(peer, None)
            return
        po.stream = stream
        self._ensure_peer(peer, stream.protocol)
        try:
            while not po.closed:
                if not po.chunks:
                    po.wake.clear()
                    await po.wake.wait()
                    continue
                data = self._take_batch(po)
                po.busy = True
                await stream.write(data)
                po.busy = False
                po.queued -= len(data)
                if po.queued <= self.config.publish_low_water:
                    po.drained.set()
                    self._uncongest(peer)
        except (StreamReset, ConnectionError, EOFError) as e:
            # Without a stream to send on, the peer is gone as far as pubsub is concerned.
            self._count("outbound_stream_lost", f"{peer}: {e!r}")
            if self._out.get(peer) is po:
                del self._out[peer]
            self.router.remove_peer(peer, self.now())
            self._flush()
        finally:
            po.closed = True
            po.drained.set()
            self._uncongest(peer)
            stream.reset()

    def _take_batch(self, po: _PeerOut) -> bytes:
        first = po.chunks.popleft()
        size = len(first)
        limit = self.config.coalesce_bytes
        if size >= limit or not po.chunks or len(po.chunks[0]) >= limit:
            return first
        parts = [first]
        while po.chunks and size + len(po.chunks[0]) <= limit:
            more = po.chunks.popleft()
            parts.append(more)
            size += len(more)
        return b"".join(parts)

    def _enqueue(self, peer: PeerID, data: bytes) -> None:
        po = self._out.get(peer)
        if po is None or po.closed:
            self._count("send_to_closed_peer")
            return
        if not po.chunks and not po.busy and po.stream is not None and po.stream.try_write(data):
            # Caught up and nothing to wait for: written at once, without waking the
            # writer task (which takes over as soon as the window or socket pushes back).
            return
        if po.queued + len(data) > self.config.max_queue_bytes:
            self._slow_peer(peer, "outbound_queue_full")
            return
        po.chunks.append(data)
        po.queued += len(data)
        po.wake.set()
        if po.queued > self.config.publish_low_water:
            self._congested.add(peer)

    def _slow_peer(self, peer: PeerID, reason: str) -> None:
        self._count(f"disconnect_{reason}", str(peer))
        self.router.penalize(peer, SLOW_PEER_PENALTY, reason)
        po = self._out.get(peer)
        if po is not None:
            po.closed = True
            po.wake.set()
            po.drained.set()
        self._uncongest(peer)
        self.host.disconnect(peer, "gossip_slow_peer")

    # ------------------------------------------------------------------ relay backpressure
    def _hold_upstream(self, peer: PeerID, stream: Stream) -> None:
        """Some peer's queue is above the low-water mark: stop granting window to ``stream``
        so its sender is paced by the slowest consumer instead of growing our queues.

        Like our own publish (``_wait_low_water``) this waits at most ``publish_wait``: a
        peer still congested then is disconnected as slow. A stream from a congested peer
        is never held, so two peers relaying to each other cannot stall one another.
        """
        if peer in self._congested or stream in self._held:
            return
        stream.hold_credit()
        self._held.add(stream)
        if self._relay_timer is None:
            self._relay_timer = asyncio.get_running_loop().call_later(
                self.config.publish_wait, self._relay_wait_exceeded
            )

    def _uncongest(self, peer: PeerID) -> None:
        self._congested.discard(peer)
        if self._congested:
            return
        if self._relay_timer is not None:
            self._relay_timer.cancel()
            self._relay_timer = None
        held, self._held = self._held, set()
        for st in held:
            st.release_credit()

    def _relay_wait_exceeded(self) -> None:
        self._relay_timer = None
        low = self.config.publish_low_water
        for p in list(self._congested):
            po = self._out.get(p)
            if po is not None and po.queued > low and not po.closed:
                self._slow_peer(p, "relay_wait_exceeded")
            else:
                self._uncongest(p)

    # ------------------------------------------------------------------ inbound
    async def _handle_stream(self, stream: Stream) -> None:
        """Serve one inbound stream: RPCs are parsed and handled synchronously as their
        bytes arrive (in the connection's ``data_received``), with no reader task wake-up
        per RPC; this task only owns the stream until it ends."""
        peer = stream.peer
        self._ensure_peer(peer, stream.protocol)
        parser = FrameParser(self._max_rpc)
        max_msg = self.params.max_message_size
        router = self.router

        def on_data(data: bytes | memoryview) -> None:
            if stream.is_reset:
                return
            try:
                frames = parser.feed(data)
            except VarintError as e:  # MessageTooLarge included
                self._malformed(peer, e)
                stream.reset()
                return
            now = self.now()
            for raw in frames:
                try:
                    rpc = decode_rpc(raw, max_msg)
                except (RPCDecodeError, PeerIDError) as e:
                    self._flush()
                    self._malformed(peer, e)
                    stream.reset()
                    return
                router.handle_rpc(peer, rpc, now)
            # One flush per received chunk: what the router queued for each peer goes out
            # as one RPC, however many RPCs the chunk held.
            if frames:
                self._flush()
                if self._congested:
                    self._hold_upstream(peer, stream)

        stream.set_receiver(on_data)
        try:
            with contextlib.suppress(StreamReset, EOFError):
                while await stream.read():
                    pass  # with a receiver set, read() only reports the end of the stream
        finally:
            self._held.discard(stream)

    def _malformed(self, peer: PeerID, err: Exception) -> None:
        self._count("disconnect_malformed_rpc", f"{peer}: {err}")
        self.router.penalize(peer, MALFORMED_PENALTY, "malformed_rpc")
        self.host.disconnect(peer, "gossip_malformed_rpc", ban=self.config.ban_seconds)

    # ------------------------------------------------------------------ effects
    def _flush(self) -> None:
        router = self.router
        # A relayed message mostly goes out alone in each mesh peer's RPC, and those RPCs
        # encode to the same bytes: encode once and share them.
        alone: dict[int, bytes] = {}
        for peer, rpc in router.take_outgoing():
            if len(rpc.publish) == 1 and not rpc.subscriptions and not rpc.has_control():
                key = id(rpc.publish[0])  # the message stays alive in ``rpc`` meanwhile
                enc = alone.get(key)
                if enc is None:
                    enc = alone[key] = encode_rpc_framed(rpc)
            else:
                enc = encode_rpc_framed(rpc)
            self._enqueue(peer, enc)
        for ev in router.take_events():
            if isinstance(ev, Deliver):
                self._deliver(ev)
            elif isinstance(ev, Validate):
                self._tasks.spawn(self._validate(ev), name="gossipsub validate")
            elif isinstance(ev, Disconnect):
                self.host.disconnect(ev.peer, "gossip_graylisted", ban=self.config.ban_seconds)
            elif isinstance(ev, PeerExchange):
                found: list[tuple[PeerID, bytes | None]] = []
                for info in ev.peers:
                    try:
                        found.append((PeerID.from_bytes(info.peer_id), info.signed_peer_record))
                    except PeerIDError:
                        self._count("px_bad_peer_id")
                self.host.add_px_peers(found)

    def _deliver(self, ev: Deliver[PeerID]) -> None:
        msg = ev.msg
        rec = Received(ev.msg_id, msg.topic, msg.data, msg.from_, ev.source)
        for sub in self._subs.get(msg.topic, ()):
            if sub.callback is not None:
                try:
                    sub.callback(rec)
                except Exception:
                    self._count("subscriber_callback_error")
                    log.exception("gossipsub subscriber callback failed")
                continue
            try:
                sub.queue.put_nowait(rec)
            except asyncio.QueueFull:
                self._count("drop_subscription_queue_full", msg.topic)

    async def _validate(self, ev: Validate[PeerID]) -> None:
        fn = self._validators.get(ev.msg.topic)
        verdict = Verdict.ACCEPT
        if fn is not None:
            try:
                async with asyncio.timeout(self.config.validation_timeout):
                    verdict = await fn(ev.source, ev.msg)
            except TimeoutError:
                self._count("validation_timeout", ev.msg.topic)
                verdict = Verdict.IGNORE
            except Exception:
                self._count("validator_error", ev.msg.topic)
                log.exception("gossipsub validator for %s failed", ev.msg.topic)
                verdict = Verdict.IGNORE
        self.router.validation_result(ev.msg_id, verdict, self.now())
        self._flush()

    def heartbeat(self) -> None:
        """Run one heartbeat now (the loop runs one every ``heartbeat_interval``)."""
        self.router.heartbeat(self.now())
        self._flush()
        self._protect_mesh()

    async def _heartbeat_loop(self) -> None:
        interval = self.params.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            self.heartbeat()

    @property
    def protected_peers(self) -> frozenset[PeerID]:
        """Mesh peers currently protected from connection-manager pruning."""
        return frozenset(self._protected)

    def _protect_mesh(self) -> None:
        """Keep the connection manager from pruning our mesh peers to make room."""
        mesh: set[PeerID] = set()
        for peers in self.router.mesh.values():
            mesh |= peers
        for p in mesh - self._protected:
            self.host.connmgr.protect(p, MESH_TAG)
        for p in self._protected - mesh:
            self.host.connmgr.unprotect(p, MESH_TAG)
        self._protected = mesh
