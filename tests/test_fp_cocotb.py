"""Generated Verilog of each hw/fp.py component on Verilator (and Icarus), vs golden/fp.py.

Each component is converted to Verilog and driven by ``sim/tb_fp.py`` with every pair of
edge cases plus biased random vectors: 100,000 on Verilator, 10,000 on Icarus (about ten
times slower). ``SPEQMOE_FP_VECTORS`` changes the Verilator count for soak runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hw.fp import Fp16Multiplier, Fp32Adder, Fp32ToFp16
from sim.runner import run_cocotb, simulator_missing, write_verilog

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "tests"

COMPONENTS = {"fp16_multiplier": Fp16Multiplier, "fp32_adder": Fp32Adder, "fp32_to_fp16": Fp32ToFp16}
VECTORS = {"verilator": int(os.environ.get("SPEQMOE_FP_VECTORS", "100000")), "icarus": 10_000}


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
@pytest.mark.parametrize("name", list(COMPONENTS))
def test_fp_component_verilog_matches_golden(name, simulator):
    reason = simulator_missing(simulator)
    if reason:
        pytest.skip(reason)
    build = BUILD / f"fp_{name}" / simulator
    verilog = write_verilog(COMPONENTS[name](), name, build / f"{name}.v")
    stats = build / "stats.json"
    result = run_cocotb(
        simulator=simulator,
        verilog_path=verilog,
        toplevel=name,
        test_module="sim.tb_fp",
        build_dir=build,
        extra_env={"FP_COMPONENT": name, "FP_VECTORS": VECTORS[simulator], "FP_STATS": stats},
    )
    assert result.tests == 1 and not result.failed
    assert json.loads(stats.read_text())["vectors"] >= VECTORS[simulator]
