"""Shared test fixtures: where the repository and the test data are, and float64 mode.

    omniglot_dir   the Omniglot folder of ../shared/data (tests marked `omniglot` are
                   skipped, with the path in the reason, when its omniglot.npz is missing)
    repo_root      the repository root (cwd of subprocess-based tests)
    x64            runs the test with jax_enable_x64 on (float64 references)
"""
from pathlib import Path

import jax
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
OMNIGLOT_DIR = SHARED_DATA / "omniglot"


def pytest_configure(config):
    config.addinivalue_line("markers", "omniglot: needs the Omniglot npz under ../shared/data")


def pytest_runtest_setup(item):
    if item.get_closest_marker("omniglot") and not (OMNIGLOT_DIR / "omniglot.npz").exists():
        pytest.skip(f"Omniglot npz not found at {OMNIGLOT_DIR}")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    if not (OMNIGLOT_DIR / "omniglot.npz").exists():
        pytest.skip(f"Omniglot npz not found at {OMNIGLOT_DIR}")
    return OMNIGLOT_DIR


@pytest.fixture
def x64():
    """float64 inside the test (restored afterwards)."""
    with jax.enable_x64(True):
        yield
