"""Plain value types for GossipSub RPCs, independent of the protobuf runtime.

The router is a sans-I/O state machine: it consumes and produces these dataclasses, and
``wire.py`` alone converts them to and from bytes. Keeping protobuf objects out of the core
lets the in-memory simulator and the unit tests drive the router without any encoding cost,
and makes every field the router reads an explicit, already-validated Python value.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from blake3 import blake3


class Verdict(enum.Enum):
    """Outcome of application validation, as libp2p defines it.

    ACCEPT delivers and forwards; REJECT drops the message and penalises every peer that sent
    it (score P4); IGNORE drops it without penalty (e.g. stale but honest).
    """

    ACCEPT = "accept"
    REJECT = "reject"
    IGNORE = "ignore"


@dataclass(slots=True)
class Message:
    """One pubsub message (the protobuf ``Message``). ``from_`` is the author's peer ID bytes.

    ``encoded`` caches the protobuf encoding of fields 1-4 (``wire.signed_field_parts``),
    which signing, verifying and every relay of the message need; it records the field
    objects it was made from, so a message changed afterwards is simply encoded anew.
    """

    topic: str
    data: bytes
    from_: bytes | None = None
    seqno: bytes | None = None
    signature: bytes | None = None
    key: bytes | None = None
    encoded: EncodedFields | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class EncodedFields:
    """``head + data + tail`` is the encoding of fields 1-4 of a message whose topic,
    data, from and seqno are (by identity) the objects recorded here."""

    topic: str
    data: bytes
    from_: bytes | None
    seqno: bytes | None
    head: bytes
    tail: bytes

    def matches(self, msg: Message) -> bool:
        return (
            self.data is msg.data
            and self.topic is msg.topic
            and self.from_ is msg.from_
            and self.seqno is msg.seqno
        )


@dataclass(slots=True)
class SubOpt:
    subscribe: bool
    topic: str


@dataclass(slots=True)
class IHave:
    topic: str
    message_ids: list[bytes]


@dataclass(slots=True)
class PeerInfo:
    """A peer exchange record: a peer ID and an optional signed peer record (envelope)."""

    peer_id: bytes
    signed_peer_record: bytes | None = None


@dataclass(slots=True)
class Prune:
    topic: str
    peers: list[PeerInfo] = field(default_factory=list)
    backoff: int | None = None  # seconds; None for v1.0 peers, which know no backoff field


@dataclass(slots=True)
class RPC:
    subscriptions: list[SubOpt] = field(default_factory=list)
    publish: list[Message] = field(default_factory=list)
    ihave: list[IHave] = field(default_factory=list)
    iwant: list[bytes] = field(default_factory=list)
    graft: list[str] = field(default_factory=list)
    prune: list[Prune] = field(default_factory=list)
    idontwant: list[bytes] = field(default_factory=list)

    def has_control(self) -> bool:
        return bool(self.ihave or self.iwant or self.graft or self.prune or self.idontwant)

    def is_empty(self) -> bool:
        return not (self.subscriptions or self.publish or self.has_control())


MessageIdFn = Callable[[Message], bytes]


def content_message_id(msg: Message) -> bytes:
    """Our default: BLAKE3 of the data, so the same payload is one message network-wide.

    Content addressing suits fedchain: a transaction or model update re-published by a second
    node is recognised as a duplicate instead of flooding the mesh twice. The ID must be
    collision resistant (a forged collision would make peers drop a real message as seen),
    and every node computes it for every copy it receives, before anything else: BLAKE3
    hashes a large payload in a fraction of SHA-256's time, even against SHA-NI.
    """
    return blake3(msg.data).digest()


def default_message_id(msg: Message) -> bytes:
    """The libp2p spec default: ``from || seqno`` (unique per author and sequence number)."""
    return (msg.from_ or b"") + (msg.seqno or b"")
