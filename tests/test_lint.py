"""The generated Verilog is lint-clean under Verilator -Wall, with only the commented waivers
of sim/verilator_lint.vlt (patterns Amaranth emits by design)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.runner import lint_verilog, simulator_missing
from speqmoe import designs
from speqmoe.config import AccelConfig, CacheConfig, Config

BUILD = Path(__file__).resolve().parent.parent / "build" / "tests" / "lint"
DESIGNS = [n for n in designs.DEFAULT_VERILOG if n not in ("pe_array_4x4", "accel_4x4")]
# [cache] and [accel] at small sizes: the same generators, minutes less of memory to write.
SMALL = Config(cache=CacheConfig(slots=4, expert_bytes=2560),
               accel=AccelConfig(rows=2, cols=2, slots=4, expert_bytes=256, k_max=64, n_max=64,
                                 fifo_lines=32))


@pytest.mark.parametrize("name", DESIGNS)
def test_generated_verilog_is_lint_clean(name):
    reason = simulator_missing("verilator")
    if reason:
        pytest.skip(reason)
    _, text = designs.netlist(name, SMALL)
    BUILD.mkdir(parents=True, exist_ok=True)
    path = BUILD / f"{name}.v"
    path.write_text(text)
    clean, output = lint_verilog(path, name)
    assert clean, f"{name}: Verilator -Wall warnings beyond the waivers:\n{output[-3000:]}"


def test_lint_catches_a_warning_outside_the_waivers(tmp_path):
    reason = simulator_missing("verilator")
    if reason:
        pytest.skip(reason)
    bad = tmp_path / "bad.v"
    # A multiply-driven net and a latch: the kind of defect lint must keep reporting.
    bad.write_text("module bad(input a, input b, output reg y, output z);\n"
                   "  assign z = a;\n  assign z = b;\n"
                   "  always @* if (a) y = b;\nendmodule\n")
    clean, output = lint_verilog(bad, "bad")
    assert not clean and "%Warning" in output
