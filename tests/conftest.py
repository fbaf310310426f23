"""Suite-wide settings: hypothesis runs without per-example deadlines because CI machines
have 2 cores shared by process-level tests, and a slow example is not a wrong one."""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "fedchain",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("fedchain")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The MNIST copy CI provides beside the repository (never downloaded by tests)."""
    from fl.data import DATA_DIR_ENV

    env = os.environ.get(DATA_DIR_ENV)
    directory = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "mnist"
    if not directory.is_dir():
        pytest.fail(f"MNIST test data missing at {directory}; set {DATA_DIR_ENV}")
    return directory.resolve()
