"""Bench section ``array``: PE-array utilisation, draft bytes, simulation speed and area.

* ``array_utilization_draft`` / ``array_utilization_verify``: MACs done / (4 * PEs * cycles)
  of a 4x4 array on one pass over a layer with K = 1024, N = 256 (4 verify tokens), no
  injected stall, measured on Verilator (MAC counter of the RTL; cycles from the first beat
  accepted to the last result taken). The goal is at least 0.95 in both modes.
* ``array_draft_bytes_ratio``: weight bytes the array took in the draft pass over those of
  the verify pass (16-bit words accepted x PEs x 2 bytes, from the RTL busy counter); 0.25.
* ``array_busy_cycles_<mode>``, ``array_starved_cycles_<mode>``, ``array_blocked_cycles_<mode>``,
  ``array_lut_cycles_<mode>``:
  the array's own counters over that run (every cycle the testbench drove, the configuration
  beat and the last tile's drain included): a beat accepted; the array could take one but
  none was offered; a finished tile's results were not taken yet; a new draft lut was
  being written.
* ``array_sim_cycles_per_s_verilator``: clock cycles per second of wall time of that run,
  cocotb testbench included, with the model compiled at ``-O0`` as in the tests (see
  :func:`sim.array_flow.run_array_cocotb`).
* ``array_transistors_<r>x<c>``, ``array_logic_depth_<r>x<c>``,
  ``array_transistors_per_pe_<r>x<c>``: Yosys synthesis of ``pe_array_2x2`` and
  ``pe_array_4x4`` (see :mod:`speqmoe.synth`).
"""

from __future__ import annotations

from pathlib import Path

from golden.seed import derived_seed
from speqmoe.config import Config

ROWS = COLS = 4
N, K = 256, 1024
SYNTH_DESIGNS = ("pe_array_2x2", "pe_array_4x4")
# The array's cycle counters (hw.array.PEArray), one cause each.
COUNTER_CAUSES = ("busy_cycles", "starved_cycles", "blocked_cycles", "lut_cycles")


def measure_passes(rows: int, cols: int, n: int, k: int, build: Path, seed: int, *,
                   stall: float = 0.0, backpressure: float = 0.0) -> dict:
    """One draft and one verify pass on Verilator (no stall unless *stall* / *backpressure*
    give the probability of an idle input cycle / of results not taken); utilisation, bytes,
    speed, and the array's cycle counters by cause (``counters``: busy, starved, blocked, as
    the RTL counts them over the testbench's cycles; ``model_counters``: what the
    testbench's flow model predicts for them)."""
    import numpy as np

    from golden import pe_array
    from golden.bsfp import encode
    from sim.array_flow import make_job, mismatches, random_layer, run_array_cocotb

    pe = Config().pe
    depth = dict(mul_stages=pe.mul_stages, add_stages=pe.add_stages)
    rng = np.random.default_rng(seed)
    enc = encode(random_layer(rng, n, k))
    acts = rng.normal(size=(4, k)).astype(np.float16)
    p = rows * cols
    out = {}
    cycles_total = seconds_total = 0.0
    for mode in ("draft", "verify"):
        job = make_job(mode, enc, acts[0] if mode == "draft" else acts, rows, cols, **depth)
        run = run_array_cocotb("verilator", rows, cols, [job], build, seed=seed, stall=stall,
                               backpressure=backpressure, overlap=False, **depth)
        bad = mismatches(run, [job])
        if bad:
            raise RuntimeError(f"array {mode} pass differs from the golden model: {bad}")
        cycles = run.stats[0].cycles
        out[mode] = {
            "cycles": cycles,
            "golden_cycles": job.cycles,
            "macs": run.counters["macs"],
            "utilization": run.counters["macs"] / (4 * p * cycles),
            "bytes": run.counters["busy_cycles"] * p * 2,
            "plane_bytes": pe_array.weight_bytes(mode, n, k),
            "bit_exact": True,
            "counters": {c: run.counters[c] for c in COUNTER_CAUSES},
            "model_counters": {c: run.model_counters[c] for c in COUNTER_CAUSES},
            "testbench_cycles": run.cycles,
        }
        cycles_total += run.cycles
        seconds_total += run.seconds
    out["cycles_per_s"] = cycles_total / seconds_total
    return out


def synth_cached(names: list[str], out: Path, progress) -> dict:
    """Synthesis figures of *names*; a design whose Verilog equals the one last synthesized in
    ``out/<name>/`` keeps its figures from ``out/summary.json`` (the 4x4 array takes Yosys
    about ten minutes)."""
    from amaranth.back import verilog

    from speqmoe import designs
    from speqmoe.commands.synth import synth_designs
    from speqmoe.synth import load_designs

    summary = load_designs(out / "summary.json")
    stale = []
    for name in names:
        old = out / name / f"{name}.v"
        text = verilog.convert(designs.build(name, Config()), name=name, emit_src=False)
        if name in summary and old.exists() and old.read_text() == text:
            progress(f"{name}: Verilog unchanged since its last synthesis; figures reused")
        else:
            stale.append(name)
    if stale:
        summary = synth_designs(stale, Config(), out, progress)
    return summary


def run(ctx) -> dict:
    from sim.runner import simulator_missing

    out: dict = {}
    reason = simulator_missing("verilator")
    if reason:
        ctx.progress(f"verilator missing: {reason}; utilisation figures omitted")
    else:
        ctx.progress(f"Verilator: {ROWS}x{COLS} array, N={N}, K={K}, draft and verify passes ...")
        m = measure_passes(ROWS, COLS, N, K, ctx.build_dir / "sim" / f"pe_array_{ROWS}x{COLS}",
                           derived_seed("bench_array"))
        for mode in ("draft", "verify"):
            if m[mode]["cycles"] != m[mode]["golden_cycles"]:
                raise RuntimeError(f"{mode}: {m[mode]['cycles']} cycles on Verilator, golden "
                                   f"predicts {m[mode]['golden_cycles']}")
        out.update({
            "array_utilization_draft": m["draft"]["utilization"],
            "array_utilization_verify": m["verify"]["utilization"],
            "array_cycles_draft_4x4_n256_k1024": m["draft"]["cycles"],
            "array_cycles_verify_4x4_n256_k1024": m["verify"]["cycles"],
            "array_draft_bytes_ratio": m["draft"]["bytes"] / m["verify"]["bytes"],
            "array_sim_cycles_per_s_verilator": m["cycles_per_s"],
        })
        for mode in ("draft", "verify"):
            for cause in COUNTER_CAUSES:
                out[f"array_{cause}_{mode}"] = m[mode]["counters"][cause]
    summary = synth_cached(list(SYNTH_DESIGNS), ctx.build_dir / "synth", ctx.progress)
    for name in SYNTH_DESIGNS:
        r = summary[name]
        shape = name.removeprefix("pe_array_")
        rows, cols = (int(v) for v in shape.split("x"))
        out[f"array_transistors_{shape}"] = r["transistors"]
        out[f"array_cells_{shape}"] = r["cells"]
        out[f"array_logic_depth_{shape}"] = r["logic_depth"]
        out[f"array_transistors_per_pe_{shape}"] = r["transistors"] / (rows * cols)
    return out
