"""cocotb testbench of the self-checking harness (:class:`hw.selfcheck.SelfCheck`) as the
bitstream builds it: elaborated for the ECP5 board, its multipliers ``MULT18X18D`` blocks
simulated with their model (:data:`sim.netlist.ECP5_MODELS`).

After reset the clock runs until ``done`` rises or ``SELFCHECK_MAX_CYCLES`` pass; the test
fails unless ``done`` and ``passed`` are high, and it writes ``done``, ``passed``, ``errors``,
``results`` and the cycle count to the JSON file ``SELFCHECK_STATS``.
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge


@cocotb.test()
async def selfcheck_passes(dut):
    max_cycles = int(os.environ["SELFCHECK_MAX_CYCLES"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    cycles = 0
    while not int(dut.done.value) and cycles < max_cycles:
        await RisingEdge(dut.clk)
        cycles += 1
    out = {"done": bool(int(dut.done.value)), "passed": bool(int(dut.passed.value)),
           "errors": int(dut.errors.value), "results": int(dut.results.value), "cycles": cycles}
    with open(os.environ["SELFCHECK_STATS"], "w") as f:
        json.dump(out, f)
    assert out["done"] and out["passed"], f"the harness did not pass: {out}"
