"""A tiny deterministic application for the simulator.

Blocks are short text records; ``is_valid`` is the rule every honest node applies in
``process_proposal`` (hash matches, tagged ``ok``, for the right height), so the validity
checker can re-apply it to whatever got committed. Byzantine nodes get an instance that
builds invalid blocks and/or accepts everything.
"""

from __future__ import annotations

from collections.abc import Mapping

from consensus.app import FinalizeResult, PrepareProposalRequest
from consensus.block import Block
from consensus.types import Commit, Validator
from node.core.codec import sha256

__all__ = ["SimApp", "is_valid"]


def is_valid(height: int, block: Block) -> bool:
    return (
        sha256(block.data) == block.hash
        and block.data.startswith(b"ok|")
        and f"|h={height}|".encode() in block.data
    )


class SimApp:
    """Its ``committed`` list and ``app_hash`` play the node's disk: they survive a crash."""

    def __init__(
        self,
        tag: str,
        power_changes: Mapping[int, tuple[Validator, ...]] | None = None,
        *,
        propose_invalid: bool = False,
        accept_all: bool = False,
    ) -> None:
        self.tag = tag
        self.power_changes = power_changes or {}
        self.propose_invalid = propose_invalid
        self.accept_all = accept_all
        self.seq = 0
        self.committed: list[tuple[int, Block, Commit]] = []
        self.app_hash = b"\0" * 32

    def prepare_proposal(self, req: PrepareProposalRequest) -> Block:
        self.seq += 1
        kind = "bad" if self.propose_invalid else "ok"
        lc = req.last_commit.block_hash.hex()[:16] if req.last_commit else "-"
        data = f"{kind}|h={req.height}|r={req.round}|by={self.tag}|n={self.seq}|lc={lc}".encode()
        return Block(sha256(data), data)

    def process_proposal(self, height: int, block: Block) -> bool:
        return self.accept_all or is_valid(height, block)

    def finalize_block(self, height: int, block: Block, commit: Commit) -> FinalizeResult:
        self.committed.append((height, block, commit))
        self.app_hash = sha256(self.app_hash + block.hash)
        return FinalizeResult(self.app_hash, self.power_changes.get(height, ()))

    def commit(self) -> None:
        """Nothing to flush: this state is the simulated disk."""
