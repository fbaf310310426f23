"""A deterministic in-memory network of GossipSub routers.

Because the router is sans-I/O, a whole network is a loop that moves RPCs from one
router's outbox to another's ``handle_rpc`` in FIFO order, with a virtual clock for
heartbeats. Tests and ``scripts/bench_gossip.py`` use it for the 20-node mesh, for
protocol scenarios (backoff, PX, scoring) and for hostile peers, at no I/O cost; with
``through_wire`` every RPC is encoded and decoded as on a real stream.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from node.p2p.gossipsub.messages import RPC, Message, MessageIdFn, Verdict, content_message_id
from node.p2p.gossipsub.params import MESHSUB_V12, GossipParams, PeerScoreParams
from node.p2p.gossipsub.router import (
    Deliver,
    Disconnect,
    GossipSubRouter,
    PeerExchange,
    Validate,
)
from node.p2p.gossipsub.signing import IdentitySigner, verify_message
from node.p2p.gossipsub.wire import decode_rpc, encode_rpc
from node.p2p.peer_id import IdentityKey, PeerID

Validator = Callable[[PeerID, Message], Verdict]


@dataclass
class SimNode:
    key: IdentityKey
    router: GossipSubRouter[PeerID]
    delivered: list[bytes] = field(default_factory=list)
    copies_received: int = 0  # message copies that arrived in RPCs (first + duplicates)
    bytes_received: int = 0
    px_learnt: list[bytes] = field(default_factory=list)

    @property
    def peer_id(self) -> PeerID:
        return self.key.peer_id


class SimNetwork:
    def __init__(
        self,
        n: int,
        *,
        seed: int = 1,
        params: GossipParams | None = None,
        score_params: PeerScoreParams | None = None,
        msg_id_fn: MessageIdFn = content_message_id,
        through_wire: bool = True,
        slow_validation: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        self.now = 1000.0
        self.through_wire = through_wire
        # Real validation is asynchronous: copies sent at the same time as the first one
        # arrive before it is validated and forwarded. With slow_validation, verdicts wait
        # until every RPC in flight has been delivered.
        self.slow_validation = slow_validation
        self._unvalidated: deque[tuple[SimNode, PeerID, Validate[PeerID]]] = deque()
        self.validators: dict[str, Validator] = {}
        self.queue: deque[tuple[PeerID, PeerID, RPC]] = deque()
        self.nodes: dict[PeerID, SimNode] = {}
        self.links: set[frozenset[PeerID]] = set()
        self.disconnects: list[tuple[PeerID, PeerID, str]] = []
        for i in range(n):
            key = IdentityKey.from_seed(bytes([i % 256, i // 256]) + bytes(30))
            router = GossipSubRouter[PeerID](
                signer=IdentitySigner(key),
                verifier=verify_message,
                peer_id_bytes=PeerID.to_bytes,
                params=params or GossipParams(),
                score_params=score_params,
                msg_id_fn=msg_id_fn,
                seqno_start=i << 32,
                rng=random.Random(self.rng.random()),
            )
            self.nodes[key.peer_id] = SimNode(key, router)
        self.ids = list(self.nodes)

    # ------------------------------------------------------------------ topology
    def connect(self, a: PeerID, b: PeerID, protocol: str = MESHSUB_V12) -> None:
        if a == b or frozenset((a, b)) in self.links:
            return
        self.links.add(frozenset((a, b)))
        self.nodes[a].router.add_peer(b, protocol, True, self.now)
        self.nodes[b].router.add_peer(a, protocol, False, self.now)
        self.pump()

    def disconnect(self, a: PeerID, b: PeerID) -> None:
        if frozenset((a, b)) not in self.links:
            return
        self.links.discard(frozenset((a, b)))
        self.nodes[a].router.remove_peer(b, self.now)
        self.nodes[b].router.remove_peer(a, self.now)

    def random_graph(self, degree: int) -> None:
        """Each node dials ``degree`` random others (so average degree is about 2x)."""
        for a in self.ids:
            for b in self.rng.sample([x for x in self.ids if x != a], degree):
                self.connect(a, b)

    # ------------------------------------------------------------------ driving
    def subscribe_all(self, topic: str) -> None:
        for node in self.nodes.values():
            node.router.subscribe(topic, self.now)
        self.pump()

    def set_validator(self, topic: str, fn: Validator) -> None:
        self.validators[topic] = fn
        for node in self.nodes.values():
            node.router.set_validated(topic, True)

    def publish(self, origin: PeerID, topic: str, data: bytes) -> bytes:
        mid = self.nodes[origin].router.publish(topic, data, self.now)
        self.pump()
        return mid

    def heartbeat(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            self.now += 1.0
            for node in self.nodes.values():
                node.router.heartbeat(self.now)
            self.pump()

    def inject(self, src: PeerID, dst: PeerID, rpc: RPC) -> None:
        """Deliver an arbitrary RPC (e.g. from a hostile test peer) and run to quiescence."""
        self.queue.append((src, dst, rpc))
        self.pump()

    def pump(self, max_steps: int = 10_000_000) -> None:
        for _ in range(max_steps):
            while self._collect():
                pass
            if not self.queue:
                if not self._unvalidated:
                    return
                while self._unvalidated:
                    self._validate(*self._unvalidated.popleft())
                continue
            src, dst, rpc = self.queue.popleft()
            node = self.nodes.get(dst)
            if node is None or frozenset((src, dst)) not in self.links:
                continue
            if self.through_wire:
                raw = encode_rpc(rpc)
                node.bytes_received += len(raw)
                rpc = decode_rpc(raw)
            node.copies_received += len(rpc.publish)
            node.router.handle_rpc(src, rpc, self.now)
        raise RuntimeError("simulation did not quiesce")

    def _validate(self, node: SimNode, pid: PeerID, ev: Validate[PeerID]) -> None:
        fn = self.validators.get(ev.msg.topic)
        verdict = fn(pid, ev.msg) if fn is not None else Verdict.ACCEPT
        node.router.validation_result(ev.msg_id, verdict, self.now)

    def _collect(self) -> bool:
        """Move outboxes to the queue and handle events; True if any event was handled
        (handling one, e.g. a validation verdict, can produce more)."""
        busy = False
        for pid, node in list(self.nodes.items()):
            for dst, rpc in node.router.take_outgoing():
                self.queue.append((pid, dst, rpc))
            for ev in node.router.take_events():
                busy = True
                if isinstance(ev, Deliver):
                    node.delivered.append(ev.msg_id)
                elif isinstance(ev, Validate):
                    if self.slow_validation:
                        self._unvalidated.append((node, pid, ev))
                    else:
                        self._validate(node, pid, ev)
                elif isinstance(ev, Disconnect):
                    self.disconnects.append((pid, ev.peer, ev.reason))
                    self.disconnect(pid, ev.peer)
                elif isinstance(ev, PeerExchange):
                    node.px_learnt.extend(i.peer_id for i in ev.peers)
        return busy
