"""CometBFT's weighted round-robin proposer selection (proposer priority).

Every validator accumulates its voting power as priority on each increment; the one with
the highest priority (ties: lowest address) proposes and pays back the total power. Before
incrementing, priorities are rescaled so max - min stays within 2 x total power and centred
on their average, exactly as CometBFT's ``IncrementProposerPriority`` /
``RescalePriorities`` / ``shiftByAvgProposerPriority`` do, including Go's division
semantics (truncation for the rescale, Euclidean for the average). New validators start at
-1.125 x total power so joining cannot be used to jump the queue.

One deliberate, documented difference: the proposer of round r at a height is computed as
the height's schedule incremented r times *in one call*, so it never depends on which
rounds a node happened to skip.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

__all__ = [
    "MAX_TOTAL_VOTING_POWER",
    "PRIORITY_WINDOW_SIZE_FACTOR",
    "ProposerSchedule",
    "round_proposers",
]

PRIORITY_WINDOW_SIZE_FACTOR = 2
MAX_TOTAL_VOTING_POWER = ((1 << 63) - 1) // 8
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def _clip(x: int) -> int:
    return _I64_MIN if x < _I64_MIN else _I64_MAX if x > _I64_MAX else x


def _go_div(a: int, b: int) -> int:
    """Go's int64 division: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


class ProposerSchedule:
    """Powers and priorities keyed by address; mutate with ``increment``/``update``."""

    __slots__ = ("power", "priority", "proposer")

    def __init__(self, power: dict[bytes, int], priority: dict[bytes, int]) -> None:
        self.power = power
        self.priority = priority
        self.proposer: bytes | None = None

    @classmethod
    def new(cls, validators: Iterable[tuple[bytes, int]]) -> ProposerSchedule:
        """Like CometBFT's NewValidatorSet: add everyone as new, then increment once."""
        s = cls({}, {})
        s.update(list(validators))
        if s.power:
            s.increment(1)
        return s

    def copy(self) -> ProposerSchedule:
        c = ProposerSchedule(dict(self.power), dict(self.priority))
        c.proposer = self.proposer
        return c

    @property
    def total(self) -> int:
        return sum(self.power.values())

    def get_proposer(self) -> bytes:
        if self.proposer is None:
            self.proposer = self._most()
        return self.proposer

    def _most(self) -> bytes:
        # Highest priority, ties to the lowest address.
        return min(self.priority, key=lambda a: (-self.priority[a], a))

    def increment(self, times: int) -> bytes:
        if not self.power:
            raise ValueError("empty validator set")
        if times <= 0:
            raise ValueError("times must be positive")
        total = self.total
        self._rescale(PRIORITY_WINDOW_SIZE_FACTOR * total)
        self._shift_by_average()
        prio = self.priority
        proposer = b""
        for _ in range(times):
            for a, p in self.power.items():
                prio[a] = _clip(prio[a] + p)
            proposer = self._most()
            prio[proposer] = _clip(prio[proposer] - total)
        self.proposer = proposer
        return proposer

    def _rescale(self, diff_max: int) -> None:
        if diff_max <= 0 or not self.priority:
            return
        values = self.priority.values()
        diff = max(values) - min(values)
        if diff > diff_max:
            ratio = (diff + diff_max - 1) // diff_max
            for a in self.priority:
                self.priority[a] = _go_div(self.priority[a], ratio)

    def _shift_by_average(self) -> None:
        n = len(self.priority)
        if n == 0:
            return
        avg = sum(self.priority.values()) // n  # big.Int.Div: Euclidean (floor for n > 0)
        for a in self.priority:
            self.priority[a] = _clip(self.priority[a] - avg)

    def update(self, changes: list[tuple[bytes, int]]) -> None:
        """Apply (address, new power) changes; power 0 removes (CometBFT's change set)."""
        seen: set[bytes] = set()
        for addr, p in changes:
            if addr in seen:
                raise ValueError(f"duplicate validator update {addr.hex()}")
            if p < 0:
                raise ValueError("negative voting power")
            if p == 0 and addr not in self.power:
                raise ValueError(f"cannot remove unknown validator {addr.hex()}")
            seen.add(addr)
        updates = [(a, p) for a, p in changes if p > 0]
        removals = [a for a, p in changes if p == 0]
        # Total after updates but before removals: the base for new validators' priority.
        new_power = dict(self.power)
        for a, p in updates:
            new_power[a] = p
        tvp_before_removals = sum(new_power.values())
        if tvp_before_removals > MAX_TOTAL_VOTING_POWER:
            raise ValueError("total voting power exceeds the maximum")
        for a, p in updates:
            if a not in self.priority:
                self.priority[a] = -(tvp_before_removals + (tvp_before_removals >> 3))
            self.power[a] = p
        for a in removals:
            del self.power[a]
            del self.priority[a]
        if not self.power and changes:
            raise ValueError("update would remove every validator")
        self._rescale(PRIORITY_WINDOW_SIZE_FACTOR * self.total)
        self._shift_by_average()
        self.proposer = None


def round_proposers(schedule: ProposerSchedule) -> Iterator[bytes]:
    """Proposers of rounds 1, 2, ... at a height whose round-0 schedule is ``schedule``.

    Equal to ``schedule.copy().increment(r)`` for each r (one rescale, then r steps), but
    computed incrementally so looking up round r costs O(n) amortised.
    """
    walk = schedule.copy()
    total = walk.total
    walk._rescale(PRIORITY_WINDOW_SIZE_FACTOR * total)
    walk._shift_by_average()
    prio = walk.priority
    while True:
        for a, p in walk.power.items():
            prio[a] = _clip(prio[a] + p)
        proposer = walk._most()
        prio[proposer] = _clip(prio[proposer] - total)
        yield proposer
