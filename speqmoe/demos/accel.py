"""Demo section ``accel``: the accelerator top, one draft and one verify MATMUL from host memory.

The top (:class:`hw.accel.Accelerator`, 4x4 PEs, 256-bit AXI4) runs the cocotb test
``draft_and_verify_utilisation`` of :mod:`sim.tb_accel` on Verilator: a random ``N x K`` BSFP
matrix laid out by :func:`golden.accel.tensor_layout` in host memory (cocotbext-axi AXI RAM
behind :class:`hw.axi.AxiReadLatency`), ``LOAD_ACTS`` and ``SET_TABLES``, then one verify and
one draft ``MATMUL``. The test checks every result byte and every counter against
:class:`golden.accel.AccelModel` and records the busy cycles, MACs and weight bytes of each
pass. The section sets them beside the golden lower bound on cycles and the golden layout's
byte counts. It uses the parameters of the ``accel`` bench section (same Verilog, same build
folder), so that ``make bench`` and ``make demo`` share one Verilator build.
"""

from __future__ import annotations

import dataclasses
import math

ORDER = 70          # after the PE array (20) and the expert cache (60)

N, K = 128, 256
QUICK_N, QUICK_K = 64, 128
MODES = ("draft", "verify")
TITLE = "Accelerator top: draft and verify MATMUL from host memory"


def block_diagram(params, latency: int | None = None) -> str:
    """The top's block diagram (as in docs/accel.md), annotated with ``params``."""
    p = params.pes
    line = 2 * p
    bus_bits = 8 * line
    slot_kib = params.expert_bytes / 1024
    mem = f" host memory: AXI4 master m_axi, {bus_bits}-bit data ({line}-byte lines)"
    if latency:
        mem += f", {latency} cycles of read latency (simulation harness)"
    l3 = f"   ├──> ActBuffer (LOAD_ACTS) ── 4 tokens x {params.k_max} FP16 "
    l4 = "   ├──> WeightStreamer ─┬ draft pass: 4 draft-plane streams ─ gather "
    l5 = "   │   (dense source)   └ verify pass: draft + residual streams ─ merge ─"
    col = max(len(l3), len(l4), len(l5))
    lines = [
        mem,
        "   │ AR/R: AxiReadArbiter, priority  demand fill > weights > activations > "
        "prefetch fill",
        l3 + "─" * (col - len(l3)) + "┐",
        l4 + "─" * (col - len(l4)) + "┤",
        l5 + "─" * (col - len(l5)) + f"┴─> PEArray {params.rows}x{params.cols} ({p} PEs, "
        f"{4 * p} lanes) ─> ResultWriter ─> m_axi AW/W/B",
        f"   └──> ExpertCacheController fills ─> slot memory {params.slots} x "
        f"{slot_kib:g} KiB (same two planes) ─> WeightStreamer (slot source)",
        "",
        f" host CPU: AXI4-Lite slave s_axil ─> CSRs + {params.cmd_depth}-entry command queue "
        "─> one command at a time ─> irq",
        f" limits: N <= {params.n_max}, K <= {params.k_max}; {params.n_layers} layers x "
        f"{params.n_experts} experts, {params.policy} replacement, {params.queue_depth} "
        "prefetch fills in flight",
    ]
    return "```\n" + "\n".join(lines) + "\n```"


def golden_predictions(params, n: int, k: int) -> dict:
    """Per mode: the golden lower bound on cycles, MACs and weight bytes of one MATMUL."""
    import numpy as np

    from golden import bsfp, pe_array
    from golden.accel import tensor_layout

    p = params.pes
    # Region sizes depend on the shape only; any matrix of that shape gives them.
    g = params.interleave
    lay = tensor_layout(bsfp.encode(np.zeros((n, k), dtype=np.float16)), p, g)
    t = math.ceil(n / p)
    assert len(lay.draft) == t * k // 4 * 2 * p and len(lay.residual) == 3 * len(lay.draft)
    out = {"tiles_verify": lay.tiles, "draft_region_bytes": len(lay.draft),
           "residual_region_bytes": len(lay.residual)}
    for mode in MODES:
        cycles = pe_array.cycles(mode, n, k, params.rows, params.cols, interleave=g,
                                 latency=pe_array.array_latency(params.mul_stages,
                                                                params.add_stages))
        macs = pe_array.macs(mode, n, k, params.rows, params.cols, g)
        out[mode] = {
            "min_cycles": cycles,
            "macs": macs,
            "utilization_bound": macs / (4 * p * cycles),
            "bytes": len(lay.draft) + (len(lay.residual) if mode == "verify" else 0),
            "tiles": pe_array.tiles(mode, n, k, params.rows, params.cols),
        }
    out["draft_bytes_ratio"] = out["draft"]["bytes"] / out["verify"]["bytes"]
    return out


def _plot(gold: dict, measured: dict | None, path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(MODES))
    fig, (ax_c, ax_b) = plt.subplots(1, 2, figsize=(7.5, 3.2))
    width = 0.38 if measured else 0.6
    for ax, key_m, key_g, unit in ((ax_c, "cycles", "min_cycles", "clock cycles"),
                                   (ax_b, "bytes", "bytes", "weight bytes read")):
        g = [gold[m][key_g] for m in MODES]
        if measured:
            ax.bar(x - width / 2, [measured[m][key_m] for m in MODES], width, color="#c0392b",
                   label="RTL (Verilator, measured)")
            ax.bar(x + width / 2, g, width, color="#888888",
                   label="golden bound" if key_m == "cycles" else "golden layout")
        else:
            ax.bar(x, g, width, color="#888888",
                   label="golden bound" if key_m == "cycles" else "golden layout")
        ax.set_xticks(x, MODES)
        ax.set_ylabel(unit)
        ax.legend(fontsize=7)
    ax_c.set_title("busy cycles per MATMUL", fontsize=9)
    ax_b.set_title("weight bytes per MATMUL (BYTES_DENSE)", fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_stalls(measured: dict, p: int, path, title: str) -> None:
    """Busy cycles of each MATMUL split by the top's counters: array computing, waiting for
    weights or activations, waiting for write-back, and the rest (command overhead)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.0))
    for i, mode in enumerate(MODES):
        parts = stall_parts(measured[mode], p)
        left = 0
        for (label, value), colour in zip(parts.items(), STALL_COLOURS):
            ax.barh(i, value, left=left, color=colour, edgecolor="k", lw=0.4,
                    label=label if i == 0 else None)
            left += value
    ax.set_yticks(range(len(MODES)), MODES)
    ax.set_xlabel("clock cycles of the MATMUL (BUSY_CYCLES)")
    ax.legend(fontsize=6.5, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.32))
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


STALL_COLOURS = ("#2e8b57", "#e0a030", "#c0392b", "#888888")


def stall_parts(r: dict, p: int) -> dict:
    """A MATMUL's busy cycles by cause, from the top's counters: cycles the array took a beat
    (MACs / 4P), ``MEM_STALL_CYCLES``, ``WB_STALL_CYCLES`` and the remainder."""
    compute = r["macs"] // (4 * p)
    mem, wb = r.get("mem_stall_cycles", 0), r.get("wb_stall_cycles", 0)
    return {"array takes a beat (MACS / 4P)": compute,
            "weights or activations not there (MEM_STALL_CYCLES)": mem,
            "results not written back yet (WB_STALL_CYCLES)": wb,
            "other: command start, pipeline fill and drain, last write": r["cycles"] - compute - mem - wb}


def run(ctx):
    from sim.runner import simulator_missing
    from speqmoe.benches.accel import LATENCY, PARAMS
    from speqmoe.demo import DemoSection

    params = PARAMS
    n, k = (QUICK_N, QUICK_K) if ctx.quick else (N, K)
    seed = ctx.config.sim.seed if ctx.config is not None else None
    if seed is None:
        from golden.seed import base_seed
        seed = base_seed()
    p = params.pes
    gold = golden_predictions(params, n, k)
    diagram = block_diagram(params, LATENCY)

    reason = simulator_missing("verilator")
    measured, error, seconds = None, None, None
    if reason:
        ctx.progress(f"Verilator missing ({reason}): golden predictions only")
    else:
        import time

        from sim.accel_flow import run_accel_cocotb

        ctx.progress(f"Verilator: {params.rows}x{params.cols} top ({16 * p}-bit bus), one verify "
                     f"and one draft MATMUL of a {n}x{k} matrix, {LATENCY} cycles of read "
                     "latency (the first run builds the model, about a minute) ...")
        start = time.perf_counter()
        try:
            _, stats = run_accel_cocotb("verilator", params, ctx.build_dir / "sim" / "accel_4x4",
                                        seed=seed, commands=0, pauses=0.0, latency=LATENCY,
                                        testcase="draft_and_verify_utilisation",
                                        extra={"ACCEL_BENCH": f"{n},{k}"})
            measured = stats.get("bench")
            if measured is None:
                error = "the test wrote no statistics"
        except AssertionError as exc:     # a result, counter or bound check failed in the RTL
            error = str(exc).splitlines()[0]
        seconds = time.perf_counter() - start

    plot = ctx.out_dir / "accel_draft_verify.png"
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    _plot(gold, measured, plot, f"{params.rows}x{params.cols} top, {16 * p}-bit bus, "
          f"{n}x{k} matrix, read latency {LATENCY} cycles")

    md = [
        f"`hw.accel.Accelerator` with {params.rows}x{params.cols} PEs ({p} PEs, {4 * p} lanes), "
        f"a {16 * p}-bit AXI4 master ({2 * p}-byte lines), {params.slots} expert slots of "
        f"{params.expert_bytes} bytes and a command queue of {params.cmd_depth} entries "
        "(the parameters of the `accel` bench section):",
        "",
        diagram,
        "",
    ]
    drawn = ctx.out_dir / "accel_blocks.png"
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        from speqmoe import designs
        from speqmoe.blockdiagram import draw, extract
        from speqmoe.config import Config

        ctx.progress("drawing the block diagram of accel_2x2 from its elaborated design ...")
        top = designs.build("accel_2x2", ctx.config or Config())
        blocks = extract(top, "accel_2x2")
        draw(blocks, drawn, f"accel_2x2 ({designs.describe('accel_2x2', ctx.config or Config())})")
        md += [
            f"![accelerator block diagram]({drawn.name})",
            "",
            "*Figure (generated from the design, `speqmoe.blockdiagram`):* the submodules of "
            f"`accel_2x2` ({len(blocks.blocks)} boxes with the top's ports and its own logic; "
            "same blocks as the 4x4 top, narrower buses), each with the members of its "
            "signature and their widths in bits, as Amaranth elaborates them; every arrow is a "
            "group of nets of the RTLIL netlist Amaranth converts the top to (the netlist the "
            "Verilog is written from), drawn from the block that drives most of its bits, "
            "labelled with the ports at both ends and the bits in each direction. Red: the "
            "nets of a stream port (valid, ready, payload); dotted: nets to or from the top's "
            "own logic (sequencer, checks, counters). Port names such as `(internal)` are "
            "signals Amaranth exported from a submodule without a signature member.",
            "",
        ]
    except Exception as exc:           # the diagram is an illustration; the section goes on
        md += [f"(The block diagram could not be drawn: {exc}.)", ""]
    figures = {"params": {**dataclasses.asdict(params), "bus_bits": 16 * p}, "n": n, "k": k,
               "read_latency_cycles": LATENCY, "seed": seed, "golden": gold}
    ok = True
    if measured is not None:
        ratio = measured["draft_bytes_ratio"]
        stall_plot = ctx.out_dir / "accel_stalls.png"
        _plot_stalls(measured, p, stall_plot, f"{params.rows}x{params.cols} top, {n}x{k} "
                     f"MATMUL, {LATENCY} cycles of read latency: busy cycles by cause")
        figures["busy_by_cause"] = {m: stall_parts(measured[m], p) for m in MODES}
        ok = (ratio == gold["draft_bytes_ratio"]
              and all(measured[m]["bytes"] == gold[m]["bytes"]
                      and measured[m]["cycles"] >= gold[m]["min_cycles"] for m in MODES))
        rows = []
        for mode in ("verify", "draft"):
            r, g = measured[mode], gold[mode]
            rows.append(
                f"| {mode} | {g['tiles']} | {r['cycles']} | {g['min_cycles']} | "
                f"{r['cycles'] - g['min_cycles']} | {r['utilization']:.3f} | "
                f"{g['utilization_bound']:.3f} | {r['macs']} | {r['bytes']} | {g['bytes']} |")
        md += [
            f"**Simulation** (measured, Verilator via cocotb, test `draft_and_verify_utilisation` "
            f"of `sim/tb_accel.py`, seed {seed}): a random {n}x{k} FP16 matrix, encoded as BSFP "
            f"and laid out by `golden.accel.tensor_layout` in host memory (a cocotbext-axi AXI "
            f"RAM); `LOAD_ACTS` of 4 tokens and `SET_TABLES`, then one verify and one draft "
            f"`MATMUL` from host memory. Every result written and every counter is "
            f"**bit-exact** against `golden.accel.AccelModel` (the test asserts it). Wall time "
            f"{seconds:.1f} s (Verilator build, reused while the Verilog is unchanged, and "
            f"simulation).",
            "",
            "| mode | tiles | busy cycles (RTL) | golden bound | overhead | utilisation (RTL) | "
            "utilisation at the bound | MACs (RTL) | weight bytes read (RTL) | golden layout |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "**Where the busy cycles go** (measured, the top's counters over each MATMUL):",
            "",
            "| mode | busy cycles | array takes a beat | memory stall | write-back stall | "
            "other |",
            "|---|---|---|---|---|---|",
            *[f"| {mode} | {measured[mode]['cycles']} | "
              + " | ".join(str(v) for v in stall_parts(measured[mode], p).values()) + " |"
              for mode in MODES],
            "",
            f"![busy cycles by cause]({stall_plot.name})",
            "",
            "*Figure:* each MATMUL's `BUSY_CYCLES` split by cause (measured on Verilator): "
            "cycles in which the array took a beat (`MACS` / 4P), `MEM_STALL_CYCLES` (the "
            "array could take a beat but weights or activations were not there), "
            "`WB_STALL_CYCLES` (it could not, results waiting for write-back) and the rest "
            "(command start, pipeline fill and drain, the last write response). The memory "
            f"behind it is a model ({LATENCY} cycles of read latency, assumed).",
            "",
            f"Draft / verify weight bytes: **{ratio:.3f}** "
            f"(golden {gold['draft_bytes_ratio']:.3f}; "
            f"draft region {gold['draft_region_bytes']} bytes = T x K/4 x 2P with T = "
            f"ceil({n}/{p}) = {gold['tiles_verify']}; residual region 3x that, "
            f"{gold['residual_region_bytes']} bytes).",
            "",
        ]
        summary = [
            f"accelerator {params.rows}x{params.cols}, {n}x{k} MATMUL: verify "
            f"{measured['verify']['cycles']} cycles (bound {gold['verify']['min_cycles']}), "
            f"utilisation {measured['verify']['utilization']:.3f}; draft "
            f"{measured['draft']['cycles']} cycles (bound {gold['draft']['min_cycles']}), "
            f"utilisation {measured['draft']['utilization']:.3f}",
            f"accelerator weight bytes: draft {measured['draft']['bytes']}, verify "
            f"{measured['verify']['bytes']}, ratio {ratio:.3f}, bit-exact against golden.accel",
        ]
        figures["measured"] = measured
        figures["sim_seconds"] = seconds
        figures["bit_exact"] = True
    else:
        ok = False
        why = (f"Simulation skipped: {reason}." if reason else
               f"**Simulation FAILED** (the RTL disagrees with `golden.accel` or the test broke): "
               f"{error} (log: `{ctx.build_dir / 'sim' / 'accel_4x4' / 'sim.log'}`).")
        rows = [f"| {mode} | {gold[mode]['tiles']} | {gold[mode]['min_cycles']} | "
                f"{gold[mode]['utilization_bound']:.3f} | {gold[mode]['macs']} | "
                f"{gold[mode]['bytes']} |" for mode in ("verify", "draft")]
        md += [
            why + f" Golden predictions for one verify and one draft `MATMUL` of a {n}x{k} matrix:",
            "",
            "| mode | tiles | cycle bound | utilisation at the bound | MACs | weight bytes |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Draft / verify weight bytes: {gold['draft_bytes_ratio']:.3f}.",
            "",
        ]
        summary = [f"accelerator: simulation {'skipped (' + reason + ')' if reason else 'FAILED'}"
                   f"; golden bound verify {gold['verify']['min_cycles']} / draft "
                   f"{gold['draft']['min_cycles']} cycles, bytes ratio "
                   f"{gold['draft_bytes_ratio']:.3f}"]
        figures["bit_exact"] = False
        figures["skipped"] = reason or None
        figures["error"] = error
    md += [
        "What is measured and what is assumed: busy cycles are the RTL's `BUSY_CYCLES` counter "
        "over each `MATMUL` (from leaving the command queue to the last write response), MACs "
        "its `MACS` counter (padding included), bytes its `BYTES_DENSE` counter; utilisation = "
        f"MACs / (4 x {p} PEs x busy cycles). The golden bound "
        "(`golden.pe_array.cycles`, = `AccelModel.min_cycles`) counts the array alone, first "
        "beat to last result, with weights always there; the overhead column is memory latency, "
        "pipeline fill and write-back around it. The host memory is a model: cocotbext-axi's AXI "
        f"RAM behind `hw.axi.AxiReadLatency`, {LATENCY} cycles of read latency (an **assumption**, "
        "not a DRAM measurement), no backpressure. Weight-byte predictions are the sizes of "
        "`golden.accel.tensor_layout` regions: the draft pass reads the draft region, the "
        "verify pass the draft and residual regions.",
        "",
        f"![accelerator draft vs verify]({plot.name})",
        "",
        "*Figure:* left, busy cycles of each MATMUL, measured in RTL (red) beside the golden "
        "lower bound of the array alone (grey, modelled); right, weight bytes read, the RTL's "
        "`BYTES_DENSE` counter (red) beside the sizes of the golden layout's regions (grey).",
    ]
    return DemoSection(title=TITLE, markdown="\n".join(md), summary=summary, figures=figures,
                       ok=ok)
