"""Equivocation the engine found becomes an evidence tx this node signs and submits; other
records are ignored, a refused submission is only logged, nothing is left after close."""

from __future__ import annotations

import logging

import pytest

from consensus.sim.network import UnguardedSigner
from consensus.types import DuplicateProposalEvidence, DuplicateVoteEvidence
from node.core.codec import Record
from node.core.crypto import PrivateKey
from node.ledger.tx import Evidence, ProposalEvidence, Tx, TxError
from node.services.evidence import EvidenceReporter
from tests.helpers import wait_for
from tests.kits.ledger import sign_vote
from tests.node.daemon.chainkit import genesis_for

KEYS = [PrivateKey.from_secret(f"evidence-{i}") for i in range(2)]
GENESIS = genesis_for(KEYS)


class Other(Record):
    """Some record an engine might report that the ledger cannot slash."""

    text: str


def _double_vote() -> DuplicateVoteEvidence:
    a = sign_vote(KEYS[1], GENESIS.chain_id, 3, b"\x01" * 32)
    b = sign_vote(KEYS[1], GENESIS.chain_id, 3, b"\x02" * 32)
    return DuplicateVoteEvidence.of(a, b)


async def test_double_votes_are_submitted_as_signed_evidence_txs() -> None:
    submitted: list[tuple[Tx, bytes | None]] = []

    async def submit(tx: Tx, payload: bytes | None) -> None:
        submitted.append((tx, payload))

    reporter = EvidenceReporter(KEYS[0], GENESIS, next_nonce=lambda: 4, submit=submit)
    evidence = _double_vote()
    reporter.report(Other("not slashable"))
    reporter.report(evidence)
    await wait_for(lambda: submitted, 10, "the evidence tx")
    await reporter.close()
    ((tx, payload),) = submitted
    assert payload is None and tx.body == Evidence(evidence)
    assert (tx.chain_id, tx.nonce, tx.address) == (GENESIS.chain_id, 4, KEYS[0].address)
    assert tx.signature_ok()


async def test_a_refused_submission_is_logged_and_close_ends_reporting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[Tx] = []

    async def refuse(tx: Tx, payload: bytes | None) -> None:
        calls.append(tx)
        raise TxError("already committed by another node")

    caplog.set_level(logging.INFO, logger="node.services.evidence")
    reporter = EvidenceReporter(KEYS[0], GENESIS, next_nonce=lambda: 0, submit=refuse)
    reporter.report(_double_vote())
    await wait_for(lambda: "evidence tx not submitted" in caplog.text, 10, "the refusal logged")
    await reporter.close()
    reporter.report(_double_vote())  # closed: nothing more is submitted
    assert len(calls) == 1


async def test_double_proposals_are_submitted_as_proposal_evidence() -> None:
    submitted: list[Tx] = []

    async def submit(tx: Tx, payload: bytes | None) -> None:
        submitted.append(tx)

    signer = UnguardedSigner(KEYS[1])
    a = signer.sign_proposal(GENESIS.chain_id, 3, 0, 0, b"\x01" * 32)
    b = signer.sign_proposal(GENESIS.chain_id, 3, 0, 0, b"\x02" * 32)
    evidence = DuplicateProposalEvidence.of(a, b)
    reporter = EvidenceReporter(KEYS[0], GENESIS, next_nonce=lambda: 0, submit=submit)
    reporter.report(evidence)
    await wait_for(lambda: submitted, 10, "the evidence tx")
    await reporter.close()
    (tx,) = submitted
    assert tx.body == ProposalEvidence(evidence) and tx.signature_ok()
