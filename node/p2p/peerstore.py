"""What the host knows about other peers, kept by one owner: the ``PeerStore``.

- addresses, from our own dials, identify and GossipSub peer exchange (dialable TCP
  addresses without ``/p2p``, newest first);
- signed peer records, from identify and peer exchange (only a valid record signed by
  the peer itself, and only a newer one replaces an older one);
- what identify told us on the peer's current connection (its protocols and agent):
  forgotten when its last connection closes, since a reconnecting peer may run other
  software;
- the addresses peers observed us at (a hint for what others can dial).

Protocols record into it through its methods, so every table stays bounded in one place:
at most ``MAX_PEERSTORE`` peers are known, and a new one takes the place of the
disconnected peer seen longest ago (a peer is seen when it connects or something about
it is recorded). A flood of identities, records or addresses therefore costs a capped
table and ages out, instead of growing memory or locking later peers out; only when
every known peer is connected is a newcomer refused (and counted).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from node.p2p.multiaddr import Multiaddr, MultiaddrError
from node.p2p.peer_id import PeerID
from node.p2p.peer_record import PeerRecordError, open_record

MAX_ADDRS_PER_PEER = 16
MAX_PEERSTORE = 8192
MAX_OBSERVED_ADDRS = 64
MAX_AGENT_LENGTH = 128

Count = Callable[[str, PeerID | None, str], None]


def is_dialable(addr: Multiaddr) -> bool:
    """A TCP address with a concrete host and port."""
    try:
        host, port = addr.tcp_endpoint()
    except MultiaddrError:
        return False
    return port != 0 and host not in ("0.0.0.0", "::")


@dataclass(frozen=True)
class Identified:
    """What a connected peer told us about itself in its latest identify message."""

    protocols: tuple[str, ...]
    agent: str


class PeerStore:
    """Addresses, signed records and identify results of other peers, all bounded.

    ``count(reason, peer, detail)`` is the owner's counter (the host's), told when a table
    is full or a record is refused.
    """

    def __init__(self, local: PeerID, count: Count) -> None:
        self._local = local
        self._count = count
        self._addrs: dict[PeerID, list[Multiaddr]] = {}
        self._records: dict[PeerID, tuple[int, bytes]] = {}  # peer -> (seq, envelope)
        self._identified: dict[PeerID, Identified] = {}
        self._observed: Counter[Multiaddr] = Counter()
        self._seen: OrderedDict[PeerID, None] = OrderedDict()  # known peers, oldest first
        self._connected: set[PeerID] = set()

    # -- the bound ----------------------------------------------------------------------------

    def _admit(self, peer: PeerID) -> bool:
        """Mark ``peer`` seen now, making room for it if it is new; False if the store is
        full of connected peers (counted)."""
        if peer in self._seen:
            self._seen.move_to_end(peer)
            return True
        if len(self._seen) >= MAX_PEERSTORE:
            victim = next((p for p in self._seen if p not in self._connected), None)
            if victim is None:
                self._count("peerstore_full", peer, "")
                return False
            self._forget(victim)
        self._seen[peer] = None
        return True

    def _forget(self, peer: PeerID) -> None:
        self._seen.pop(peer, None)
        self._addrs.pop(peer, None)
        self._records.pop(peer, None)
        self._identified.pop(peer, None)

    def __len__(self) -> int:
        return len(self._seen)

    # -- addresses ----------------------------------------------------------------------------

    def addrs(self, peer: PeerID) -> list[Multiaddr]:
        return list(self._addrs.get(peer, ()))

    def add_addrs(self, peer: PeerID, addrs: Iterable[Multiaddr]) -> None:
        """Remember dialable addresses (without /p2p) for a peer, newest first, bounded."""
        if peer == self._local or not self._admit(peer):
            return
        known = self._addrs.setdefault(peer, [])
        for addr in addrs:
            plain = addr.without_peer_id()
            if not is_dialable(plain):
                continue
            if plain in known:
                known.remove(plain)
            known.insert(0, plain)
        del known[MAX_ADDRS_PER_PEER:]

    # -- signed peer records ------------------------------------------------------------------

    def record(self, peer: PeerID) -> bytes | None:
        """The latest valid signed record ``peer`` gave us (to forward in PRUNE PX)."""
        entry = self._records.get(peer)
        return entry[1] if entry is not None else None

    def consume_record(self, peer: PeerID, record: bytes) -> bool:
        """Verify and remember ``peer``'s signed record and the addresses it signs; False
        (and counted) if invalid."""
        try:
            rec = open_record(record)
        except PeerRecordError as e:
            self._count("peer_record_invalid", peer, str(e))
            return False
        if rec.peer != peer:
            self._count("peer_record_invalid", peer, "record belongs to another peer")
            return False
        if peer == self._local:
            return True
        if not self._admit(peer):
            return False
        old = self._records.get(peer)
        if old is not None and old[0] > rec.seq:
            return True  # keep the newer one we already have
        self._records[peer] = (rec.seq, record)
        self.add_addrs(peer, rec.addrs)
        return True

    # -- identify -----------------------------------------------------------------------------

    def identified(self, peer: PeerID) -> Identified | None:
        """What ``peer`` last told us in identify, while it stays connected."""
        return self._identified.get(peer)

    def set_identified(self, peer: PeerID, protocols: Iterable[str], agent: str) -> None:
        if peer != self._local and self._admit(peer):
            self._identified[peer] = Identified(tuple(protocols), agent[:MAX_AGENT_LENGTH])

    def add_observed(self, addr: Multiaddr) -> None:
        """A peer saw us at ``addr``; counting stops at ``MAX_OBSERVED_ADDRS`` addresses."""
        if len(self._observed) < MAX_OBSERVED_ADDRS:
            self._observed[addr] += 1

    def observed_addrs(self) -> Counter[Multiaddr]:
        """How often peers reported each address they saw us at (a copy)."""
        return Counter(self._observed)

    def connected(self, peer: PeerID) -> None:
        """The peer's first connection opened: it is seen, and kept while connected."""
        if peer != self._local and self._admit(peer):
            self._connected.add(peer)

    def disconnected(self, peer: PeerID) -> None:
        """The peer's last connection closed: forget what it said about its session (it
        may now be evicted, the longest unseen first)."""
        self._connected.discard(peer)
        self._identified.pop(peer, None)
