"""Messages for heights the engine has not reached yet, kept until it gets there.

Catch-up arrives in batches (``CATCHUP_BATCH`` decisions at once) and validators a height
ahead start voting before we finished ours, so messages for the next few heights are
worth keeping. They are also the cheapest memory to make a node spend: nothing decides
them yet. So the engine only offers messages it has checked against the validator set it
expects at that height (a member's valid signature, a certificate of 2f+1 of the power),
and this buffer bounds what it keeps in messages and bytes, overall and per signer: one
validator (or one height's decisions) cannot fill it for the others.
"""

from __future__ import annotations

from collections.abc import Iterator

from consensus.engine import Peer
from consensus.tendermint.messages import MAX_BLOCK_BYTES
from consensus.types import ValidatorSet

__all__ = [
    "MAX_FUTURE_BYTES",
    "MAX_FUTURE_MESSAGES",
    "MAX_FUTURE_SIGNER_BYTES",
    "MAX_FUTURE_SIGNER_MESSAGES",
    "FutureBuffer",
]

# Overall bounds: many validators' votes and a few full proposals for the next heights.
MAX_FUTURE_MESSAGES = 4096
MAX_FUTURE_BYTES = 64 << 20
# Per signer (a validator, or the decisions of one height): one full proposal and its
# votes for every round it may get ahead (MAX_ROUND_AHEAD) of several heights.
MAX_FUTURE_SIGNER_BYTES = MAX_BLOCK_BYTES + (1 << 20)
MAX_FUTURE_SIGNER_MESSAGES = 512


class FutureBuffer:
    """Checked messages for future heights (see the module docstring), in arrival order.

    Each entry remembers the validator set it was checked against, so the engine does not
    verify it again when that set is the one in effect once it reaches the height."""

    def __init__(self) -> None:
        self._items: list[tuple[Peer, bytes, int, bytes, ValidatorSet]] = []
        self._signer_bytes: dict[bytes, int] = {}
        self._signer_count: dict[bytes, int] = {}
        self.bytes = 0

    def add(self, peer: Peer, data: bytes, height: int, signer: bytes, vset: ValidatorSet) -> bool:
        """Keep ``data`` unless a bound would be exceeded; True when kept."""
        size = len(data)
        if (
            len(self._items) >= MAX_FUTURE_MESSAGES
            or self.bytes + size > MAX_FUTURE_BYTES
            or self._signer_bytes.get(signer, 0) + size > MAX_FUTURE_SIGNER_BYTES
            or self._signer_count.get(signer, 0) >= MAX_FUTURE_SIGNER_MESSAGES
        ):
            return False
        self._items.append((peer, data, height, signer, vset))
        self.bytes += size
        self._signer_bytes[signer] = self._signer_bytes.get(signer, 0) + size
        self._signer_count[signer] = self._signer_count.get(signer, 0) + 1
        return True

    def take(self) -> list[tuple[Peer, bytes, int, ValidatorSet]]:
        """Everything kept, emptying the buffer."""
        items = [(p, d, h, v) for p, d, h, _, v in self._items]
        self._items = []
        self._signer_bytes.clear()
        self._signer_count.clear()
        self.bytes = 0
        return items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple[Peer, bytes, int]]:
        return ((p, d, h) for p, d, h, _, _ in self._items)
