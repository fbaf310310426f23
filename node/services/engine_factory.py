"""Builds this node's consensus engine for the height after the ledger's tip.

An engine is built fresh (height 0, or a lone validator that has nothing to learn from
peers), or resumed from checkpoint bytes: this node's own, or a peer's after block sync
went past its own. Either way its validator sets (the next height's and the one after)
come from this node's ledger, never from the checkpoint: checkpoint bytes are opaque
engine state and may come from a hostile peer, and an engine refuses bytes whose sets or
height differ from the ledger's (``RecoveryError``). Building from them never raises:
refused bytes give None and the caller asks elsewhere (and blames the peer).

Each engine gets its own ``GuardedSigner`` over the node's ``privval.json``, which records
the last height/round/step signed, so an engine rebuilt after a catch-up can never sign a
conflicting vote for a height the previous one already voted on. The engine is created by
its genesis name through ``consensus.registry``; the node never imports a concrete one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from consensus.engine import BlockId, Engine, RecoveryError, Verifier
from consensus.privval import FileStateStore, GuardedSigner
from consensus.registry import EngineConfig, create_engine
from node.core.crypto import PrivateKey, verify
from node.ledger.genesis import Genesis
from node.store.commits import CommitStore
from node.store.ledger import Ledger

__all__ = ["EngineFactory"]

log = logging.getLogger(__name__)


class EngineFactory:
    def __init__(
        self,
        genesis: Genesis,
        ledger: Ledger,
        commits: CommitStore,
        key: PrivateKey,
        privval_path: Path,
        *,
        block_id: BlockId,
        verifier: Verifier = verify,
    ) -> None:
        self.genesis = genesis
        self.block_id = block_id
        self.verifier = verifier
        self.ledger = ledger
        self.commits = commits
        self.key = key
        self.privval_path = privval_path

    @property
    def name(self) -> str:
        return self.genesis.consensus_engine

    def make(self, recovery: bytes | None) -> Engine:
        """An engine for the next height, resumed from ``recovery`` when given (raises
        whatever the engine raises for bytes it refuses)."""
        g = self.genesis
        height = self.ledger.height
        signer = GuardedSigner(self.key, FileStateStore(self.privval_path))
        engine = create_engine(
            g.consensus_engine,
            EngineConfig(
                chain_id=g.chain_id,
                signer=signer,
                validators=self.ledger.validator_set(height + 1),
                next_validators=self.ledger.validator_set(height + 2),
                initial_height=height + 1,
                recovery=recovery,
                options=g.consensus_params_dict,
                verifier=self.verifier,
                block_id=self.block_id,
            ),
        )
        return engine

    def from_checkpoint(self, recovery: bytes, height: int) -> Engine | None:
        """An engine resuming at ``height + 1`` from checkpoint bytes, or None when they
        are unusable (corrupt, hostile, or for another height)."""
        if height != self.ledger.height:
            log.warning("checkpoint for height %d, ledger at %d", height, self.ledger.height)
            return None
        try:
            engine = self.make(recovery)
        except RecoveryError as e:  # hostile or corrupt bytes: the caller asks elsewhere
            log.warning("refused checkpoint for height %d: %s", height, e)
            return None
        except Exception as e:  # an engine without typed refusals
            log.warning("unusable checkpoint for height %d: %s", height, e)
            return None
        if engine.height != height + 1:
            log.warning("checkpoint resumes at %d, not %d", engine.height, height + 1)
            return None
        return engine

    def local(self) -> Engine | None:
        """An engine for the next height from this node's own state, when it has it."""
        height = self.ledger.height
        own = self.commits.checkpoint()
        if own is not None and own[0] == height:
            engine = self.from_checkpoint(own[1], height)
            if engine is not None:
                return engine
        if height == 0:
            return self.make(None)
        if len(self.ledger.validator_set().validators) == 1:
            # A lone validator (a dev chain) has nothing to learn from peers: its engine
            # state is just the height, and NodeApp supplies the last commit itself.
            log.warning("no checkpoint for height %d: starting the engine afresh", height)
            return self.make(None)
        return None
