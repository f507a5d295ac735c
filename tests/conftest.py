"""Shared fixtures: seeded random generators whose seed is printed on failure."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import golden.model as gm
from golden.model import ModelConfig, MoeLM
from golden.seed import base_seed, derived_seed
from sim.runner import VERILATOR_OPT

# The tests build dozens of Verilator models that each run for seconds: unoptimised C++
# compiles several times faster than Verilator's default -Os and the runs take little
# longer (the 4x4 accelerator: 69 s instead of 122 s). Benchmarks keep the default.
os.environ.setdefault(VERILATOR_OPT, "-O0")
# The models' C++ is cached (sim/runner.py, ccache) in the build folder, which `make clean`
# removes: a test run reuses the Verilator runtime's objects from its first build on.
os.environ.setdefault("CCACHE_DIR", str(Path(__file__).resolve().parent.parent / "build" / "ccache"))

# A small random MoE LM shared by the model, SPEQ and MoBiLE tests.
SMALL = ModelConfig(d_model=32, n_layers=2, n_heads=2, n_experts=4, top_k=2, d_expert=16,
                    max_seq=96)


@pytest.fixture
def seed(request) -> int:
    """Seed for this test: derived from SPEQMOE_SEED and the test's name."""
    value = derived_seed(request.node.nodeid)
    request.node.user_properties.append(("seed", value))
    return value


@pytest.fixture
def rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Small matmuls run many times faster on one BLAS thread on 2 shared cores; results
    do not depend on it (tests/test_model.py checks the logits are bit-identical)."""
    with gm.blas_threads(1):
        yield


@pytest.fixture
def small(seed) -> MoeLM:
    """A seeded random :data:`SMALL` model."""
    return MoeLM.init_random(SMALL, seed)


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


def pytest_collection_modifyitems(config, items):
    """Long simulations (``slow``) first: with ``--dist worksteal`` the workers then end on
    short tests instead of one of them running a long one alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
