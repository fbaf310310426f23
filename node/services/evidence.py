"""Turns equivocation the engine found into an evidence tx this node signs and submits.

The engine reports a validator that signed two conflicting votes or proposals
(``EvidenceFound``); the ledger slashes it only once the evidence is in a block, so the
node wraps it in a signed ``Evidence`` (votes) or ``ProposalEvidence`` tx and submits
it like any of its own txs (admitted to the mempool, then gossiped). Submission runs as
a task the reporter owns, because the engine's effect handlers are synchronous; a
refused submission (another node's evidence for the same offence was committed first,
say) is only logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from consensus.types import DuplicateProposalEvidence, DuplicateVoteEvidence
from node.core.codec import Record
from node.core.crypto import PrivateKey
from node.ledger.genesis import Genesis
from node.ledger.tx import Evidence, ProposalEvidence, Tx, sign_tx
from node.p2p.tasks import TaskSet

__all__ = ["EvidenceReporter"]

log = logging.getLogger(__name__)


class EvidenceReporter:
    def __init__(
        self,
        key: PrivateKey,
        genesis: Genesis,
        *,
        next_nonce: Callable[[], int],
        submit: Callable[[Tx, bytes | None], Awaitable[None]],
    ) -> None:
        self.key = key
        self.genesis = genesis
        self.next_nonce = next_nonce
        self.submit = submit
        self._tasks = TaskSet("evidence")

    def report(self, evidence: Record) -> None:
        """The engine's ``on_evidence``: submit a tx for evidence the ledger can slash."""
        body: Evidence | ProposalEvidence
        if isinstance(evidence, DuplicateVoteEvidence):
            body = Evidence(evidence)
        elif isinstance(evidence, DuplicateProposalEvidence):
            body = ProposalEvidence(evidence)
        else:
            return
        if self._tasks.closed:
            return
        g = self.genesis
        tx = sign_tx(self.key, g.chain_id, self.next_nonce(), g.fees, body)
        self._tasks.spawn(self._submit(tx), name="evidence")

    async def _submit(self, tx: Tx) -> None:
        try:
            await self.submit(tx, None)
        except Exception as e:
            log.info("evidence tx not submitted: %s", e)

    async def close(self) -> None:
        await self._tasks.aclose()
