"""The ``node`` fixture: a running RPC server over a real ledger (see nodekit)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.node.nodekit import RunningNode, running_node


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[RunningNode]:
    async with running_node(tmp_path) as n:
        yield n
