"""Tendermint's adapter for the deterministic simulator (``consensus.sim``): timeouts for
simulated time, and conflicting twins of its messages for equivocating validators."""

from __future__ import annotations

from collections.abc import Mapping

from consensus.spec import BlockMaker
from consensus.tendermint.engine import Timeouts
from consensus.tendermint.messages import Envelope, ProposalMsg, VoteMsg
from node.core.codec import sha256
from node.core.crypto import PrivateKey

__all__ = ["SIM_TIMEOUTS", "TendermintSim"]

# Short enough that thousands of seeds run in minutes, long enough against the simulated
# message delays (up to a second before GST) that rounds still finish after GST.
SIM_TIMEOUTS = Timeouts(
    propose=1.0,
    propose_delta=0.5,
    prevote=0.5,
    prevote_delta=0.25,
    precommit=0.5,
    precommit_delta=0.25,
    commit=0.0,
    gossip=0.5,
)


class TendermintSim:
    sizes = (4, 7)

    @property
    def options(self) -> Mapping[str, object]:
        return SIM_TIMEOUTS.options()

    def twin(self, data: bytes, key: PrivateKey, new_block: BlockMaker) -> bytes | None:
        """A vote for the other value (nil <-> a made-up hash), or a proposal of another
        block the application builds; status and decision messages have no twin."""
        msg = Envelope.decode(data).msg
        if isinstance(msg, VoteMsg):
            v = msg.vote
            other = b"" if v.block_hash else sha256(b"twin" + v.sign_bytes())
            t = v.replace(block_hash=other)
            return Envelope(VoteMsg(t.replace(signature=key.sign(t.sign_bytes())))).encode()
        if isinstance(msg, ProposalMsg):
            p = msg.proposal
            block = new_block(p.height, p.round, p.proposer)
            q = p.replace(block_hash=block.hash, pol_round=0)
            q = q.replace(signature=key.sign(q.sign_bytes()))
            return Envelope(ProposalMsg(q, block.data)).encode()
        return None
