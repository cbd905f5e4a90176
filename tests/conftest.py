"""Shared pytest configuration: the ``slow`` marker, seeding, and the optional ../shared fixtures."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SLUKD_SHARED", REPO.parent / "shared"))
SHARED_SLURP = SHARED / "slurp"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("SLUKD_SLOW", "") not in ("", "0"):
        return
    skip = pytest.mark.skip(reason="slow test: run with --runslow or SLUKD_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same seeds."""
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # pragma: no cover
        pass
    yield
    from slukd.utils.lock import release_all

    release_all()  # a recipe run in-process holds its folder's lock like a process would: give it back


@pytest.fixture
def shared_slurp() -> Path:
    """../shared/slurp (real SLURP annotations and published predictions); skips the test when absent."""
    if not (SHARED_SLURP / "test.jsonl").is_file():
        pytest.skip(f"{SHARED_SLURP} not present")
    return SHARED_SLURP
