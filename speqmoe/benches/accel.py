"""Bench section ``accel``: the accelerator top on Verilator, and the synthesis of the small top.

* ``accel_utilization_verify`` / ``accel_utilization_draft``: MACs / (4 * PEs * cycles) of one
  MATMUL command (``cycles``: the top's busy-cycle counter over that command, from leaving
  the command queue to the last write response) on a 4x4 top with a 256-bit bus, N = 256,
  K = 1024, weights from host memory (cocotbext-axi AXI RAM behind
  :class:`hw.axi.AxiReadLatency`, :data:`LATENCY` cycles of read latency). Goal >= 0.95 each.
* ``accel_draft_bytes_ratio``: draft / verify weight bytes read for the same matrix
  (``BYTES_DENSE`` counter); 0.25 by construction of the layout.
* ``accel_mem_stall_cycles_<mode>`` / ``accel_wb_stall_cycles_<mode>``: the top's
  ``MEM_STALL_CYCLES`` (the array could take a beat, weights or activations were not there)
  and ``WB_STALL_CYCLES`` (results waiting for write-back) over that MATMUL.
* ``accel_sim_cycles_per_s_verilator``: simulated cycles per second of wall time of the
  verify MATMUL, cocotb testbench and AXI models included.
* ``accel_cells_2x2``, ``accel_transistors_2x2``, ``accel_logic_depth_2x2``: Yosys synthesis
  of ``accel_2x2`` (see :mod:`speqmoe.synth`; its memories are small because generic
  synthesis maps them to flip-flops).
"""

from __future__ import annotations

from golden.seed import derived_seed
from sim.accel_program import AccelParams

LATENCY = 24
N, K = 256, 1024
PARAMS = AccelParams(rows=4, cols=4, slots=8, expert_bytes=16384, k_max=K, n_max=N)
SYNTH_DESIGN = "accel_2x2"


def measure(build, seed: int, progress) -> dict:
    """Run the utilisation test of :mod:`sim.tb_accel` and return its statistics."""
    from sim.accel_flow import run_accel_cocotb

    progress(f"Verilator: 4x4 top, N={N}, K={K}, {LATENCY} cycles of read latency ...")
    _, stats = run_accel_cocotb("verilator", PARAMS, build, seed=seed, commands=0, pauses=0.0,
                                latency=LATENCY, testcase="draft_and_verify_utilisation",
                                extra={"ACCEL_BENCH": f"{N},{K}"})
    return stats["bench"]


def run(ctx) -> dict:
    from sim.runner import simulator_missing
    from speqmoe.benches.array import synth_cached

    out: dict = {}
    reason = simulator_missing("verilator")
    if reason:
        ctx.progress(f"verilator missing: {reason}; utilisation figures omitted")
    else:
        s = measure(ctx.build_dir / "sim" / "accel_4x4", derived_seed("bench_accel"),
                    ctx.progress)
        out.update({
            "accel_utilization_verify": s["verify"]["utilization"],
            "accel_utilization_draft": s["draft"]["utilization"],
            "accel_cycles_verify_4x4_n256_k1024": s["verify"]["cycles"],
            "accel_cycles_draft_4x4_n256_k1024": s["draft"]["cycles"],
            "accel_draft_bytes_ratio": s["draft_bytes_ratio"],
            "accel_sim_cycles_per_s_verilator": s["verify"]["sim_cycles_per_s"],
        })
        for mode in ("verify", "draft"):
            out[f"accel_mem_stall_cycles_{mode}"] = s[mode]["mem_stall_cycles"]
            out[f"accel_wb_stall_cycles_{mode}"] = s[mode]["wb_stall_cycles"]
    summary = synth_cached([SYNTH_DESIGN], ctx.build_dir / "synth", ctx.progress)
    r = summary[SYNTH_DESIGN]
    out.update({"accel_cells_2x2": r["cells"], "accel_transistors_2x2": r["transistors"],
                "accel_logic_depth_2x2": r["logic_depth"]})
    return out
