"""The one check a model update and its payload pass, wherever they enter the node.

A ``model_update`` tx only commits to its payload (digest and size); what the aggregator
needs is in the payload: the delta, the round and sample count it was trained for, and the
global model it was trained from. ``check_update`` validates the pair completely (payload
present, digest and size, decodable within ``fl.max_update_bytes``, the architecture's
tensor names and shapes, finite values in range, round, samples and base model consistent
with the signed tx) and returns the decoded update, or raises a ``TxError`` subclass naming
what is wrong, so RPC answers 422 with that code and gossip scores the sender down.

The mempool calls it on admission (``Mempool.add``), which every update goes through:
received over gossip, submitted over RPC, or produced by this node's own FL worker. So what
this node publishes has passed exactly the check its peers apply to it, and an update the
proposer could not include never sits in the mempool counting as work. The application
calls it again on payloads it fetched from peers for a proposed block, which were never
admitted here. The ledger (``State``) checks the tx itself: signature, trainer, round and
that ``base_model`` is the current global model; this module ties the payload to that tx.
"""

from __future__ import annotations

import functools

from fl.models import init_params, model_hash
from fl.update import DecodedUpdate, NonFiniteUpdateError, decode_update
from node.core.codec import CodecError, sha256
from node.ledger.genesis import FLParams
from node.ledger.tx import ModelUpdate, TxError
from node.store.models import ZERO_HASH

__all__ = [
    "BadPayload",
    "MissingPayload",
    "NonFinitePayload",
    "PayloadMismatch",
    "WrongBase",
    "check_update",
    "payload_base",
]


class MissingPayload(TxError):
    """A model update without its payload: nothing a block could aggregate."""

    code = "missing_payload"


class PayloadMismatch(TxError):
    """The payload is not the one the tx commits to (digest, size, round or samples)."""

    code = "payload_mismatch"


class BadPayload(PayloadMismatch):
    """The payload does not decode to an update of the genesis architecture."""

    code = "bad_payload"


class NonFinitePayload(BadPayload):
    code = "non_finite_payload"


class WrongBase(PayloadMismatch):
    """The payload was trained from another model than the one its tx names."""

    code = "wrong_base"


@functools.cache
def _initial_fl_hash(model: str, seed: int) -> bytes:
    return model_hash(init_params(model, seed))


def payload_base(fl: FLParams, ledger_hash: bytes) -> bytes:
    """The ``base_hash`` a payload trained from chain model ``ledger_hash`` carries: the
    hash itself, except round 0's all-zero placeholder, which stands for the model genesis
    derives from its seed (``node.store.models``)."""
    if ledger_hash == ZERO_HASH:
        return _initial_fl_hash(fl.model, fl.init_seed)
    return ledger_hash


def check_update(fl: FLParams, body: ModelUpdate, payload: bytes | None) -> DecodedUpdate:
    """The decoded payload of ``body``, or a TxError saying why it is unusable."""
    if payload is None:
        raise MissingPayload("a model update must come with its payload")
    if len(payload) != body.payload_size or sha256(payload) != body.payload_hash:
        raise PayloadMismatch("payload does not match the update's digest and size")
    try:
        upd = decode_update(payload, fl.model, max_bytes=fl.max_update_bytes)
    except NonFiniteUpdateError as e:
        raise NonFinitePayload(f"update payload is not finite: {e}") from e
    except CodecError as e:  # UpdateError is one; so is a raw msgpack decode failure
        raise BadPayload(f"undecodable update payload: {e}") from e
    if upd.round != body.round or upd.num_samples != body.samples:
        raise PayloadMismatch(
            f"payload is for round {upd.round} with {upd.num_samples} samples, the tx says "
            f"round {body.round} with {body.samples}"
        )
    expected = payload_base(fl, body.base_model)
    if upd.base_hash != expected:
        raise WrongBase(
            f"payload trained from model {upd.base_hash.hex()[:16]}, the tx names "
            f"{expected.hex()[:16]}"
        )
    return upd
