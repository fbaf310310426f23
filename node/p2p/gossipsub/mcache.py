"""The message cache (recent messages, served to IWANT and advertised by IHAVE) and the
seen cache (message IDs with a TTL, so a message is processed at most once).

Both are driven by the router's heartbeat: the message cache shifts one window per
heartbeat, the seen cache expires by the ``now`` the router passes in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from node.p2p.gossipsub.messages import Message

P = TypeVar("P", bound=Hashable)


@dataclass(slots=True)
class _Entry(Generic[P]):
    msg: Message
    # How often each peer asked for this message by IWANT, to bound retransmissions.
    peer_tx: dict[P, int] = field(default_factory=dict)


class MessageCache(Generic[P]):
    """Sliding windows of message IDs; ``history_length`` windows are kept, the newest
    ``history_gossip`` are advertised."""

    def __init__(self, history_length: int, history_gossip: int) -> None:
        if not 0 < history_gossip <= history_length:
            raise ValueError("need 0 < history_gossip <= history_length")
        self._gossip = history_gossip
        self._windows: list[list[tuple[bytes, str]]] = [[] for _ in range(history_length)]
        self._msgs: dict[bytes, _Entry[P]] = {}

    def __len__(self) -> int:
        return len(self._msgs)

    def __contains__(self, msg_id: bytes) -> bool:
        return msg_id in self._msgs

    def put(self, msg_id: bytes, msg: Message) -> None:
        if msg_id in self._msgs:
            return
        self._msgs[msg_id] = _Entry(msg)
        self._windows[0].append((msg_id, msg.topic))

    def get(self, msg_id: bytes) -> Message | None:
        e = self._msgs.get(msg_id)
        return e.msg if e is not None else None

    def get_for_peer(self, msg_id: bytes, peer: P) -> tuple[Message, int] | None:
        """The message and how many times ``peer`` has now asked for it (including this one)."""
        e = self._msgs.get(msg_id)
        if e is None:
            return None
        n = e.peer_tx.get(peer, 0) + 1
        e.peer_tx[peer] = n
        return e.msg, n

    def gossip_ids(self, topic: str) -> list[bytes]:
        return [mid for w in self._windows[: self._gossip] for mid, t in w if t == topic]

    def shift(self) -> None:
        for mid, _topic in self._windows.pop():
            self._msgs.pop(mid, None)
        self._windows.insert(0, [])


class SeenCache:
    """Message IDs with an expiry. Insertion order equals expiry order because the TTL is
    fixed and ``now`` never decreases, so expiring is a pop from the front."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._d: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, msg_id: bytes) -> bool:
        return msg_id in self._d

    def add(self, msg_id: bytes, now: float) -> bool:
        """Record ``msg_id``; False if it was already there."""
        if msg_id in self._d:
            return False
        self._d[msg_id] = now + self._ttl
        return True

    def expire(self, now: float) -> None:
        d = self._d
        while d:
            mid, exp = next(iter(d.items()))
            if exp > now:
                break
            del d[mid]
