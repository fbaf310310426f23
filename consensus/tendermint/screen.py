"""What a node checks of a Tendermint message before gossip forwards it.

The engine verifies everything it uses, but only for itself: without a check at the
gossip layer, a message is relayed to every peer before anyone looks at it, so junk of
the maximum size, or well-formed messages signed by keys that are no validators, flood
the mesh at no cost to the sender. ``screen`` decodes the message and checks what can be
checked without the engine's state: the chain, that the signer is a validator of the
message's height (by the application's sets, the newest one for heights beyond them),
the signature, and for a proposal that its bytes are the block it signed. Status
announcements are unsigned and tiny (the engine budgets its answers); decisions are
only ever sent to one peer directly, never gossiped.
"""

from __future__ import annotations

from consensus.engine import Screen, ScreenContext
from consensus.tendermint.messages import (
    DecisionMsg,
    Envelope,
    ProposalMsg,
    StatusMsg,
    signed_part,
)
from node.core.codec import CodecError

__all__ = ["screen"]


def screen(data: bytes, ctx: ScreenContext) -> Screen:
    try:
        msg = Envelope.decode(data).msg
    except CodecError:
        return Screen.REJECT
    if isinstance(msg, StatusMsg):
        return Screen.ACCEPT
    if isinstance(msg, DecisionMsg):
        return Screen.REJECT
    chain, height, signer, sig, signed = signed_part(msg)
    if chain != ctx.chain_id:
        return Screen.REJECT
    vset = ctx.validators_at(height)
    known = vset is not None
    if vset is None:
        vset = ctx.latest_validators()
    member = vset.by_address().get(signer)
    if member is None:
        # A key that is no validator where we know the set; beyond it, maybe one to come.
        return Screen.REJECT if known else Screen.IGNORE
    if not ctx.verifier(member.public_key, sig, signed):
        return Screen.REJECT  # an address names one key: a bad signature is forged
    if isinstance(msg, ProposalMsg) and ctx.block_id(msg.block) != msg.proposal.block_hash:
        return Screen.REJECT
    return Screen.ACCEPT
