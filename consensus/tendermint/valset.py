"""Per-height validator sets, proposer lookup, and the H+2 rule for set changes.

Like CometBFT, the block finalized at height H returns validator updates that take effect
at height H + 2: H + 1 is already fixed (its proposer schedule was derived when H started
and its validators may be signing already), so every node applies a change at the same,
predictable height. Each height's proposer schedule is the previous ``next`` schedule;
the new ``next`` is that copy plus the updates, incremented once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from consensus.tendermint.messages import MAX_BLOCK_BYTES
from consensus.tendermint.proposer import ProposerSchedule, round_proposers
from consensus.types import MAX_VALIDATORS, Commit, Validator, ValidatorSet
from node.core.codec import I64, U64, Bytes, Bytes20, Record, Seq

__all__ = ["HeightVals", "ScheduleRecord", "TendermintCheckpoint", "next_schedule"]


class ScheduleRecord(Record):
    validators: ValidatorSet
    priorities: Annotated[tuple[I64, ...], Seq(MAX_VALIDATORS)]
    # The schedule's current proposer: after an increment it is not simply the validator
    # with the highest remaining priority, so it is stored like CometBFT stores it.
    proposer: Bytes20

    @classmethod
    def of(cls, vset: ValidatorSet, schedule: ProposerSchedule) -> ScheduleRecord:
        return cls(
            vset,
            tuple(schedule.priority[v.address] for v in vset.validators),
            schedule.get_proposer(),
        )

    def schedule(self) -> ProposerSchedule:
        vals = self.validators.validators
        if len(self.priorities) != len(vals):
            raise ValueError("one priority per validator expected")
        if self.proposer not in {v.address for v in vals}:
            raise ValueError("proposer is not a validator")
        s = ProposerSchedule(
            {v.address: v.power for v in vals},
            {v.address: p for v, p in zip(vals, self.priorities, strict=True)},
        )
        s.proposer = self.proposer
        return s


class TendermintCheckpoint(Record):
    """What a restarted engine needs beyond the signer's state: the height to decide,
    its validator set and proposer priorities, the next height's, and the last decision."""

    height: U64
    current: ScheduleRecord
    next: ScheduleRecord
    last_commit: Commit | None
    # The block last_commit certifies: after a restart this node can still hand peers
    # one height behind the decision they are missing.
    last_block: Annotated[bytes, Bytes(0, MAX_BLOCK_BYTES)]


class HeightVals:
    """One height's validators: membership, quorum and the proposer of every round."""

    def __init__(self, vset: ValidatorSet, schedule: ProposerSchedule) -> None:
        self.vset = vset
        self.schedule = schedule
        self.members: dict[bytes, Validator] = vset.by_address()
        self.total = vset.total_power
        self.quorum = vset.quorum()
        self._proposers = [schedule.get_proposer()]
        self._walk: Iterator[bytes] | None = None

    def power(self, address: bytes) -> int:
        v = self.members.get(address)
        return v.power if v is not None else 0

    def proposer(self, round: int) -> bytes:
        while len(self._proposers) <= round:
            if self._walk is None:
                self._walk = round_proposers(self.schedule)
            self._proposers.append(next(self._walk))
        return self._proposers[round]

    def record(self) -> ScheduleRecord:
        return ScheduleRecord.of(self.vset, self.schedule)


def next_schedule(
    vset: ValidatorSet, schedule: ProposerSchedule, updates: tuple[Validator, ...]
) -> tuple[ValidatorSet, ProposerSchedule]:
    """The set and schedule one height after (vset, schedule), with ``updates`` applied."""
    nsched = schedule.copy()
    if updates:
        merged = {v.address: v for v in vset.validators}
        for u in updates:
            if u.power == 0:
                merged.pop(u.address, None)
            else:
                merged[u.address] = u
        nsched.update([(u.address, u.power) for u in updates])
        vset = ValidatorSet.of(list(merged.values()))
    nsched.increment(1)
    return vset, nsched
