"""Shared fixtures: the MNIST copy that CI provides next to the repository (never fetched)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fl.data import DATA_DIR_ENV, Mnist, load_mnist


def _mnist_dir() -> Path:
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "mnist"


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    directory = _mnist_dir()
    if not directory.is_dir():
        pytest.fail(f"MNIST test data missing at {directory}; set {DATA_DIR_ENV}")
    return directory.resolve()


@pytest.fixture(scope="session")
def mnist(mnist_path: Path) -> Mnist:
    return load_mnist(mnist_path)
