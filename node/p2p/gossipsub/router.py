"""The GossipSub v1.1 router as a sans-I/O state machine.

Inputs: ``add_peer``, ``remove_peer``, ``handle_rpc``, ``publish``, ``subscribe``,
``unsubscribe``, ``validation_result``, ``penalize`` and ``heartbeat``, each given the
current time. Outputs: RPCs per peer (``take_outgoing``; everything queued for one peer is
coalesced into one RPC, so gossip and GRAFT/PRUNE piggyback on messages) and events
(``take_events``: deliveries, validation requests, peers to disconnect, PX candidates).
There is no clock, socket or task inside, so the in-memory simulator, the unit tests and the
asyncio service all drive the same code deterministically (randomness comes from a seeded
``random.Random``).

The logic follows the spec and go-libp2p-pubsub's gossipsub.go (mesh maintenance, fanout,
IHAVE/IWANT with promise tracking, GRAFT/PRUNE with backoff, flood control, PX, flood
publishing, opportunistic grafting) so that its behaviour matches the reference networks.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from node.p2p.gossipsub.mcache import MessageCache, SeenCache
from node.p2p.gossipsub.messages import (
    RPC,
    IHave,
    Message,
    MessageIdFn,
    PeerInfo,
    Prune,
    SubOpt,
    Verdict,
    content_message_id,
)
from node.p2p.gossipsub.params import (
    FLOODSUB,
    MESH_PROTOCOLS,
    MESHSUB_V10,
    MESHSUB_V12,
    GossipParams,
    PeerScoreParams,
    PeerScoreThresholds,
)
from node.p2p.gossipsub.score import PeerScore

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Hashable)


class Signer(Protocol):
    """Signs our own messages (StrictSign). ``author`` is our peer ID as bytes."""

    @property
    def author(self) -> bytes: ...

    def sign(self, msg: Message) -> None:
        """Set ``msg.signature`` (and ``msg.key`` when the peer ID does not inline it)."""


Verifier = Callable[[Message], bool]


# ------------------------------------------------------------------------------- events
@dataclass(slots=True)
class Deliver(Generic[P]):
    """A validated message for the local application (``source`` None: our own publish)."""

    msg_id: bytes
    msg: Message
    source: P | None


@dataclass(slots=True)
class Validate(Generic[P]):
    """Run the topic's validator and answer with ``validation_result(msg_id, verdict)``."""

    msg_id: bytes
    msg: Message
    source: P


@dataclass(slots=True)
class Disconnect(Generic[P]):
    peer: P
    reason: str


@dataclass(slots=True)
class PeerExchange:
    """Peers learnt from a PRUNE of a peer scoring above accept_px: candidates to dial."""

    peers: list[PeerInfo]


Event = Deliver[P] | Validate[P] | Disconnect[P] | PeerExchange


@dataclass(slots=True)
class _PeerState:
    protocol: str
    outbound: bool
    topics: set[str] = field(default_factory=set)


class GossipSubRouter(Generic[P]):
    def __init__(
        self,
        *,
        signer: Signer | None,
        verifier: Verifier | None,
        peer_id_bytes: Callable[[P], bytes],
        params: GossipParams | None = None,
        score_params: PeerScoreParams | None = None,
        thresholds: PeerScoreThresholds | None = None,
        msg_id_fn: MessageIdFn = content_message_id,
        seqno_start: int = 0,
        rng: random.Random | None = None,
        peer_record: Callable[[P], bytes | None] | None = None,
    ) -> None:
        self.params = params or GossipParams()
        prm = self.params
        if prm.sign_messages and signer is None:
            raise ValueError("sign_messages needs a signer")
        if prm.strict_verification and verifier is None:
            raise ValueError("strict_verification needs a verifier")
        self.thresholds = thresholds or PeerScoreThresholds()
        self.score = PeerScore[P](score_params or PeerScoreParams(), prm.seen_ttl)
        self._signer = signer
        self._verifier = verifier
        self._peer_id_bytes = peer_id_bytes
        # Signed peer records (envelopes with addresses) to attach to PX, when known.
        self._peer_record = peer_record
        self._author = signer.author if signer is not None else b""
        self._msg_id = msg_id_fn
        self._seqno = seqno_start
        self._rng = rng or random.Random()

        self.peers: dict[P, _PeerState] = {}
        self.topic_peers: dict[str, set[P]] = {}
        self.subscriptions: set[str] = set()
        self.mesh: dict[str, set[P]] = {}
        self.fanout: dict[str, set[P]] = {}
        self._lastpub: dict[str, float] = {}
        self._backoff: dict[str, dict[P, float]] = {}
        self.mcache = MessageCache[P](prm.history_length, prm.history_gossip)
        self.seen = SeenCache(prm.seen_ttl)
        self._validated_topics: set[str] = set()
        self._pending: dict[bytes, tuple[Message, P]] = {}
        self._pending_by_peer: dict[P, int] = {}  # source -> its entries in _pending
        self._promises: dict[bytes, dict[P, float]] = {}
        self._peerhave: dict[P, int] = {}
        self._iasked: dict[P, int] = {}
        self._ticks = 0
        # Peers that already have a message (sent IDONTWANT, or a copy while we were still
        # validating ours): msg_id -> (heartbeat tick first noted, peers). Dropped once the
        # message is forwarded, or after params.idontwant_ttl heartbeats.
        self._has: dict[bytes, tuple[int, set[P]]] = {}
        self._idontwant_taken: dict[P, int] = {}

        self._out: dict[P, RPC] = {}
        self._events: list[Event[P]] = []
        self.counters: dict[str, int] = {}
        self._logged: set[str] = set()

    # ------------------------------------------------------------------ outputs
    def take_outgoing(self) -> list[tuple[P, RPC]]:
        out = list(self._out.items())
        self._out = {}
        return out

    def take_events(self) -> list[Event[P]]:
        ev = self._events
        self._events = []
        return ev

    def _rpc(self, peer: P) -> RPC:
        r = self._out.get(peer)
        if r is None:
            r = self._out[peer] = RPC()
        return r

    def _count(self, reason: str, n: int = 1, detail: str = "") -> None:
        """Count a drop/rejection; log each reason once (counters carry the volume)."""
        self.counters[reason] = self.counters.get(reason, 0) + n
        if reason not in self._logged:
            self._logged.add(reason)
            log.info("gossipsub: %s%s (logged once; see counters)", reason, detail)

    # ------------------------------------------------------------------ queries
    def peer_score(self, peer: P, now: float) -> float:
        return self.score.score(peer, now)

    def is_mesh_peer(self, peer: P) -> bool:
        st = self.peers.get(peer)
        return st is not None and st.protocol in MESH_PROTOCOLS

    def set_validated(self, topic: str, validated: bool) -> None:
        """Whether messages of ``topic`` go through async validation (Validate events)."""
        if validated:
            self._validated_topics.add(topic)
        else:
            self._validated_topics.discard(topic)

    # ------------------------------------------------------------------ peers
    def add_peer(
        self, peer: P, protocol: str, outbound: bool, now: float, ips: tuple[str, ...] = ()
    ) -> None:
        if protocol not in (*MESH_PROTOCOLS, FLOODSUB):
            raise ValueError(f"unsupported pubsub protocol {protocol!r}")
        if peer in self.peers:
            st = self.peers[peer]
            st.protocol, st.outbound = protocol, outbound
            return
        self.peers[peer] = _PeerState(protocol, outbound)
        self.score.add_peer(peer, ips, now)
        if self.subscriptions:
            self._rpc(peer).subscriptions.extend(SubOpt(True, t) for t in self.subscriptions)

    def remove_peer(self, peer: P, now: float) -> None:
        st = self.peers.pop(peer, None)
        if st is None:
            return
        for t in st.topics:
            tp = self.topic_peers.get(t)
            if tp is not None:
                tp.discard(peer)
                if not tp:
                    del self.topic_peers[t]
        for peers in self.mesh.values():
            peers.discard(peer)
        for peers in self.fanout.values():
            peers.discard(peer)
        self._out.pop(peer, None)
        self._peerhave.pop(peer, None)
        self._iasked.pop(peer, None)
        self._idontwant_taken.pop(peer, None)
        self.score.remove_peer(peer, now)

    def penalize(self, peer: P, count: float, reason: str) -> None:
        """A behavioural penalty (P7) reported by the driver, e.g. a malformed RPC."""
        self._count(f"penalty_{reason}")
        self.score.add_penalty(peer, count)

    # ------------------------------------------------------------------ subscriptions
    def subscribe(self, topic: str, now: float) -> None:
        if topic in self.subscriptions:
            return
        self.subscriptions.add(topic)
        for p in self.peers:
            self._rpc(p).subscriptions.append(SubOpt(True, topic))
        self._join(topic, now)

    def unsubscribe(self, topic: str, now: float) -> None:
        if topic not in self.subscriptions:
            return
        self.subscriptions.discard(topic)
        for p in self.peers:
            self._rpc(p).subscriptions.append(SubOpt(False, topic))
        self._leave(topic, now)

    def _join(self, topic: str, now: float) -> None:
        if topic in self.mesh:
            return
        backoff = self._backoff.get(topic, {})
        fan = self.fanout.pop(topic, None)
        self._lastpub.pop(topic, None)
        gmap: set[P]
        if fan is not None:
            gmap = {p for p in fan if p not in backoff and self.score.score(p, now) >= 0}
            if len(gmap) < self.params.d:
                more = self._get_peers(
                    topic,
                    self.params.d - len(gmap),
                    lambda p: p not in gmap and p not in backoff and self.score.score(p, now) >= 0,
                )
                gmap.update(more)
        else:
            gmap = set(
                self._get_peers(
                    topic,
                    self.params.d,
                    lambda p: p not in backoff and self.score.score(p, now) >= 0,
                )
            )
        self.mesh[topic] = gmap
        for p in gmap:
            self.score.graft(p, topic, now)
            self._rpc(p).graft.append(topic)

    def _leave(self, topic: str, now: float) -> None:
        gmap = self.mesh.pop(topic, None)
        if gmap is None:
            return
        for p in gmap:
            self.score.prune(p, topic)
            self._rpc(p).prune.append(
                self._make_prune(p, topic, do_px=True, unsubscribe=True, now=now)
            )
            self._add_backoff(p, topic, self.params.unsubscribe_backoff, now)

    def _get_peers(self, topic: str, count: int, keep: Callable[[P], bool]) -> list[P]:
        """Up to ``count`` random mesh-capable peers subscribed to ``topic`` passing ``keep``."""
        cands = [p for p in self.topic_peers.get(topic, ()) if self.is_mesh_peer(p) and keep(p)]
        self._rng.shuffle(cands)
        return cands[:count]

    def _add_backoff(self, peer: P, topic: str, seconds: float, now: float) -> None:
        b = self._backoff.setdefault(topic, {})
        expire = now + seconds
        if b.get(peer, 0.0) < expire:
            b[peer] = expire

    # ------------------------------------------------------------------ publishing
    def publish(self, topic: str, data: bytes, now: float) -> bytes:
        """Publish our own message; returns its message ID.

        Our own messages are never dropped by the router: they are flooded to every topic
        peer above the publish threshold (or the fanout when flood publishing is off) and kept
        in the message cache, so peers that join later still learn of them through IHAVE.
        """
        if len(data) > self.params.max_message_size:
            raise ValueError(
                f"message of {len(data)} bytes exceeds max_message_size "
                f"{self.params.max_message_size}"
            )
        msg = Message(topic=topic, data=data)
        if self.params.sign_messages:
            assert self._signer is not None
            self._seqno += 1
            msg.from_ = self._author
            msg.seqno = self._seqno.to_bytes(8, "big")
            self._signer.sign(msg)
        msg_id = self._msg_id(msg)
        if not self.seen.add(msg_id, now):
            self._count("publish_duplicate")
            return msg_id
        self.score.deliver_message(None, msg_id, topic, now)
        self.mcache.put(msg_id, msg)
        if topic in self.subscriptions:
            self._events.append(Deliver(msg_id, msg, None))
        sent = self._forward(msg, msg_id, None, now)
        if not sent:
            self._count("publish_no_peers")
        return msg_id

    def _forward(self, msg: Message, msg_id: bytes, source: P | None, now: float) -> int:
        topic = msg.topic
        has = self._has.pop(msg_id, None)
        skip = has[1] if has is not None else ()
        tmap = self.topic_peers.get(topic)
        if not tmap:
            return 0
        pub_thr = self.thresholds.publish
        tosend: set[P] = set()
        if source is None and self.params.flood_publish:
            tosend = {p for p in tmap if self.score.score(p, now) >= pub_thr}
        else:
            for p in tmap:
                if not self.is_mesh_peer(p) and self.score.score(p, now) >= pub_thr:
                    tosend.add(p)
            gmap = self.mesh.get(topic)
            if gmap is None:
                gmap = self.fanout.get(topic)
                if not gmap:
                    gmap = set(
                        self._get_peers(
                            topic, self.params.d, lambda p: self.score.score(p, now) >= pub_thr
                        )
                    )
                    if gmap:
                        self.fanout[topic] = gmap
                self._lastpub[topic] = now
            tosend |= gmap
        n = 0
        author = msg.from_
        for p in tosend:
            if p == source or (author is not None and self._peer_id_bytes(p) == author):
                continue
            if p in skip:
                self._count("idontwant_not_sent")
                continue
            self._rpc(p).publish.append(msg)
            n += 1
        return n

    # ------------------------------------------------------------------ receiving
    def handle_rpc(self, peer: P, rpc: RPC, now: float) -> None:
        if peer not in self.peers:
            self._count("rpc_from_unknown_peer")
            return
        if self.score.score(peer, now) < self.thresholds.graylist:
            self._count("rpc_graylisted")
            return
        for sub in rpc.subscriptions:
            self._handle_subscription(peer, sub, now)
        for msg in rpc.publish:
            self._handle_message(peer, msg, now)
        if rpc.has_control():
            self._handle_control(peer, rpc, now)

    def _handle_subscription(self, peer: P, sub: SubOpt, now: float) -> None:
        st = self.peers[peer]
        t = sub.topic
        if sub.subscribe:
            if t in st.topics:
                return
            if len(st.topics) >= self.params.max_subscriptions_per_peer:
                self._count("subscription_limit")
                self.score.add_penalty(peer, 1)
                return
            st.topics.add(t)
            self.topic_peers.setdefault(t, set()).add(peer)
        else:
            if t not in st.topics:
                return
            st.topics.discard(t)
            tp = self.topic_peers.get(t)
            if tp is not None:
                tp.discard(peer)
                if not tp:
                    del self.topic_peers[t]
            mesh = self.mesh.get(t)
            if mesh is not None and peer in mesh:
                mesh.discard(peer)
                self.score.prune(peer, t)
            fan = self.fanout.get(t)
            if fan is not None:
                fan.discard(peer)

    def _handle_message(self, peer: P, msg: Message, now: float) -> None:
        topic = msg.topic
        if len(msg.data) > self.params.max_message_size:
            self._count("reject_oversize")
            self.score.reject_message(peer, None, topic, now)
            return
        if topic not in self.subscriptions:
            self._count("drop_unsubscribed_topic")
            return
        if msg.from_ is not None and msg.from_ == self._author and self._author:
            self._count("reject_self_origin")
            self.score.reject_message(peer, None, topic, now)
            return
        msg_id = self._msg_id(msg)
        if msg_id in self.seen:
            self._count("duplicate")
            self.score.duplicate_message(peer, msg_id, topic, now)
            if msg_id in self._pending:  # still validating ours: this peer needs no copy
                self._note_has(msg_id, peer)
            return
        if self.params.strict_verification:
            assert self._verifier is not None
            if not self._verifier(msg):
                # Not marked seen: a forged copy must not shadow the genuine message.
                self._count("reject_signature")
                self.score.reject_message(peer, None, topic, now)
                return
        validate = topic in self._validated_topics
        if validate and len(self._pending) >= self.params.max_pending_validations:
            # Not marked seen either, so the message can still arrive again later.
            self._count("drop_validation_queue_full")
            return
        pending_here = self._pending_by_peer.get(peer, 0)
        if validate and pending_here >= self.params.max_pending_validations_per_peer:
            self._count("drop_validation_peer_share")
            return
        self.seen.add(msg_id, now)
        self._promises.pop(msg_id, None)
        self.score.validate_message(msg_id, now)
        if validate:
            # Validated inline instead, the message itself goes to the mesh peers in the
            # same flush, which tells them more than an IDONTWANT would.
            if len(msg.data) >= self.params.idontwant_message_threshold:
                self._send_idontwant(topic, msg_id, peer)
            self._pending[msg_id] = (msg, peer)
            self._pending_by_peer[peer] = pending_here + 1
            self._events.append(Validate(msg_id, msg, peer))
        else:
            self._accept(msg_id, msg, peer, now)

    def validation_result(self, msg_id: bytes, verdict: Verdict, now: float) -> None:
        entry = self._pending.pop(msg_id, None)
        if entry is None:
            return
        msg, source = entry
        left = self._pending_by_peer.pop(source) - 1
        if left:
            self._pending_by_peer[source] = left
        if verdict is Verdict.ACCEPT:
            self._accept(msg_id, msg, source, now)
        elif verdict is Verdict.REJECT:
            self._has.pop(msg_id, None)
            self._count("reject_validation")
            self.score.reject_message(source, msg_id, msg.topic, now)
        else:
            self._has.pop(msg_id, None)
            self._count("ignore_validation")
            self.score.reject_message(source, msg_id, msg.topic, now, ignore=True)

    def _accept(self, msg_id: bytes, msg: Message, source: P, now: float) -> None:
        self.score.deliver_message(source, msg_id, msg.topic, now)
        self.mcache.put(msg_id, msg)
        self._events.append(Deliver(msg_id, msg, source))
        self._forward(msg, msg_id, source, now)

    # ------------------------------------------------------------------ control
    def _handle_control(self, peer: P, rpc: RPC, now: float) -> None:
        iwant = self._handle_ihave(peer, rpc.ihave, now) if rpc.ihave else []
        msgs = self._handle_iwant(peer, rpc.iwant, now) if rpc.iwant else []
        prune = self._handle_graft(peer, rpc.graft, now) if rpc.graft else []
        if rpc.prune:
            self._handle_prune(peer, rpc.prune, now)
        if rpc.idontwant:
            self._handle_idontwant(peer, rpc.idontwant)
        if iwant or msgs or prune:
            out = self._rpc(peer)
            out.iwant.extend(iwant)
            out.publish.extend(msgs)
            out.prune.extend(prune)

    def _send_idontwant(self, topic: str, msg_id: bytes, source: P) -> None:
        """v1.2: a large message arrived (signature checked, validation pending); tell the
        other v1.2 mesh peers at once, so that those still validating their copy do not
        forward it to us as well."""
        for p in self.mesh.get(topic, ()):
            if p != source and self.peers[p].protocol == MESHSUB_V12:
                self._rpc(p).idontwant.append(msg_id)

    def _handle_idontwant(self, peer: P, ids: list[bytes]) -> None:
        st = self.peers[peer]
        if st.protocol != MESHSUB_V12:
            self._count("idontwant_from_old_protocol")
            return
        taken = self._idontwant_taken.get(peer, 0)
        room = self.params.max_idontwant_messages - taken
        if len(ids) > room:
            self._count("idontwant_over_limit", len(ids) - max(room, 0))
            ids = ids[: max(room, 0)]
        self._idontwant_taken[peer] = taken + len(ids)
        for msg_id in ids:
            if msg_id in self.seen and msg_id not in self._pending:
                continue  # already forwarded (or never will be): nothing to hold back
            self._note_has(msg_id, peer)

    def _note_has(self, msg_id: bytes, peer: P) -> None:
        entry = self._has.get(msg_id)
        if entry is None:
            entry = self._has[msg_id] = (self._ticks, set())
        entry[1].add(peer)

    def _expire_has(self) -> None:
        oldest = self._ticks - self.params.idontwant_ttl
        for msg_id in [m for m, (tick, _) in self._has.items() if tick < oldest]:
            del self._has[msg_id]

    def _handle_ihave(self, peer: P, ihaves: list[IHave], now: float) -> list[bytes]:
        if self.score.score(peer, now) < self.thresholds.gossip:
            self._count("ihave_below_gossip_threshold")
            return []
        n = self._peerhave.get(peer, 0) + 1
        self._peerhave[peer] = n
        if n > self.params.max_ihave_messages:
            self._count("ihave_flood")
            return []
        asked = self._iasked.get(peer, 0)
        if asked >= self.params.max_ihave_length:
            self._count("ihave_flood")
            return []
        want: dict[bytes, None] = {}
        for ih in ihaves:
            if ih.topic not in self.mesh:
                continue
            for mid in ih.message_ids:
                if mid not in self.seen and mid not in self._pending:
                    want[mid] = None
        if not want:
            return []
        ids = list(want)
        self._rng.shuffle(ids)
        ids = ids[: self.params.max_ihave_length - asked]
        self._iasked[peer] = asked + len(ids)
        # Promise tracking: the peer must deliver (one random) asked message in time.
        mid = self._rng.choice(ids)
        self._promises.setdefault(mid, {}).setdefault(peer, now + self.params.iwant_followup_time)
        return ids

    def _handle_iwant(self, peer: P, ids: list[bytes], now: float) -> list[Message]:
        if self.score.score(peer, now) < self.thresholds.gossip:
            self._count("iwant_below_gossip_threshold")
            return []
        out: dict[bytes, Message] = {}
        for mid in ids:
            got = self.mcache.get_for_peer(mid, peer)
            if got is None:
                continue
            msg, count = got
            if count > self.params.gossip_retransmission:
                self._count("iwant_retransmission_limit")
                continue
            out[mid] = msg
        return list(out.values())

    def _handle_graft(self, peer: P, topics: list[str], now: float) -> list[Prune]:
        if not self.is_mesh_peer(peer):
            return []
        prune: list[str] = []
        do_px = True
        score = self.score.score(peer, now)
        st = self.peers[peer]
        for topic in topics:
            peers = self.mesh.get(topic)
            if peers is None:
                do_px = False  # never leak our peers for a topic we are not in
                self._count("graft_unknown_topic")
                continue
            if peer in peers:
                continue
            expire = self._backoff.get(topic, {}).get(peer)
            if expire is not None and now < expire:
                self._count("graft_during_backoff")
                self.score.add_penalty(peer, 1)
                do_px = False
                flood_cutoff = (
                    expire + self.params.graft_flood_threshold - self.params.prune_backoff
                )
                if now < flood_cutoff:
                    self.score.add_penalty(peer, 1)
                self._add_backoff(peer, topic, self.params.prune_backoff, now)
                prune.append(topic)
                continue
            if score < 0:
                do_px = False
                self._add_backoff(peer, topic, self.params.prune_backoff, now)
                prune.append(topic)
                continue
            if len(peers) >= self.params.d_hi and not st.outbound:
                self._add_backoff(peer, topic, self.params.prune_backoff, now)
                prune.append(topic)
                continue
            self.score.graft(peer, topic, now)
            peers.add(peer)
        return [self._make_prune(peer, t, do_px=do_px, unsubscribe=False, now=now) for t in prune]

    def _handle_prune(self, peer: P, prunes: list[Prune], now: float) -> None:
        score = self.score.score(peer, now)
        for pr in prunes:
            peers = self.mesh.get(pr.topic)
            if peers is None:
                continue
            if peer in peers:
                self.score.prune(peer, pr.topic)
                peers.discard(peer)
            if pr.backoff:
                self._add_backoff(peer, pr.topic, float(pr.backoff), now)
            else:
                self._add_backoff(peer, pr.topic, self.params.prune_backoff, now)
            if pr.peers:
                if score < self.thresholds.accept_px:
                    self._count("px_below_threshold")
                    continue
                self._px_connect(pr.peers)

    def _px_connect(self, infos: list[PeerInfo]) -> None:
        known = {self._peer_id_bytes(p) for p in self.peers}
        cands = [i for i in infos if i.peer_id not in known and i.peer_id != self._author]
        if len(cands) > self.params.prune_peers:
            self._rng.shuffle(cands)
            cands = cands[: self.params.prune_peers]
        if cands:
            self._events.append(PeerExchange(cands))

    def _make_prune(
        self, peer: P, topic: str, *, do_px: bool, unsubscribe: bool, now: float
    ) -> Prune:
        st = self.peers.get(peer)
        if st is None or st.protocol == MESHSUB_V10:
            return Prune(topic)  # v1.0 peers know neither backoff nor PX
        backoff = self.params.unsubscribe_backoff if unsubscribe else self.params.prune_backoff
        px: list[PeerInfo] = []
        if do_px:
            record = self._peer_record or (lambda _p: None)
            px = [
                PeerInfo(self._peer_id_bytes(p), record(p))
                for p in self._get_peers(
                    topic,
                    self.params.prune_peers,
                    lambda x: x != peer and self.score.score(x, now) >= 0,
                )
            ]
        return Prune(topic, px, int(backoff))

    # ------------------------------------------------------------------ heartbeat
    def heartbeat(self, now: float) -> None:
        prm = self.params
        self._ticks += 1
        self.score.refresh(now)
        self.seen.expire(now)
        self._clear_backoff(now)
        self._peerhave.clear()
        self._iasked.clear()
        self._idontwant_taken.clear()
        self._expire_has()
        self._apply_iwant_penalties(now)

        scores = {p: self.score.score(p, now) for p in self.peers}

        def sc(p: P) -> float:
            return scores.get(p, 0.0)

        tograft: dict[P, list[str]] = {}
        toprune: dict[P, list[str]] = {}
        no_px: set[P] = set()

        for topic, peers in self.mesh.items():
            self._maintain_mesh(topic, peers, sc, tograft, toprune, no_px, now)
            self._emit_gossip(topic, peers, sc)

        for topic in [t for t, last in self._lastpub.items() if last + prm.fanout_ttl < now]:
            self.fanout.pop(topic, None)
            del self._lastpub[topic]

        for topic, peers in self.fanout.items():
            self._maintain_fanout(topic, peers, sc)
            self._emit_gossip(topic, peers, sc)

        for p, topics in tograft.items():
            out = self._rpc(p)
            out.graft.extend(topics)
            for t in toprune.pop(p, []):
                out.prune.append(
                    self._make_prune(p, t, do_px=p not in no_px, unsubscribe=False, now=now)
                )
        for p, topics in toprune.items():
            self._rpc(p).prune.extend(
                self._make_prune(p, t, do_px=p not in no_px, unsubscribe=False, now=now)
                for t in topics
            )

        if prm.disconnect_graylisted:
            for p, s in scores.items():
                if s < self.thresholds.graylist:
                    self._count("disconnect_graylisted")
                    self._events.append(Disconnect(p, f"score {s:.1f} below graylist threshold"))

        self.mcache.shift()

    def _maintain_mesh(
        self,
        topic: str,
        peers: set[P],
        sc: Callable[[P], float],
        tograft: dict[P, list[str]],
        toprune: dict[P, list[str]],
        no_px: set[P],
        now: float,
    ) -> None:
        prm = self.params
        backoff = self._backoff.get(topic, {})

        def prune_peer(p: P) -> None:
            self.score.prune(p, topic)
            peers.discard(p)
            self._add_backoff(p, topic, prm.prune_backoff, now)
            toprune.setdefault(p, []).append(topic)

        def graft_peer(p: P) -> None:
            self.score.graft(p, topic, now)
            peers.add(p)
            tograft.setdefault(p, []).append(topic)

        def candidate(p: P) -> bool:
            return p not in peers and p not in backoff and sc(p) >= 0

        # Negative-score peers leave the mesh, without PX.
        for p in [p for p in peers if sc(p) < 0]:
            prune_peer(p)
            no_px.add(p)

        if len(peers) < prm.d_lo:
            for p in self._get_peers(topic, prm.d - len(peers), candidate):
                graft_peer(p)

        if len(peers) > prm.d_hi:
            # Keep the best d_score by score, the rest of D at random, and at least d_out
            # outbound peers (outbound connections are hard for an attacker to forge).
            plst = list(peers)
            self._rng.shuffle(plst)
            plst.sort(key=sc, reverse=True)
            tail = plst[prm.d_score :]
            self._rng.shuffle(tail)
            plst[prm.d_score :] = tail
            outbound = sum(1 for p in plst[: prm.d] if self.peers[p].outbound)
            if outbound < prm.d_out:
                if outbound > 0:
                    have = outbound
                    i = 1
                    while i < prm.d and have > 0:
                        if self.peers[plst[i]].outbound:
                            plst.insert(0, plst.pop(i))
                            have -= 1
                        i += 1
                need = prm.d_out - outbound
                i = prm.d
                while i < len(plst) and need > 0:
                    if self.peers[plst[i]].outbound:
                        plst.insert(0, plst.pop(i))
                        need -= 1
                    i += 1
            for p in plst[prm.d :]:
                prune_peer(p)

        if len(peers) >= prm.d_lo:
            outbound = sum(1 for p in peers if self.peers[p].outbound)
            if outbound < prm.d_out:
                for p in self._get_peers(
                    topic,
                    prm.d_out - outbound,
                    lambda p: candidate(p) and self.peers[p].outbound,
                ):
                    graft_peer(p)

        if self._ticks % prm.opportunistic_graft_ticks == 0 and len(peers) > 1:
            ranked = sorted(peers, key=sc)
            median = sc(ranked[len(ranked) // 2])
            if median < self.thresholds.opportunistic_graft:
                for p in self._get_peers(
                    topic,
                    prm.opportunistic_graft_peers,
                    lambda p: candidate(p) and sc(p) > median,
                ):
                    graft_peer(p)

    def _maintain_fanout(self, topic: str, peers: set[P], sc: Callable[[P], float]) -> None:
        thr = self.thresholds.publish
        tp = self.topic_peers.get(topic, set())
        for p in [p for p in peers if p not in tp or sc(p) < thr]:
            peers.discard(p)
        if len(peers) < self.params.d:
            peers.update(
                self._get_peers(
                    topic, self.params.d - len(peers), lambda p: p not in peers and sc(p) >= thr
                )
            )

    def _emit_gossip(self, topic: str, exclude: set[P], sc: Callable[[P], float]) -> None:
        mids = self.mcache.gossip_ids(topic)
        if not mids:
            return
        self._rng.shuffle(mids)
        peers = [
            p
            for p in self.topic_peers.get(topic, ())
            if p not in exclude and self.is_mesh_peer(p) and sc(p) >= self.thresholds.gossip
        ]
        target = max(self.params.d_lazy, int(self.params.gossip_factor * len(peers)))
        if target < len(peers):
            self._rng.shuffle(peers)
            peers = peers[:target]
        cap = self.params.max_ihave_length
        for p in peers:
            ids = mids
            if len(mids) > cap:
                self._rng.shuffle(mids)
                ids = mids[:cap]
            self._rpc(p).ihave.append(IHave(topic, list(ids)))

    def _clear_backoff(self, now: float) -> None:
        slack = 2 * self.params.heartbeat_interval
        for topic in list(self._backoff):
            b = self._backoff[topic]
            for p in [p for p, exp in b.items() if exp + slack < now]:
                del b[p]
            if not b:
                del self._backoff[topic]

    def _apply_iwant_penalties(self, now: float) -> None:
        broken: dict[P, int] = {}
        for mid in list(self._promises):
            peers = self._promises[mid]
            for p in [p for p, exp in peers.items() if exp < now]:
                del peers[p]
                broken[p] = broken.get(p, 0) + 1
            if not peers:
                del self._promises[mid]
        for p, n in broken.items():
            self._count("iwant_promise_broken", n)
            self.score.add_penalty(p, n)

    def backoff_of(self, peer: P, topic: str) -> float | None:
        return self._backoff.get(topic, {}).get(peer)
