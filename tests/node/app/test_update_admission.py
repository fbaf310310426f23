"""Issue 15 item 1: a model update a proposer could not aggregate never enters the mempool,
so it cannot count as work, and one that goes stale is evicted.

Before the fix the mempool took an update with no payload, a NaN payload or a payload
trained from another model; ``NodeApp.has_work()`` then stayed true while every block came
out empty, which froze a single-validator node in its commit loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

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
from node.ledger.genesis import Genesis
from node.ledger.tx import TxError, TxTooLarge
from node.store.blobs import BlobStore
from node.store.commits import CommitStore
from node.store.ledger import Ledger
from node.store.models import ZERO_HASH, ModelStore
from tests.kits.ledger import Devnet, sign_commit
from tests.kits.updates import random_delta, signed_update
from tests.node.daemon.chainkit import genesis_for

KEYS = [PrivateKey.from_secret(f"admission-{i}") for i in range(2)]


@dataclass
class Node:
    genesis: Genesis
    app: NodeApp

    @property
    def mempool(self) -> Mempool:
        return self.app.mempool


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    g = genesis_for(KEYS, min_updates=1)
    ledger = Ledger.open(tmp_path / "chain.sqlite", g, fsync=False)
    models = ModelStore(BlobStore(tmp_path / "blobs"), g.fl)
    app = NodeApp(ledger, Mempool(ledger.state), models, CommitStore(tmp_path / "c.sqlite"))
    yield Node(g, app)
    ledger.close()


def _payload(g: Genesis, delta: Params | None = None, **kw: Any) -> Payload:
    args: dict[str, Any] = {
        "arch": "cnn",
        "base_hash": payload_base(g.fl, ZERO_HASH),
        "round_": 0,
        "num_samples": 100,
    }
    args.update(kw)
    return encode_update(random_delta(7) if delta is None else delta, **args)


def _unusable(g: Genesis) -> list[tuple[str, bytes | None, int, type[TxError]]]:
    """(what, payload, samples the tx claims, the error) for every kind of unusable update."""
    good = _payload(g)
    huge = {k: np.full(v.shape, 200.0, np.float32) for k, v in random_delta(1).items()}
    other_arch = random_delta(2, arch="fedavg_cnn")
    return [
        ("no payload", None, 100, MissingPayload),
        ("NaN", nan_update(good), 100, NonFinitePayload),
        ("wrong base", _payload(g, base_hash=b"\x42" * 32).encode(), 100, WrongBase),
        ("junk bytes", b"\x01not an update", 100, BadPayload),
        (
            "other model",
            _payload(g, other_arch, arch="fedavg_cnn", topk=0.001).encode(),
            100,
            BadPayload,
        ),
        ("values out of range", _payload(g, huge).encode(), 100, BadPayload),
        ("other round", _payload(g, round_=3).encode(), 100, PayloadMismatch),
        ("other samples", good.encode(), 99, PayloadMismatch),
    ]


def test_every_unusable_update_is_refused_with_its_own_error(node: Node) -> None:
    g = node.genesis
    for what, payload, samples, error in _unusable(g):
        body_payload = payload if payload is not None else _payload(g).encode()
        tx = signed_update(
            KEYS[0], g, body_payload, round=0, base_ledger_hash=ZERO_HASH, samples=samples
        )
        with pytest.raises(error) as raised:
            node.mempool.add(tx, payload)
        assert type(raised.value) is error, what  # the most specific kind, not a parent
        assert len(node.mempool) == 0 and node.mempool.payload_bytes == 0, what
        # Nothing the proposer could include: the engine is not told there is work.
        assert node.app.has_work() is False, what
    # The same trainer's valid update is then admitted and is work (min_updates = 1).
    good = _payload(g).encode()
    tx = signed_update(KEYS[0], g, good, round=0, base_ledger_hash=ZERO_HASH, samples=100)
    node.mempool.add(tx, good)
    assert node.app.has_work() is True


def test_a_payload_over_the_genesis_size_limit_is_refused_before_decoding(
    tmp_path: Path,
) -> None:
    g = genesis_for(KEYS, min_updates=1)
    small = g.replace(fl=g.fl.replace(max_update_bytes=1000))
    ledger = Ledger.open(tmp_path / "chain.sqlite", small, fsync=False)
    mp = Mempool(ledger.state)
    payload = _payload(small).encode()
    tx = signed_update(KEYS[0], small, payload, round=0, base_ledger_hash=ZERO_HASH, samples=100)
    with pytest.raises(TxTooLarge):
        mp.add(tx, payload)
    assert len(mp) == 0
    ledger.close()


def test_an_update_that_goes_stale_is_evicted_and_stops_counting_as_work(node: Node) -> None:
    g = node.genesis
    mine = _payload(g).encode()
    tx = signed_update(KEYS[0], g, mine, round=0, base_ledger_hash=ZERO_HASH, samples=100)
    node.mempool.add(tx, mine)
    assert node.app.has_work() is True
    # Another trainer's update closes round 0 in a block this node only learns as committed
    # (block sync): the pending update is for a round that is over.
    other = _payload(g, num_samples=50).encode()
    closing = signed_update(KEYS[1], g, other, round=0, base_ledger_hash=ZERO_HASH, samples=50)
    block = Devnet(node.app.ledger.state, KEYS).propose([closing])
    node.app.apply_committed(block, sign_commit(g.chain_id, block, KEYS))
    assert node.app.ledger.state.meta.fl_round == 1
    assert tx.hash not in node.mempool and node.mempool.payload_bytes == 0
    assert node.app.has_work() is False
