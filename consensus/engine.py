"""The engine-neutral event/effect vocabulary and the Engine interface.

Engines are sans-I/O state machines in the style of h11: ``handle(event)`` updates state
and returns the effects the caller must perform (send bytes, arm a timer, ask the
application something, commit a block). They never read a clock, open a socket, start a
thread or draw a random number, so the node, the deterministic simulator and unit tests
drive the very same code. Types here carry no engine-specific detail: a chain-based
proof-of-stake engine uses the same events and effects.

Driving an engine (what the node does, and what consensus.sim.network does):

1. Build it with ``consensus.registry.create_engine(genesis_engine_name, EngineConfig(...))``
   using a ``GuardedSigner`` over a ``FileStateStore`` and, after a restart, the latest
   ``Checkpoint.data`` as ``recovery``; then feed ``Start()``.
2. Perform effects in the order returned. App-facing ones (RequestProposal,
   RequestVerification, CommitBlock) go through ``consensus.app.AppConnector``, run
   inline, and the events it returns are fed back. Store ``Checkpoint.data`` atomically
   with the block of its height. Arm a timer per ScheduleTimeout and feed TimeoutFired
   when it expires (stale ones are ignored by the engine). Hand EvidenceFound to the
   mempool as an evidence transaction.
3. Feed every consensus message from the network as MessageReceived(peer, bytes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from consensus.block import Block, sha256_id
from consensus.privval import Signer
from consensus.types import Commit, Validator, ValidatorSet
from node.core.codec import Record
from node.core.crypto import verify

__all__ = [
    "BlockCommitted",
    "BlockId",
    "Broadcast",
    "Checkpoint",
    "CommitBlock",
    "Effect",
    "Engine",
    "EngineConfig",
    "Event",
    "EvidenceFound",
    "MemoVerifier",
    "MessageReceived",
    "ProposalReady",
    "ProposalVerdict",
    "RecoveryError",
    "RequestProposal",
    "RequestVerification",
    "ScheduleTimeout",
    "Screen",
    "ScreenContext",
    "SendTo",
    "Start",
    "TimeoutFired",
    "TxsAvailable",
    "Verifier",
]

# A peer is whatever the transport uses to name a connection (libp2p peer id, sim index).
Peer = str


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Start:
    """Begin (or resume after a restart) at the engine's current height."""


@dataclass(frozen=True)
class MessageReceived:
    peer: Peer
    data: bytes


@dataclass(frozen=True)
class TimeoutFired:
    kind: str
    height: int
    round: int


@dataclass(frozen=True)
class ProposalReady:
    """The application built the block requested by a RequestProposal."""

    height: int
    round: int
    block: Block


@dataclass(frozen=True)
class ProposalVerdict:
    """The application's process_proposal answer for a RequestVerification."""

    height: int
    block: Block
    accepted: bool


@dataclass(frozen=True)
class BlockCommitted:
    """The application finalized and durably committed the block of ``height``."""

    height: int
    app_hash: bytes
    validator_updates: tuple[Validator, ...] = ()


@dataclass(frozen=True)
class TxsAvailable:
    """The mempool has something to commit (engines that idle between blocks use it)."""


Event = (
    Start
    | MessageReceived
    | TimeoutFired
    | ProposalReady
    | ProposalVerdict
    | BlockCommitted
    | TxsAvailable
)


# ---------------------------------------------------------------------------- effects


@dataclass(frozen=True)
class Broadcast:
    """Send ``data`` to every peer (the engine has already processed it itself)."""

    data: bytes


@dataclass(frozen=True)
class SendTo:
    peer: Peer
    data: bytes


@dataclass(frozen=True)
class ScheduleTimeout:
    """Deliver TimeoutFired(kind, height, round) after ``duration`` seconds."""

    kind: str
    height: int
    round: int
    duration: float


@dataclass(frozen=True)
class RequestProposal:
    height: int
    round: int
    proposer: bytes
    last_commit: Commit | None


@dataclass(frozen=True)
class RequestVerification:
    height: int
    round: int
    block: Block


@dataclass(frozen=True)
class CommitBlock:
    """``block`` is decided at ``height``; ``commit`` is its certificate (next last_commit)."""

    height: int
    block: Block
    commit: Commit


@dataclass(frozen=True)
class EvidenceFound:
    """Proof that a validator equivocated; the ledger turns it into a slashing tx."""

    evidence: Record


@dataclass(frozen=True)
class Checkpoint:
    """Opaque recovery state to store atomically with the block of ``height``.

    After a crash the engine is rebuilt from the latest checkpoint (see the registry's
    ``recovery`` argument), so it resumes with the right validator sets.
    """

    height: int
    data: bytes


Effect = (
    Broadcast
    | SendTo
    | ScheduleTimeout
    | RequestProposal
    | RequestVerification
    | CommitBlock
    | EvidenceFound
    | Checkpoint
)


Verifier = Callable[[bytes, bytes, bytes], bool]


class MemoVerifier:
    """A ``Verifier`` that remembers its last answers: a node checks a consensus message
    where gossip validates it and again in the engine, and re-sent votes arrive many
    times; the signature is verified once. Bounded: it forgets everything when full."""

    MAX_ENTRIES = 65536

    def __init__(self, verifier: Verifier = verify) -> None:
        self._verify = verifier
        self._memo: dict[tuple[bytes, bytes, bytes], bool] = {}

    def __call__(self, public_key: bytes, signature: bytes, message: bytes) -> bool:
        key = (public_key, signature, message)
        ok = self._memo.get(key)
        if ok is None:
            if len(self._memo) >= self.MAX_ENTRIES:
                self._memo.clear()
            ok = self._memo[key] = self._verify(public_key, signature, message)
        return ok


# The application's id of block bytes (the hash votes refer to), or None for bytes that
# are no block. Engines check it before they act on a proposal's bytes, so bytes that are
# not the block a proposer signed are dropped as junk instead of counting as its block.
BlockId = Callable[[bytes], bytes | None]


class Screen(Enum):
    """An engine's verdict on a message before the network forwards it (gossip
    validation): ACCEPT forwards and delivers it; REJECT drops it as something only a
    faulty or hostile sender produces (junk, a non-validator's or forged signature, bytes
    that are not the signed block), and the sender is scored down; IGNORE drops it
    without blame (it may be honest but cannot be checked yet)."""

    ACCEPT = "accept"
    IGNORE = "ignore"
    REJECT = "reject"


@dataclass(frozen=True)
class ScreenContext:
    """What an engine's message screen may ask the node (``EngineSpec.screen``)."""

    chain_id: str
    # The validator set the application has for a height, None where it does not know
    # it (further ahead than the set changes already decided, or long past).
    validators_at: Callable[[int], ValidatorSet | None]
    # The newest set it knows: the best guess for heights beyond validators_at.
    latest_validators: Callable[[], ValidatorSet]
    verifier: Verifier = verify
    block_id: BlockId = sha256_id


class RecoveryError(ValueError):
    """Recovery bytes an engine will not resume from: they do not decode, or they are for
    another height or validator set than the application's own state (``EngineConfig``)
    says. Recovery bytes may be a peer's checkpoint, so the caller asks another peer."""


@dataclass(frozen=True)
class EngineConfig:
    """Everything an engine is built from; ``options`` holds its settings from genesis
    (checked against the schema the engine declares, see ``consensus.spec``)."""

    chain_id: str
    signer: Signer
    # The validator set of ``initial_height`` (the genesis set when starting fresh), as
    # the application's own state has it: an engine never takes a validator set from
    # recovery bytes, which may come from a peer (see RecoveryError).
    validators: ValidatorSet
    initial_height: int = 1
    # The latest Checkpoint.data the engine emitted (ours, or a peer's after block sync),
    # to resume at ``initial_height``.
    recovery: bytes | None = None
    options: Mapping[str, object] = field(default_factory=dict)
    # (public_key, signature, message) -> bool. Injected so a simulator running many
    # nodes in one process can share a memo; defaults to node.core.crypto.verify.
    verifier: Verifier = verify
    # The set of ``initial_height + 1`` when the application already knows it differs
    # from ``validators`` (changes take effect two heights after the block deciding them);
    # None: the same set.
    next_validators: ValidatorSet | None = None
    # How the application identifies block bytes; the simulator's (and the tests')
    # blocks are identified by their SHA-256, the node's by their header hash.
    block_id: BlockId = sha256_id


class Engine(ABC):
    """A consensus engine: feed it events, perform the effects it returns, in order.

    Build one with ``consensus.registry.create_engine(name, EngineConfig(...))``; a new
    engine is registered as described in ``consensus.registry``.
    """

    @property
    @abstractmethod
    def height(self) -> int:
        """The height the engine is currently deciding."""

    @property
    def round(self) -> int:
        """The round of ``height`` the engine is in; engines without rounds stay at 0.

        For observers (the simulator's liveness measurements); nothing depends on it."""
        return 0

    @abstractmethod
    def handle(self, event: Event) -> list[Effect]:
        """Consume one event. Never raises for bad network input: junk is dropped."""
