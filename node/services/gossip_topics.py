"""The node's GossipSub topics and the validators that guard them.

Three topics per chain (the chain id is in the name, so two chains never share a mesh):

* ``txs``: one encoded ``Tx`` per message (never a model update: that needs its payload);
* ``updates``: an ``UpdateGossip`` (the signed ``model_update`` tx and its payload), so a
  validator holds the payload before any block includes it;
* ``consensus``: engine messages, screened by the engine's own check
  (``EngineSpec.screen``, see ``consensus_screen``) before they are forwarded: junk, a
  key that is no validator of the message's height, a forged signature or a proposal
  whose bytes are not the block it signed are REJECTed, so they travel no further than
  the first honest node and cost their sender its score.

Validation IS admission: a tx or update that the mempool accepts is forwarded, one it
refuses for a reason only a faulty or hostile sender produces (bad signature, wrong chain,
a payload that is not the signed one, does not decode, is not finite or was trained from
another model than its tx names) is REJECTed, which penalises the forwarding peer's score,
and one that is merely stale or already known is IGNOREd without penalty. The update check
itself is ``node.app.updates.check_update``, run by ``Mempool.add``. Our own publications
went through that same admission before publishing (RPC, the FL worker and the evidence
reporter all submit through the mempool), so they are accepted as they are: what this node
sends is exactly what its peers' validators accept.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Annotated, ClassVar

from consensus.engine import BlockId, Screen, ScreenContext, Verifier
from consensus.registry import engine_spec
from consensus.types import ValidatorSet
from node.app.mempool import AlreadyKnown
from node.app.updates import MissingPayload, PayloadMismatch
from node.core.codec import Bytes, CodecError, Record
from node.ledger.tx import (
    MAX_TX_BYTES,
    BadSignature,
    FeeTooLow,
    ModelUpdate,
    Tx,
    TxError,
    TxTooLarge,
    WrongChain,
)
from node.p2p.gossipsub.messages import Message, Verdict, content_message_id
from node.p2p.peer_id import PeerID
from node.store.ledger import Ledger

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "AuthorBudget",
    "Topics",
    "UpdateGossip",
    "consensus_screen",
    "consensus_validator",
    "tx_validator",
    "update_validator",
]

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 8 << 20
MAX_CONSENSUS_BYTES = (8 << 20) + (256 << 10)

# Errors only a broken or malicious sender causes: the forwarder is scored down.
_HOSTILE: tuple[type[TxError], ...] = (
    BadSignature,
    WrongChain,
    TxTooLarge,
    FeeTooLow,
    PayloadMismatch,  # and its kinds: undecodable, not finite, wrong base model
    MissingPayload,
)

Admit = Callable[[Tx, bytes | None], None]
GossipValidator = Callable[[PeerID, Message], Awaitable[Verdict]]


class Topics:
    def __init__(self, chain_id: str) -> None:
        self.txs = f"/fedchain/{chain_id}/txs/1"
        self.updates = f"/fedchain/{chain_id}/updates/1"
        self.consensus = f"/fedchain/{chain_id}/consensus/1"

    def message_id(self, msg: Message) -> bytes:
        """Content IDs for txs and updates (a tx re-published by a second node is one
        message), author + sequence number for consensus messages: an engine re-sends an
        identical vote on purpose (the first copy may have reached nobody while the mesh
        formed), and a content ID would make GossipSub drop every re-send as a duplicate
        for as long as its seen-cache remembers the first."""
        if msg.topic == self.consensus and msg.from_ is not None and msg.seqno is not None:
            return b"c" + msg.from_ + msg.seqno
        return content_message_id(msg)


class UpdateGossip(Record):
    """A model update as gossiped: the signed tx and the payload it commits to."""

    MAX_SIZE: ClassVar[int] = MAX_TX_BYTES + MAX_PAYLOAD_BYTES + 64
    tx: Annotated[bytes, Bytes(1, MAX_TX_BYTES)]
    payload: Annotated[bytes, Bytes(1, MAX_PAYLOAD_BYTES)]


def _verdict_for(err: TxError) -> Verdict:
    if isinstance(err, _HOSTILE):
        return Verdict.REJECT
    return Verdict.IGNORE


def tx_validator(me: PeerID, admit: Admit) -> GossipValidator:
    async def validate(peer: PeerID, msg: Message) -> Verdict:
        if peer == me:
            return Verdict.ACCEPT
        try:
            tx = Tx.from_bytes(msg.data)
        except CodecError:
            return Verdict.REJECT
        if isinstance(tx.body, ModelUpdate):
            return Verdict.REJECT  # updates travel with their payload on the updates topic
        try:
            admit(tx, None)
        except AlreadyKnown:
            return Verdict.IGNORE
        except TxError as e:
            return _verdict_for(e)
        return Verdict.ACCEPT

    return validate


def update_validator(
    me: PeerID, admit: Admit, *, current_round: Callable[[], int]
) -> GossipValidator:
    async def validate(peer: PeerID, msg: Message) -> Verdict:
        if peer == me:
            return Verdict.ACCEPT
        try:
            g = UpdateGossip.decode(msg.data)
            tx = Tx.from_bytes(g.tx)
        except CodecError:
            return Verdict.REJECT
        body = tx.body
        if not isinstance(body, ModelUpdate):
            return Verdict.REJECT
        if body.round != current_round():
            return Verdict.IGNORE  # stale or early, but possibly honest: not even decoded
        try:
            admit(tx, g.payload)
        except AlreadyKnown:
            return Verdict.IGNORE
        except TxError as e:
            return _verdict_for(e)
        return Verdict.ACCEPT

    return validate


_SCREENED = {Screen.ACCEPT: Verdict.ACCEPT, Screen.IGNORE: Verdict.IGNORE}


def consensus_screen(
    engine: str, ledger: Ledger, *, verifier: Verifier, block_id: BlockId
) -> Callable[[bytes], Screen]:
    """The engine's message check over this node's ledger: the validator sets it knows
    are those of the heights up to ``valset_delay`` past its tip (changes decided by a
    block take effect that much later) and of the recent past it keeps for evidence."""
    state = ledger.state
    delay = state.genesis.staking.valset_delay

    def validators_at(height: int) -> ValidatorSet | None:
        if height > ledger.height + delay:
            return None
        try:
            return ledger.validator_set(height)
        except KeyError:
            return None

    ctx = ScreenContext(
        state.chain_id,
        validators_at,
        lambda: ledger.validator_set(ledger.height + delay),
        verifier=verifier,
        block_id=block_id,
    )
    check = engine_spec(engine).screen
    return lambda data: check(data, ctx)


# An author's consensus messages: an honest engine publishes a handful per round (a
# proposal, two votes, a status per gossip tick) and a batch of decisions when it helps a
# lagging peer, so a sustained rate far above that, signed or not (status is unsigned
# and costs the author nothing), is a flood. Per author, as a token bucket.
AUTHOR_MSGS_PER_SECOND = 50.0
AUTHOR_MSGS_BURST = 400.0
MAX_TRACKED_AUTHORS = 4096


class AuthorBudget:
    """Token buckets of consensus messages per message author, at most
    ``MAX_TRACKED_AUTHORS`` of them (the longest idle is forgotten first)."""

    def __init__(
        self,
        rate: float = AUTHOR_MSGS_PER_SECOND,
        burst: float = AUTHOR_MSGS_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def take(self, author: bytes) -> bool:
        """One message from ``author``: False when its budget is spent."""
        now = self._clock()
        tokens, last = self._buckets.pop(author, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        ok = tokens >= 1.0
        self._buckets[author] = (tokens - 1.0 if ok else tokens, now)
        if len(self._buckets) > MAX_TRACKED_AUTHORS:
            self._buckets.popitem(last=False)
        return ok


def consensus_validator(
    me: PeerID, screen: Callable[[bytes], Screen], budget: AuthorBudget | None = None
) -> GossipValidator:
    """Size, then the author's message budget, then the engine's screen. Over budget, the
    author itself is blamed (REJECT) when it sent the message to us; a relay that
    forwarded it is not (IGNORE): its own count of that author may differ from ours."""
    budget = budget if budget is not None else AuthorBudget()
    me_bytes = me.to_bytes()

    async def validate(peer: PeerID, msg: Message) -> Verdict:
        if len(msg.data) > MAX_CONSENSUS_BYTES:
            return Verdict.REJECT
        if peer == me:
            return Verdict.ACCEPT  # the engine built it
        author = msg.from_ if msg.from_ is not None else peer.to_bytes()
        if author != me_bytes and not budget.take(author):
            return Verdict.REJECT if author == peer.to_bytes() else Verdict.IGNORE
        return _SCREENED.get(screen(msg.data), Verdict.REJECT)

    return validate
