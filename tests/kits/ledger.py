"""Building valid blocks without a consensus engine: for tests, benchmarks and simulators.

A real chain gets ``last_commit`` from its consensus engine; here every validator key is
known, so the previous block's commit is simply signed by all of them. The FL aggregation
is not this package's business either: a block that includes model updates gets a
stand-in ``global_model_hash`` derived from its transactions unless the caller passes one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from consensus.types import Commit, CommitSig, Vote, VoteSignBytes, VoteType
from node.core.codec import sha256
from node.core.crypto import PrivateKey
from node.ledger.block import Block, Header, commit_hash, txs_root
from node.ledger.state import State
from node.ledger.tx import ModelUpdate, Tx

__all__ = ["Devnet", "build_block", "sign_commit", "sign_vote"]


def sign_vote(
    key: PrivateKey,
    chain_id: str,
    height: int,
    block_hash: bytes,
    *,
    round: int = 0,
    type: int = VoteType.PRECOMMIT,
) -> Vote:
    type = int(type)  # the codec is strict: an IntEnum member is not a plain int
    sb = VoteSignBytes(chain_id, height, round, type, block_hash).encode()
    return Vote(chain_id, height, round, type, block_hash, key.address, key.sign(sb))


def sign_commit(
    chain_id: str, block: Block, keys: Iterable[PrivateKey], *, round: int = 0
) -> Commit:
    sigs = sorted(
        (
            CommitSig(
                k.address, sign_vote(k, chain_id, block.height, block.hash, round=round).signature
            )
            for k in keys
        ),
        key=lambda s: s.validator,
    )
    return Commit(block.height, round, block.hash, tuple(sigs))


def build_block(
    state: State,
    txs: Sequence[Tx],
    proposer: bytes,
    *,
    last_commit: Commit | None,
    time_ms: int | None = None,
    global_model_hash: bytes | None = None,
) -> Block:
    """A block at the state's next height that ``state.apply_block`` accepts when the
    txs are valid (and ``last_commit`` proves the previous block)."""
    meta = state.meta
    height = meta.height + 1
    has_updates = any(isinstance(tx.body, ModelUpdate) for tx in txs)
    root = txs_root(txs)
    if has_updates:
        fl_round = meta.fl_round + 1
        model = global_model_hash or sha256(b"stand-in aggregate:" + root)
    else:
        fl_round, model = meta.fl_round, meta.global_model
    header = Header(
        chain_id=state.chain_id,
        height=height,
        time_ms=time_ms if time_ms is not None else meta.time_ms + 1000,
        prev_hash=meta.last_block_hash,
        proposer=proposer,
        txs_root=root,
        last_commit_hash=commit_hash(last_commit),
        app_hash=state.app_hash(),
        validators_hash=state.validator_set(height).hash,
        fl_round=fl_round,
        global_model_hash=model,
    )
    return Block(header, tuple(txs), last_commit)


class Devnet:
    """A single-process chain driver: holds the state and every validator key.

    ``keys`` may include keys that become validators later (by staking); commits are
    signed by the keys of the validator set at the committed height.
    """

    def __init__(self, state: State, keys: Iterable[PrivateKey]) -> None:
        self.state = state
        self.keys = {k.address: k for k in keys}
        self.last_block: Block | None = None

    def commit_for_last(self) -> Commit | None:
        if self.last_block is None:
            return None
        vset = self.state.validator_set(self.last_block.height)
        signers = [self.keys[v.address] for v in vset.validators if v.address in self.keys]
        return sign_commit(self.state.chain_id, self.last_block, signers)

    def propose(
        self,
        txs: Sequence[Tx] = (),
        *,
        proposer: bytes | None = None,
        time_ms: int | None = None,
        global_model_hash: bytes | None = None,
    ) -> Block:
        """The next block; the proposer rotates over the validator set by height."""
        if proposer is None:
            vset = self.state.validator_set(self.state.height + 1)
            proposer = vset.validators[self.state.height % len(vset.validators)].address
        return build_block(
            self.state,
            txs,
            proposer,
            last_commit=self.commit_for_last(),
            time_ms=time_ms,
            global_model_hash=global_model_hash,
        )

    def advance(self, block: Block) -> bytes:
        app_hash, _ = self.state.apply_block(block)
        self.last_block = block
        return app_hash

    def step(
        self,
        txs: Sequence[Tx] = (),
        *,
        proposer: bytes | None = None,
        global_model_hash: bytes | None = None,
    ) -> Block:
        block = self.propose(txs, proposer=proposer, global_model_hash=global_model_hash)
        self.advance(block)
        return block
