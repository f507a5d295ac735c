"""Demo section ``array``: one draft and one verify pass of a small layer on the PE array."""

from __future__ import annotations

ORDER = 20

N, K = 128, 512
QUICK_N, QUICK_K = 64, 128
# The second pair of passes: probability of an idle weight or activation offer per cycle, and
# of the results not being taken (the testbench's random stalls, seeded).
STALL, BACKPRESSURE = 0.1, 0.1
CAUSES = (("busy_cycles", "busy: a beat accepted", "#2e8b57"),
          ("starved_cycles", "starved: could accept, no beat offered", "#e0a030"),
          ("blocked_cycles", "blocked: results not taken yet", "#c0392b"),
          ("lut_cycles", "writing a new draft lut", "#7f7f7f"))


def _plot_utilisation(runs: dict, path, title: str) -> None:
    """Stacked shares of clock cycles by cause: the RTL's counters and the flow model's."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(7.2, 3.4))
    labels, x = [], 0.0
    for label, r in runs.items():
        for dx, key, hatch in ((-0.2, "counters", None), (0.2, "model_counters", "///")):
            total = sum(r[key].values())
            bottom = 0.0
            for c, _, colour in CAUSES:
                share = r[key][c] / total
                ax.bar(x + dx, share, 0.38, bottom=bottom, color=colour, hatch=hatch,
                       edgecolor="k", lw=0.4)
                bottom += share
        labels.append((x, label))
        x += 1
    ax.set_xticks([p for p, _ in labels], [lab for _, lab in labels], fontsize=7)
    ax.set_ylabel("share of the testbench's clock cycles")
    ax.set_ylim(0, 1.32)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    handles = [Patch(facecolor=colour, edgecolor="k", lw=0.4, label=name)
               for _, name, colour in CAUSES]
    handles += [Patch(facecolor="white", edgecolor="k", lw=0.4, label="left: RTL counters (measured)"),
                Patch(facecolor="white", edgecolor="k", lw=0.4, hatch="///",
                      label="right: testbench flow model")]
    ax.legend(handles=handles, fontsize=6, ncol=2, loc="upper center")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(ctx):
    from golden import pe_array
    from speqmoe.benches.array import measure_passes
    from speqmoe.config import Config
    from speqmoe.demo import DemoSection

    cfg = ctx.config or Config()
    rows, cols = cfg.array.rows, cfg.array.cols
    n, k = (QUICK_N, QUICK_K) if ctx.quick else (N, K)
    ctx.progress(f"simulating a {rows}x{cols} PE array on Verilator: one draft and one verify "
                 f"pass (4 tokens) over a {n}x{k} BSFP layer ...")
    build = ctx.build_dir / "sim" / f"pe_array_{rows}x{cols}"
    m = measure_passes(rows, cols, n, k, build, cfg.sim.seed)
    ctx.progress(f"the same passes with random stalls: {STALL:.0%} idle input offers, "
                 f"{BACKPRESSURE:.0%} of cycles with results not taken ...")
    stalled = measure_passes(rows, cols, n, k, build, cfg.sim.seed, stall=STALL,
                             backpressure=BACKPRESSURE)
    p = rows * cols
    rows_md = []
    for mode in ("draft", "verify"):
        r = m[mode]
        tiles = pe_array.tiles(mode, n, k, rows, cols)
        rows_md.append(
            f"| {mode} | {1 if mode == 'draft' else 4} | {tiles} | {r['cycles']} "
            f"({'=' if r['cycles'] == r['golden_cycles'] else '!='} golden {r['golden_cycles']}) "
            f"| {r['utilization']:.3f} | {r['bytes']} | {r['plane_bytes']} |")
    ratio = m["draft"]["bytes"] / m["verify"]["bytes"]
    timing_ok = all(m[x]["cycles"] == m[x]["golden_cycles"] for x in ("draft", "verify"))
    md = [
        f"A {rows}x{cols} `PEArray` ({p} reconfigurable PEs, {4 * p} lanes) runs one pass per "
        f"mode over a random {n}x{k} FP16 layer encoded as BSFP-4, on Verilator (measured; "
        f"no injected stalls; seed {cfg.sim.seed}). Weights stream one 16-bit word per PE per "
        "cycle, activations are broadcast, outputs stay in the lanes until their tile ends "
        "and drain while the next tile runs. Draft mode streams only the draft plane (4 "
        "nibbles = 4 output rows per word); verify mode streams full BSFP words (one row, 4 "
        "tokens per PE).",
        "",
        "| mode | tokens | tiles | cycles | utilisation | weight bytes streamed | plane bytes |",
        "|---|---|---|---|---|---|---|",
        *rows_md,
        "",
        f"All result beats are **bit-exact** against `golden.pe_array` in both passes. Draft / "
        f"verify weight bytes: **{ratio:.3f}** (goal 0.25). Utilisation = MACs counted by the "
        f"RTL / (4 x PEs x cycles, first beat to last result).",
    ]
    runs = {f"{mode}, no stall": m[mode] for mode in ("draft", "verify")}
    runs.update({f"{mode}, {STALL:.0%} idle,\n{BACKPRESSURE:.0%} backpressure": stalled[mode]
                 for mode in ("draft", "verify")})
    plot = ctx.out_dir / "array_utilisation.png"
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    _plot_utilisation(runs, plot, f"{rows}x{cols} PE array, {n}x{k} layer: clock cycles by cause")
    cause_rows = []
    for label, r in runs.items():
        total = sum(r["counters"].values())
        cause_rows.append(f"| {label.replace(chr(10), ' ')} | {total} | "
                          + " | ".join(f"{r['counters'][c]} ({r['counters'][c] / total:.3f})"
                                       for c, _, _ in CAUSES)
                          + f" | {'yes' if r['counters'] == r['model_counters'] else '**no**'} |")
    md += [
        "",
        "**Utilisation and stalls by cause** (measured: the array's own counters "
        "`busy_cycles`, `starved_cycles`, `blocked_cycles`, `lut_cycles`, read by the cocotb "
        "testbench over "
        "every cycle it drove, from the configuration beat to the last result; modelled: the "
        "testbench's flow model `sim.array_flow.FlowModel`, which predicts from the stimulus "
        "when the array accepts beats). The first two runs are the passes above; the last two "
        f"repeat them with random stalls (seed {cfg.sim.seed}): in each cycle with no weight "
        f"(activation) beat on offer, the next one is held back with probability {STALL}, "
        f"and results are refused in {BACKPRESSURE:.0%} of the cycles. *Starved* counts every cycle the array could take "
        "a beat but none was there: the configuration beat, idle offers and the last tile's "
        "drain; *blocked* the cycles a finished tile's results waited to be taken; *lut* the "
        "cycles the array wrote a new draft lut into its PEs (after a configuration beat with "
        "a new table).",
        "",
        "| run | cycles | busy | starved | blocked | lut | counters = flow model |",
        "|---|---|---|---|---|---|---|",
        *cause_rows,
        "",
        f"![array utilisation by cause]({plot.name})",
        "",
        "*Figure:* share of clock cycles by cause in each run; left bar of each pair the RTL "
        "counters (measured on Verilator), right bar (hatched) the testbench's flow model.",
    ]
    summary = [
        f"PE array {rows}x{cols}, {n}x{k} layer: draft utilisation "
        f"{m['draft']['utilization']:.3f}, verify {m['verify']['utilization']:.3f}, "
        f"draft/verify bytes {ratio:.3f}, bit-exact, cycles = golden: {timing_ok}",
    ]
    figures = {"rows": rows, "cols": cols, "n": n, "k": k, "draft": m["draft"],
               "verify": m["verify"], "draft_bytes_ratio": ratio,
               "sim_cycles_per_s_verilator": m["cycles_per_s"],
               "stalled": {"stall": STALL, "backpressure": BACKPRESSURE,
                           "draft": stalled["draft"], "verify": stalled["verify"]}}
    return DemoSection(title="PE array: draft and verify passes", markdown="\n".join(md),
                       summary=summary, figures=figures, ok=timing_ok)
