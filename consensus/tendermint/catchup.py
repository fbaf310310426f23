"""Catch-up gossip beside the Tendermint algorithm: decisions of past heights for peers
that are behind, and the status announcements that let them ask.

A node that missed a height (it was partitioned, crashed, or just slow) cannot finish it
from the round's votes alone: the others have moved on and stopped re-sending them. So
every node announces its (height, round) in an unsigned StatusMsg, and a peer that has
already decided that height answers with a DecisionMsg: the block and its commit
certificate. The receiver trusts nothing in it: ``certified`` checks every precommit like
a vote, and the engine still asks the application to verify the block before deciding it
through rule L49. A peer in an earlier round of our own height gets that round's proposal
and votes instead, which is what a restarted node may be missing.

``Catchup`` owns the decisions kept for peers and the replies already sent; the engine
owns the algorithm and calls in here.
"""

from __future__ import annotations

from collections import OrderedDict

from consensus.block import Block
from consensus.engine import Broadcast, Effect, Peer, SendTo, Verifier
from consensus.tendermint.height import HeightState, VoteSet
from consensus.tendermint.messages import DecisionMsg, Envelope, ProposalMsg, StatusMsg, VoteMsg
from consensus.tendermint.valset import HeightVals
from consensus.types import Commit

__all__ = ["CATCHUP_BATCH", "KEEP_DECISIONS", "Catchup"]

# Decisions kept to help peers, and how many heights one answer covers (also how far
# ahead of our height the engine buffers messages, since catch-up arrives in batches).
KEEP_DECISIONS = 64
CATCHUP_BATCH = 8


class Catchup:
    def __init__(self, chain_id: str, verifier: Verifier) -> None:
        self.chain_id = chain_id
        self.verifier = verifier
        # height -> the decided block and its commit, the newest KEEP_DECISIONS heights
        self.decisions: OrderedDict[int, tuple[Block, Commit]] = OrderedDict()
        # (peer, height) answered since the last gossip tick: one answer per tick is
        # enough, however many of the peer's messages from that height arrive meanwhile
        self.replied: set[tuple[Peer, int]] = set()

    # ------------------------------------------------------------------ our decisions

    def remember(self, height: int, block: Block, commit: Commit) -> None:
        self.decisions[height] = (block, commit)
        while len(self.decisions) > KEEP_DECISIONS:
            self.decisions.popitem(last=False)

    def decision(self, height: int) -> tuple[Block, Commit] | None:
        return self.decisions.get(height)

    def forget_replies(self) -> None:
        """Allow answering the same peer and height again (each gossip tick, new height)."""
        self.replied.clear()

    # ------------------------------------------------------------------ asking

    def status(self, height: int, round: int) -> Broadcast:
        return Broadcast(Envelope(StatusMsg(height, round)).encode())

    # ------------------------------------------------------------------ answering

    def on_status(
        self, peer: Peer, msg: StatusMsg, height: int, hs: HeightState, out: list[Effect]
    ) -> None:
        """A peer reported where it is; ``height`` and ``hs`` are where we are."""
        if msg.height < height:
            self.help_peer(peer, msg.height, height, out)
        elif msg.height == height and msg.round < hs.round:
            self._help_round(peer, msg.round, hs, out)

    def help_peer(self, peer: Peer, height: int, our_height: int, out: list[Effect]) -> None:
        """Send a peer at ``height`` the decisions it lacks, up to CATCHUP_BATCH heights."""
        if (peer, height) in self.replied or height not in self.decisions:
            return
        for h in range(height, min(height + CATCHUP_BATCH, our_height)):
            if h not in self.decisions or (peer, h) in self.replied:
                continue
            self.replied.add((peer, h))
            block, commit = self.decisions[h]
            out.append(SendTo(peer, Envelope(DecisionMsg(commit, block.data)).encode()))

    def _help_round(self, peer: Peer, round: int, hs: HeightState, out: list[Effect]) -> None:
        """A peer is stuck in an earlier round of our height: send it what we saw there
        (its own votes may be all it has if it restarted), as CometBFT's vote gossip
        does for the round a peer reports."""
        prop = hs.proposals.get(round)
        if prop is not None:
            out.append(SendTo(peer, Envelope(ProposalMsg(prop[0], prop[1].data)).encode()))
        for vs in (hs.prevotes.get(round), hs.precommits.get(round)):
            if vs is not None:
                for votes in vs.by_hash.values():
                    for v in votes:
                        out.append(SendTo(peer, Envelope(VoteMsg(v)).encode()))

    # ------------------------------------------------------------------ receiving

    def certified(self, commit: Commit, vals: HeightVals, known: VoteSet) -> bool:
        """True when ``commit`` carries valid precommits of 2f+1 of ``vals``' power.
        Precommits already in ``known`` (this round's, verified on arrival) are not
        verified again."""
        members = vals.members
        power, seen = 0, set()
        for sig in commit.signatures:
            m = members.get(sig.validator)
            if m is None or sig.validator in seen:
                return False
            seen.add(sig.validator)
            vote = commit.vote_for(self.chain_id, sig)
            if not known.has(vote) and not self.verifier(
                m.public_key, vote.signature, vote.sign_bytes()
            ):
                return False
            power += m.power
        return power >= vals.quorum
