"""Demo section ``array``: one draft and one verify pass of a small layer on the PE array."""

from __future__ import annotations

ORDER = 20

N, K = 128, 512
QUICK_N, QUICK_K = 64, 128


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
    m = measure_passes(rows, cols, n, k, ctx.build_dir / "sim" / f"pe_array_{rows}x{cols}",
                       cfg.sim.seed)
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
    summary = [
        f"PE array {rows}x{cols}, {n}x{k} layer: draft utilisation "
        f"{m['draft']['utilization']:.3f}, verify {m['verify']['utilization']:.3f}, "
        f"draft/verify bytes {ratio:.3f}, bit-exact, cycles = golden: {timing_ok}",
    ]
    figures = {"rows": rows, "cols": cols, "n": n, "k": k, "draft": m["draft"],
               "verify": m["verify"], "draft_bytes_ratio": ratio,
               "sim_cycles_per_s_verilator": m["cycles_per_s"]}
    return DemoSection(title="PE array: draft and verify passes", markdown="\n".join(md),
                       summary=summary, figures=figures, ok=timing_ok)
