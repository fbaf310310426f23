"""Blocks: header, transactions and the previous height's commit certificate.

Choices (kept consistent by ``State.apply_block``):

* ``app_hash`` is the state hash after the PREVIOUS block (after genesis for height 1), as
  in CometBFT: a proposer can build the header before executing its own transactions, and
  the commit for block H then also certifies the state after H-1.
* ``txs_root`` is SHA-256 over the concatenated tx hashes (a flat hash list, not a Merkle
  tree): blocks are always fetched whole here, so inclusion proofs are not needed and a
  flat hash is the cheapest thing that commits to the exact ordered list.
* ``prev_hash`` of height 1 is the genesis hash, which binds the chain to its genesis.
* ``fl_round`` and ``global_model_hash`` are the FL registry AFTER this block: a block that
  includes model updates closes the current round, so it carries the round + 1 and the hash
  of the newly aggregated model; any other block repeats the current values.
* ``last_commit_hash`` is the hash of ``last_commit`` (zeros at height 1), as CometBFT's
  LastCommitHash: without it two nodes could store different signature sets for one block.
* The block hash is the header hash; the header commits to everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Annotated, ClassVar

from consensus.types import ChainId, Commit
from node.core.codec import U64, Bytes20, Bytes32, CodecError, Record, Seq, sha256
from node.ledger.tx import Tx

__all__ = [
    "MAX_BLOCK_BYTES",
    "MAX_BLOCK_TXS",
    "Block",
    "BlockError",
    "Header",
    "commit_hash",
    "txs_root",
]

MAX_BLOCK_TXS = 10_000
MAX_BLOCK_BYTES = 8 << 20


class BlockError(Exception):
    """A block cannot be applied; the state is left exactly as before."""


def txs_root(txs: Sequence[Tx]) -> bytes:
    return sha256(b"".join(tx.hash for tx in txs))


def commit_hash(commit: Commit | None) -> bytes:
    """The header's commitment to ``last_commit`` (all zeros for height 1, which has none),
    so the block hash pins the exact signature set and every node stores the same bytes."""
    return bytes(32) if commit is None else commit.hash


class Header(Record):
    chain_id: ChainId
    height: U64
    time_ms: U64
    prev_hash: Bytes32
    proposer: Bytes20
    txs_root: Bytes32
    last_commit_hash: Bytes32  # see commit_hash()
    app_hash: Bytes32
    validators_hash: Bytes32
    fl_round: U64
    global_model_hash: Bytes32

    def _check(self, path: str) -> None:
        if self.height == 0:
            raise CodecError("block heights start at 1", path)


class Block(Record):
    MAX_SIZE: ClassVar[int] = MAX_BLOCK_BYTES

    header: Header
    txs: Annotated[tuple[Tx, ...], Seq(MAX_BLOCK_TXS)]
    last_commit: Commit | None

    def _check(self, path: str) -> None:
        h = self.header
        if (h.height == 1) != (self.last_commit is None):
            raise CodecError("last_commit is required for every height but 1", path)
        if self.last_commit is not None and self.last_commit.height != h.height - 1:
            raise CodecError("last_commit is not for the previous height", path)
        if self.last_commit is not None and self.last_commit.block_hash != h.prev_hash:
            raise CodecError("last_commit is not for the previous block", path)
        if txs_root(self.txs) != h.txs_root:
            raise CodecError("txs_root does not match the transactions", path)
        if commit_hash(self.last_commit) != h.last_commit_hash:
            raise CodecError("last_commit_hash does not match last_commit", path)

    def encode(self) -> bytes:
        """The canonical bytes, computed once: a block is encoded by the decoder's
        canonical check, compared against the proposal bytes and written to the store."""
        return self._wire

    @cached_property
    def _wire(self) -> bytes:
        return super().encode()

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height
