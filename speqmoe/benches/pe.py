"""Bench section ``pe``: PE area (Yosys) and simulation speed on three simulators.

* ``pe_area_ratio``: estimated transistors of ``ReconfigurablePE`` over ``Fp16PE``
  (``speqmoe synth``; Yosys ``stat -tech cmos``); the goal is at most 1.15.
* ``sim_cycles_per_s_<simulator>``: clock cycles per second of wall time while the
  golden-checking testbench runs the PE (verify and draft dot products with random stalls).
  Verilator and Icarus run the generated Verilog under cocotb, so the figure includes the
  Python testbench; Amaranth runs its own Python simulator with the same stimulus.
"""

from __future__ import annotations

from pathlib import Path

from golden.seed import base_seed, derived_seed
from speqmoe.config import Config

VERILATOR_SEQUENCES = 2000
ICARUS_SEQUENCES = 300
AMARANTH_SEQUENCES = 100


def run(ctx) -> dict:
    import numpy as np

    from sim.amaranth_pe import simulate_pe
    from sim.pe_flow import run_pe_cocotb
    from sim.pe_stimulus import interleaved, pe_batches
    from sim.runner import simulator_missing
    from speqmoe.commands.synth import synth_designs

    out: dict = {}
    pe = Config().pe
    depth = dict(mul_stages=pe.mul_stages, add_stages=pe.add_stages)
    summary = synth_designs(["reconfigurable_pe", "fp16_pe"], Config(), Path("build/synth"),
                            ctx.progress)
    rec, base = summary["reconfigurable_pe"], summary["fp16_pe"]
    out.update({
        "pe_area_ratio": rec["transistors"] / base["transistors"],
        "pe_transistors_reconfigurable": rec["transistors"],
        "pe_transistors_fp16": base["transistors"],
        "pe_cells_reconfigurable": rec["cells"],
        "pe_cells_fp16": base["cells"],
        "pe_logic_depth_reconfigurable": rec["logic_depth"],
        "pe_logic_depth_fp16": base["logic_depth"],
    })
    build = Path("build/bench/sim")
    for simulator, n, lengths in (("verilator", VERILATOR_SEQUENCES, "mixed"),
                                  ("icarus", ICARUS_SEQUENCES, "short")):
        if simulator_missing(simulator):
            ctx.progress(f"{simulator} missing: {simulator_missing(simulator)}; figure omitted")
            continue
        ctx.progress(f"{simulator}: {n} dot products per mode ...")
        r = run_pe_cocotb(simulator, "reconfigurable", "verify,draft", n,
                          build / f"pe_{simulator}", seed=base_seed(), lengths=lengths, **depth)
        if not r.passed:
            raise RuntimeError(f"{simulator} PE simulation failed; see {build / f'pe_{simulator}'}")
        out[f"sim_cycles_per_s_{simulator}"] = r.cycles_per_s
    ctx.progress(f"amaranth: {AMARANTH_SEQUENCES} dot products per mode ...")
    batches = interleaved(pe_batches("reconfigurable", ["verify", "draft"], AMARANTH_SEQUENCES,
                                     derived_seed("bench_pe_amaranth")), depth["add_stages"] + 1)
    results, cycles, seconds = simulate_pe("reconfigurable", batches, seed=base_seed(), **depth)
    expected = [e for b in batches for e in b.expected]
    if len(results) != len(expected) or not all(
            np.array_equal(np.asarray(g, np.uint32), np.asarray(e, np.uint32))
            for g, e in zip(results, expected)):
        raise RuntimeError("Amaranth PE simulation differs from the golden model")
    out["sim_cycles_per_s_amaranth"] = cycles / seconds
    return out
