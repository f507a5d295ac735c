"""Demo section ``pe``: the reconfigurable PE from Verilog to simulation and synthesis."""

from __future__ import annotations

from pathlib import Path

ORDER = 10


def run(ctx):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from golden import bsfp, quant
    from sim.pe_flow import run_pe_cocotb
    from speqmoe import designs
    from speqmoe.benches.bsfp import SIGMA, gaussian_weights
    from speqmoe.commands.synth import synth_designs
    from speqmoe.config import Config
    from speqmoe.demo import DemoSection

    cfg = ctx.config or Config()
    vdir = ctx.build_dir / "verilog"
    ctx.progress("generating Verilog ...")
    depth = dict(mul_stages=cfg.pe.mul_stages, add_stages=cfg.pe.add_stages)
    paths = [designs.write("reconfigurable_pe", cfg, vdir), designs.write("fp16_pe", cfg, vdir)]

    n = cfg.sim.pe_sequences
    ctx.progress(f"simulating the reconfigurable PE on Verilator: {n} random dot products "
                 "per mode plus the edge cases, random stalls and backpressure ...")
    sim = run_pe_cocotb("verilator", "reconfigurable", "verify,draft", n,
                        ctx.build_dir / "demo" / "pe_sim", seed=cfg.sim.seed, **depth)

    ctx.progress("synthesizing both PEs with Yosys ...")
    synth = synth_designs(["reconfigurable_pe", "fp16_pe"], cfg, ctx.build_dir / "synth",
                          ctx.progress)
    rec, base = synth["reconfigurable_pe"], synth["fp16_pe"]
    ratio = rec["transistors"] / base["transistors"]

    ctx.progress("BSFP-4 draft error on a Gaussian tensor ...")
    w = gaussian_weights()
    enc = bsfp.encode(w)
    lossless = np.array_equal(enc.decode_full().view(np.uint16), w.view(np.uint16))
    err = {"BSFP-4 draft (4 of 16 bits)": bsfp.draft_rel_rmse(w, enc),
           "INT4 RTN, per tensor": quant.rel_rmse(w, quant.int4_rtn(w)),
           "INT4 RTN, groups of 128": quant.rel_rmse(w, quant.int4_rtn(w, group_size=128))}

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(["Fp16PE", "ReconfigurablePE"], [base["transistors"], rec["transistors"]],
           color=["#888888", "#c0392b"])
    ax.axhline(1.15 * base["transistors"], color="k", ls=":", lw=0.9,
               label="goal: 1.15 x Fp16PE")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_ylabel("transistors (Yosys CMOS estimate)")
    ax.set_title(f"PE area: ratio {ratio:.3f} (goal <= 1.15)")
    fig.tight_layout()
    plot = ctx.out_dir / "pe_area.png"
    fig.savefig(plot, dpi=120)
    plt.close(fig)

    verdict = "bit-exact" if sim.passed else "MISMATCH"
    md = [
        "Generated Verilog: " + ", ".join(f"`{p.name}`" for p in paths) + f" (in `{vdir}`).",
        "",
        f"**Simulation** (measured, Verilator via cocotb): {sim.sequences} dot products "
        f"(verify and draft batches interleaved, edge cases included, random stalls and "
        f"backpressure), {sim.cycles} cycles: **{verdict}** against the golden model "
        f"(seed {cfg.sim.seed}).",
        "",
        "**Synthesis** (measured, Yosys `synth -flatten`, `stat -tech cmos`, `ltp -noff`):",
        "",
        "| design | cells | est. transistors | logic depth |",
        "|---|---|---|---|",
        f"| Fp16PE | {base['cells']} | {base['transistors']} | {base['logic_depth']} |",
        f"| ReconfigurablePE | {rec['cells']} | {rec['transistors']} | {rec['logic_depth']} |",
        "",
        f"Area ratio ReconfigurablePE / Fp16PE: **{ratio:.3f}** (goal at most 1.15). "
        "Both PEs take the per-tensor tables as inputs shared by the whole array.",
        "",
        f"![PE area]({plot.name})",
        "",
        "*Figure:* transistors of each PE as Yosys estimates them (measured by synthesis: a "
        "fixed CMOS count per gate type, summed; `build/synth/summary.json` defines it), and "
        "the area goal for the reconfigurable PE.",
        "",
        f"**Draft error** (measured, golden model, 2^18 Gaussian weights, sigma {SIGMA}; "
        f"relative RMS error; BSFP encode -> decode_full lossless: {lossless}):",
        "",
        "| format | rel. RMSE |",
        "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in err.items()],
    ]
    summary = [
        f"simulation: {sim.sequences} dot products on Verilator, {verdict}",
        f"area: ReconfigurablePE {rec['transistors']} vs Fp16PE {base['transistors']} "
        f"transistors, ratio {ratio:.3f} (goal <= 1.15)",
        f"draft rel. RMSE: BSFP-4 {err['BSFP-4 draft (4 of 16 bits)']:.4f}, "
        f"INT4 per tensor {err['INT4 RTN, per tensor']:.4f}, "
        f"INT4 g128 {err['INT4 RTN, groups of 128']:.4f}",
    ]
    figures = {"pe_area_ratio": ratio, "sim_passed": sim.passed, "sim_sequences": sim.sequences,
               "draft_rel_rmse": err, "synth": {"reconfigurable_pe": rec, "fp16_pe": base}}
    return DemoSection(title="Reconfigurable PE (SPEQ draft/verify)", markdown="\n".join(md),
                       summary=summary, figures=figures, ok=sim.passed and lossless)
