"""JSON renderings for the RPC: byte strings as lowercase hex, addresses as 40 hex digits.

Blocks are rendered as header plus transaction summaries (hash, type, sender, nonce, fee,
size and the body's fields), not as raw bytes: users and dashboards want to read them, and
anyone who needs the canonical bytes can recompute them from the typed record.
"""

from __future__ import annotations

from typing import Any

from consensus.types import Commit, ValidatorSet
from node.core.codec import Record
from node.ledger.block import Block, Header
from node.ledger.tx import Evidence, ProposalEvidence, Tx

__all__ = ["render_block", "render_commit", "render_header", "render_tx", "render_validators"]


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, Record):
        return {name: _plain(getattr(v, name)) for name, _, _ in v._fields()}
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    return v


def render_header(h: Header) -> dict[str, Any]:
    out = _plain(h)
    assert isinstance(out, dict)
    out["hash"] = h.hash.hex()
    return out


def render_tx(tx: Tx) -> dict[str, Any]:
    body = tx.body
    summary: dict[str, Any]
    if isinstance(body, Evidence | ProposalEvidence):
        # Two full votes (proposals) are noise in a summary; name the offender and height.
        ev = body.evidence
        summary = {"validator": ev.validator.hex(), "height": ev.height}
    else:
        summary = _plain(body)
    return {
        "hash": tx.hash.hex(),
        "type": type(body).TAG,
        "sender": tx.address.hex(),
        "nonce": tx.nonce,
        "fee": tx.fee,
        "size": tx.size,
        "body": summary,
    }


def render_commit(c: Commit | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "height": c.height,
        "round": c.round,
        "block_hash": c.block_hash.hex(),
        "signers": [s.validator.hex() for s in c.signatures],
    }


def render_block(b: Block) -> dict[str, Any]:
    return {
        "hash": b.hash.hex(),
        "height": b.height,
        "header": render_header(b.header),
        "num_txs": len(b.txs),
        "txs": [render_tx(tx) for tx in b.txs],
        "last_commit": render_commit(b.last_commit),
    }


def render_validators(vs: ValidatorSet) -> list[dict[str, Any]]:
    return [
        {"address": v.address.hex(), "public_key": v.public_key.hex(), "power": v.power}
        for v in vs.validators
    ]
