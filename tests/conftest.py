"""Shared fixtures: seeded random generators whose seed is printed on failure."""

from __future__ import annotations

import numpy as np
import pytest

from golden.seed import base_seed, derived_seed


@pytest.fixture
def seed(request) -> int:
    """Seed for this test: derived from SPEQMOE_SEED and the test's name."""
    value = derived_seed(request.node.nodeid)
    request.node.user_properties.append(("seed", value))
    return value


@pytest.fixture
def rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        seeds = [v for k, v in item.user_properties if k == "seed"]
        text = f"SPEQMOE_SEED={base_seed()}"
        if seeds:
            text += f" (this test's derived seed: {seeds[0]})"
        report.sections.append(("random seed", text + "; rerun with the same SPEQMOE_SEED to reproduce"))
    return report
