"""Shared fixtures: MNIST loaded once per session from the suite's ``mnist_dir``."""

from __future__ import annotations

from pathlib import Path

import pytest

from fl.data import Mnist, load_mnist


@pytest.fixture(scope="session")
def mnist(mnist_dir: Path) -> Mnist:
    return load_mnist(mnist_dir)
