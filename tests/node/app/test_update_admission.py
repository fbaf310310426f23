"""Issue 15 item 1: a model update a proposer could not aggregate never enters the mempool,
so it cannot count as work; one that goes stale is evicted; and updates the genesis rule
failed to close a round with stop counting as work until the set changes.

Before the fix the mempool took an update with no payload, a NaN payload or a payload
trained from another model; ``NodeApp.has_work()`` then stayed true while every block came
out empty, which froze a single-validator node in its commit loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from consensus.app import PrepareProposalRequest
from fl.attacks import nan_update
from fl.models import Params
from fl.update import ModelUpdate as Payload
from fl.update import encode_update
from node.app.application import NodeApp
from node.app.mempool import Mempool
from node.app.updates import (
    BadPayload,
    MissingPayload,
    NonFinitePayload,
    PayloadMismatch,
    WrongBase,
    payload_base,
)
from node.core.crypto import PrivateKey
from node.ledger.block import Block
from node.ledger.genesis import Genesis, params_of
from node.ledger.tx import Tx, TxError, TxTooLarge
from node.store.blobs import BlobStore
from node.store.commits import CommitStore
from node.store.ledger import Ledger
from node.store.models import ZERO_HASH, ModelStore
from tests.kits.ledger import Devnet, sign_commit
from tests.kits.updates import random_delta, signed_update
from tests.node.daemon.chainkit import genesis_for

KEYS = [PrivateKey.from_secret(f"admission-{i}") for i in range(4)]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[NodeApp]:
    a = _app(tmp_path, genesis_for(KEYS, min_updates=1))
    yield a
    a.ledger.close()


def _app(path: Path, g: Genesis) -> NodeApp:
    ledger = Ledger.open(path / "chain.sqlite", g, fsync=False)
    models = ModelStore(BlobStore(path / "blobs"), g.fl)
    return NodeApp(ledger, Mempool(ledger.state), models, CommitStore(path / "c.sqlite"))


def _payload(g: Genesis, delta: Params | None = None, **kw: Any) -> Payload:
    """A round-0 update trained from the genesis model, unless ``kw`` says otherwise."""
    args: dict[str, Any] = {
        "arch": "cnn",
        "base_hash": payload_base(g.fl, ZERO_HASH),
        "round_": 0,
        "num_samples": 100,
    }
    args.update(kw)
    return encode_update(random_delta(7) if delta is None else delta, **args)


def _tx(g: Genesis, key: PrivateKey, payload: bytes, samples: int = 100) -> Tx:
    return signed_update(key, g, payload, round=0, base_ledger_hash=ZERO_HASH, samples=samples)


def _valid(g: Genesis, key: PrivateKey, seed: int = 7) -> tuple[Tx, bytes]:
    payload = _payload(g, random_delta(seed)).encode()
    return _tx(g, key, payload), payload


def _unusable(g: Genesis) -> list[tuple[str, bytes | None, int, type[TxError]]]:
    """(what, payload, samples the tx claims, the error) for every kind of unusable update."""
    good = _payload(g)
    huge = {k: np.full(v.shape, 200.0, np.float32) for k, v in random_delta(1).items()}
    other_arch = _payload(g, random_delta(2, arch="fedavg_cnn"), arch="fedavg_cnn", topk=0.001)
    return [
        ("no payload", None, 100, MissingPayload),
        ("NaN", nan_update(good), 100, NonFinitePayload),
        ("wrong base", _payload(g, base_hash=b"\x42" * 32).encode(), 100, WrongBase),
        ("junk bytes", b"\x01not an update", 100, BadPayload),
        ("other model", other_arch.encode(), 100, BadPayload),
        ("values out of range", _payload(g, huge).encode(), 100, BadPayload),
        ("other round", _payload(g, round_=3).encode(), 100, PayloadMismatch),
        ("other samples", good.encode(), 99, PayloadMismatch),
    ]


def test_every_unusable_update_is_refused_with_its_own_error(app: NodeApp) -> None:
    g = app.genesis
    for what, payload, samples, error in _unusable(g):
        tx = _tx(g, KEYS[0], payload if payload is not None else _payload(g).encode(), samples)
        with pytest.raises(error) as raised:
            app.mempool.add(tx, payload)
        assert type(raised.value) is error, what  # the most specific kind, not a parent
        assert len(app.mempool) == 0 and app.mempool.payload_bytes == 0, what
        # Nothing the proposer could include: the engine is not told there is work.
        assert app.has_work() is False, what
    # The same trainer's valid update is then admitted and is work (min_updates = 1).
    app.mempool.add(*_valid(g, KEYS[0]))
    assert app.has_work() is True


def test_a_payload_over_the_genesis_size_limit_is_refused(tmp_path: Path) -> None:
    g = genesis_for(KEYS, min_updates=1)
    small = g.replace(fl=g.fl.replace(max_update_bytes=1000))
    app = _app(tmp_path, small)
    with pytest.raises(TxTooLarge):
        app.mempool.add(*_valid(small, KEYS[0]))
    assert len(app.mempool) == 0
    app.ledger.close()


def test_an_update_that_goes_stale_is_evicted_and_stops_counting_as_work(app: NodeApp) -> None:
    g = app.genesis
    tx, payload = _valid(g, KEYS[0])
    app.mempool.add(tx, payload)
    assert app.has_work() is True
    # Another trainer's update closes round 0 in a block this node only learns as committed
    # (block sync): the pending update is for a round that is over.
    closing, _ = _valid(g, KEYS[1], seed=8)
    block = Devnet(app.ledger.state, KEYS).propose([closing])
    app.apply_committed(block, sign_commit(g.chain_id, block, KEYS))
    assert app.ledger.state.meta.fl_round == 1
    assert tx.hash not in app.mempool and app.mempool.payload_bytes == 0
    assert app.has_work() is False


def test_updates_the_rule_cannot_close_a_round_with_stop_counting_as_work(
    tmp_path: Path,
) -> None:
    """Valid updates the genesis rule still refuses (Multi-Krum with f = 1 needs five):
    after one proposal failed to close the round with them, they are no block's work until
    the set changes, so a validator alone does not cut empty blocks back to back."""
    g = genesis_for(KEYS, min_updates=3)
    g = g.replace(
        fl=g.fl.replace(aggregation="multi_krum", aggregation_params=params_of({"krum_f": 1}))
    )
    app = _app(tmp_path, g)
    for i, key in enumerate(KEYS[:3]):
        app.mempool.add(*_valid(g, key, seed=i))
    assert app.has_work() is True  # three updates: min_updates, the round may close
    request = PrepareProposalRequest(1, 0, KEYS[0].address, None, 1_700_000_001_000)
    block = app.prepare_proposal(request)
    assert Block.decode(block.data).txs == () and app.counters["aggregation_failed"] == 1
    assert app.has_work() is False
    app.mempool.add(*_valid(g, KEYS[3], seed=3))
    assert app.has_work() is True  # a new set: worth another try
    app.ledger.close()
