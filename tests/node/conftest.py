"""The ``node`` fixture: a running RPC server over a real ledger (see nodekit)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nodekit import RunningNode, running_node


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[RunningNode]:
    async with running_node(tmp_path) as n:
        yield n


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The MNIST copy CI provides beside the repository (never downloaded by tests)."""
    from fl.data import DATA_DIR_ENV

    env = os.environ.get(DATA_DIR_ENV)
    directory = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "mnist"
    if not directory.is_dir():
        pytest.fail(f"MNIST test data missing at {directory}; set {DATA_DIR_ENV}")
    return directory
