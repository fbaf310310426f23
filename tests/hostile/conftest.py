"""The live testnet the hostile-peer suite attacks: started once per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.live import LiveNet


@pytest.fixture(scope="module")
def live_net(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Iterator[LiveNet]:
    live = LiveNet.start(tmp_path_factory.mktemp("live") / "net", mnist_dir)
    try:
        yield live
    finally:
        codes = live.stop()
    assert set(codes.values()) == {0}, f"a node did not stop cleanly: {codes}"
