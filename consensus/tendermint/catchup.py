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
# Status announcements are unsigned and anyone may send them under any number of peer
# IDs, while each answer can be many decisions: without bounds a 116-byte message bought
# tens of KiB (megabytes with full blocks) of replies. So what a peer was sent is
# remembered for REPLY_AGAIN_TICKS gossip ticks (long enough that a peer re-announcing
# every tick does not get a copy each time, short enough that a lost answer is re-sent),
# and replies are budgeted in bytes per gossip tick, per peer and over all peers. One
# message larger than a budget still goes out when nothing else did in that tick, so a
# full block never becomes unsendable. A peer that needs more than this catches up by
# block sync, which has its own bounds.
REPLY_AGAIN_TICKS = 5
PEER_REPLY_BYTES_PER_TICK = 1 << 20
GLOBAL_REPLY_BYTES_PER_TICK = 4 << 20
# (peer, height, round) answers remembered at most: made-up peer IDs cannot grow it.
MAX_TRACKED_REPLIES = 4096


class Catchup:
    def __init__(self, chain_id: str, verifier: Verifier) -> None:
        self.chain_id = chain_id
        self.verifier = verifier
        # height -> the decided block and its commit, the newest KEEP_DECISIONS heights
        self.decisions: OrderedDict[int, tuple[Block, Commit]] = OrderedDict()
        # (peer, height, round; -1 for a decision) -> the tick it was answered in
        self.replied: OrderedDict[tuple[Peer, int, int], int] = OrderedDict()
        self.ticks = 0
        # bytes sent this tick, per peer and in all
        self.spent: dict[Peer, int] = {}
        self.spent_total = 0

    # ------------------------------------------------------------------ our decisions

    def remember(self, height: int, block: Block, commit: Commit) -> None:
        self.decisions[height] = (block, commit)
        while len(self.decisions) > KEEP_DECISIONS:
            self.decisions.popitem(last=False)

    def decision(self, height: int) -> tuple[Block, Commit] | None:
        return self.decisions.get(height)

    def tick(self) -> None:
        """A gossip tick: refill the reply budgets, forget answers REPLY_AGAIN_TICKS old."""
        self.ticks += 1
        self.spent.clear()
        self.spent_total = 0
        while self.replied:
            key, at = next(iter(self.replied.items()))
            if self.ticks - at < REPLY_AGAIN_TICKS:
                break
            del self.replied[key]

    def _answered(self, key: tuple[Peer, int, int]) -> bool:
        return key in self.replied

    def _note(self, key: tuple[Peer, int, int]) -> None:
        self.replied[key] = self.ticks
        self.replied.move_to_end(key)
        while len(self.replied) > MAX_TRACKED_REPLIES:
            self.replied.popitem(last=False)

    def _send(self, peer: Peer, data: bytes, out: list[Effect]) -> bool:
        """Send within the budgets (see REPLY_AGAIN_TICKS); False when refused."""
        size = len(data)
        mine = self.spent.get(peer, 0)
        if self.spent_total and self.spent_total + size > GLOBAL_REPLY_BYTES_PER_TICK:
            return False
        if mine and mine + size > PEER_REPLY_BYTES_PER_TICK:
            return False
        if peer not in self.spent and len(self.spent) >= MAX_TRACKED_REPLIES:
            return False
        self.spent[peer] = mine + size
        self.spent_total += size
        out.append(SendTo(peer, data))
        return True

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
            self._help_round(peer, height, msg.round, hs, out)

    def help_peer(self, peer: Peer, height: int, our_height: int, out: list[Effect]) -> None:
        """Send a peer at ``height`` the decisions it lacks, up to CATCHUP_BATCH heights."""
        if self._answered((peer, height, -1)) or height not in self.decisions:
            return
        for h in range(height, min(height + CATCHUP_BATCH, our_height)):
            key = (peer, h, -1)
            if h not in self.decisions or self._answered(key):
                continue
            block, commit = self.decisions[h]
            if not self._send(peer, Envelope(DecisionMsg(commit, block.data)).encode(), out):
                return
            self._note(key)

    def _help_round(
        self, peer: Peer, height: int, round: int, hs: HeightState, out: list[Effect]
    ) -> None:
        """A peer is stuck in an earlier round of our height: send it what we saw there
        (its own votes may be all it has if it restarted), as CometBFT's vote gossip
        does for the round a peer reports."""
        key = (peer, height, round)
        if self._answered(key):
            return
        self._note(key)
        msgs = []
        prop = hs.proposals.get(round)
        if prop is not None:
            msgs.append(Envelope(ProposalMsg(prop[0], prop[1].data)).encode())
        for vs in (hs.prevotes.get(round), hs.precommits.get(round)):
            if vs is not None:
                for votes in vs.by_hash.values():
                    msgs.extend(Envelope(VoteMsg(v)).encode() for v in votes)
        for data in msgs:
            if not self._send(peer, data, out):
                return

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
