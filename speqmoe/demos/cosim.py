"""Demo section ``cosim``: the tiny LM decoded on the accelerator RTL in every mode.

Runs :func:`speqmoe.benches.cosim.measure` (same parameters and build folder as the bench
section, fewer bytes): the shipped tiny MoE LM decodes the bench's prompt on a 4x4 accelerator
top in Verilator, in plain, SPEQ and MoBiLE mode, each byte checked against the golden decoding
with the PE array's arithmetic. The section shows the text, the measured cycles per token beside
the calibrated command-level model and the analytic performance model, and the SPEQ speedup
beside the paper's.
"""

from __future__ import annotations

ORDER = 80          # after the accelerator top (70)
TOKENS = 16
QUICK_TOKENS = 6
TITLE = "Decoding on the RTL: end-to-end co-simulation"


def _plot(res: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from speqmoe.benches.cosim import MODES

    m = res["modes"]
    x = np.arange(len(MODES))
    fig, (ax_c, ax_b) = plt.subplots(1, 2, figsize=(8, 3.3))
    ax_c.bar(x - 0.2, [m[k]["cycles_per_token"] for k in MODES], 0.4, color="#c0392b",
             label="RTL (Verilator, measured)")
    ax_c.bar(x + 0.2, [m[k]["model_cycles_per_token"] for k in MODES], 0.4, color="#888888",
             label="cycle model (calibrated on plain)")
    ax_c.set_xticks(x, MODES)
    ax_c.set_ylim(0, 1.35 * max(max(m[k]["cycles_per_token"], m[k]["model_cycles_per_token"])
                                for k in MODES))
    ax_c.set_ylabel("clock cycles per decoded byte")
    ax_c.legend(fontsize=7)
    ax_c.set_title("cycles per token", fontsize=9)
    parts = (("dense", "dense weights"), ("expert_fills", "expert fills"),
             ("expert_slots", "expert slot reads (on chip)"))
    bottom = np.zeros(len(MODES))
    for key, label in parts:
        v = np.array([m[k]["bytes_per_token"][key] / 1024 for k in MODES])
        ax_b.bar(x, v, 0.5, bottom=bottom, label=label)
        bottom += v
    ax_b.set_xticks(x, MODES)
    ax_b.set_ylim(0, 1.35 * max(bottom))
    ax_b.set_ylabel("KiB per decoded byte")
    ax_b.legend(fontsize=7)
    ax_b.set_title("weight bytes per token (RTL counters)", fontsize=9)
    p = res["params"]
    fig.suptitle(f"tiny MoE LM on a {p['rows']}x{p['cols']} top, {p['slots']} expert slots, "
                 f"{p['latency']} cycles read latency, one {p['bus_bits']}-bit line per cycle",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(ctx):
    import json

    from sim.runner import simulator_missing
    from speqmoe.benches.cosim import MODES, PROMPT, measure, values
    from speqmoe.demo import DemoSection

    reason = simulator_missing("verilator")
    if reason:
        return DemoSection(TITLE, f"Skipped: {reason}.", [f"cosim: skipped ({reason})"],
                           {"skipped": reason}, ok=False)
    tokens = QUICK_TOKENS if ctx.quick else TOKENS
    try:
        res = measure(ctx.build_dir / "cosim", ctx.progress, tokens=tokens)
    except AssertionError as exc:
        msg = str(exc).splitlines()[0]
        return DemoSection(TITLE, f"**Co-simulation FAILED**: {msg}", [f"cosim: FAILED ({msg})"],
                           {"error": msg}, ok=False)
    v = values(res)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    plot = ctx.out_dir / "cosim.png"
    _plot(res, plot)
    (ctx.out_dir / "cosim.json").write_text(json.dumps(res, indent=2) + "\n")
    m, p = res["modes"], res["params"]
    ok = v["cosim_identical_to_golden"] == 1.0 and v["cosim_counters_match"] == 1.0
    rows = []
    for k in MODES:
        r = m[k]
        rows.append(
            f"| {k} | `{r['text']!r}` | {'yes' if r['identical_to_golden'] else '**NO**'} | "
            f"{r['cycles_per_token']:.0f} | {r['model_cycles_per_token']:.0f} | "
            f"{v[f'cosim_model_error_{k}']:.3f} | {r['bytes_per_token']['dense'] / 1024:.1f} | "
            f"{r['bytes_per_token']['expert_fills'] / 1024:.1f} | "
            f"{r['cache']['hits']}/{r['cache']['demands']} | "
            f"{'yes' if r['counters_match'] else '**NO**'} |")
    perf_speedup = v["cosim_speq_speedup_perf_model"]
    md = [
        f"The shipped tiny MoE LM decodes {tokens} bytes after the prompt `{PROMPT.decode()!r}` "
        f"with every linear layer on `hw.accel.Accelerator` ({p['rows']}x{p['cols']} PEs, "
        f"{p['bus_bits']}-bit AXI4, {p['slots']} expert slots of {p['expert_bytes']} bytes) in "
        "Verilator, through cocotb (docs/cosim.md). Host memory: `sim.hostmem.AxiMemory` inside "
        f"the simulation, {p['latency']} cycles of read latency, one bus line per cycle (an "
        "**assumption**, not a DRAM measurement). The host runs norms, attention, routing and "
        "the greedy choice in numpy; its register traffic is simulated, its numpy work takes no "
        "simulated time.",
        "",
        "| mode | decoded text | = golden | cycles/token (RTL) | cycle model | model error | "
        "dense KiB/token | expert-fill KiB/token | cache hits | counters = golden |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"**SPEQ speedup, measured in RTL:** {v['cosim_speq_speedup']:.2f}x (plain / SPEQ cycles "
        f"per token, gamma {p['gamma']}). The analytic performance model (`golden.perf.compare`, "
        f"same array, same bandwidth, this run's {res['perf_model']['tokens_per_step']:.2f} "
        f"tokens per verify step, uniform routing, experts streamed every pass) predicts "
        f"{perf_speedup:.2f}x; the SPEQ paper reports 2.07x on dense models. On this MoE the "
        "verify pass of 4 tokens needs the union of their experts (up to 4x the expert work and "
        "fills of one token) and a draft pass still fills whole experts into the cache, so the "
        "speedup of the dense layers is spent on expert traffic. Caching the draft planes of "
        "experts apart from their residual planes, and drafting with the little experts, is "
        "the SPEQ x MoBiLE work still to come.",
        "",
        f"**Cycle model:** `golden.perf.CommandCycleModel` calibrated on the plain run's batches; "
        f"its largest error over the modes is {v['cosim_model_error']:.3f} (goal <= 0.02; SPEQ "
        "and MoBiLE are predictions from their golden decodings, not fitted). Fitted overheads "
        "(cycles each): " + ", ".join(f"{k} {c:.1f}" for k, c in res["cycle_model"].items()) + ".",
        "",
        f"Simulation speed: {v['cosim_tokens_per_min']:.1f} decoded bytes per minute of wall "
        "time in plain mode. Tokens per second at an assumed 1 GHz clock: "
        + ", ".join(f"{k} {m[k]['tokens_per_s']:.0f}" for k in MODES) + ".",
        "",
        f"![cycles and bytes per token]({plot.name})",
        "",
        "*Figure:* left, clock cycles per decoded byte in each mode, measured on the RTL "
        "(red) beside the command-level cycle model calibrated on the plain run (grey, "
        "modelled); right, weight bytes per decoded byte by kind, from the RTL's counters "
        "(measured). The host memory behind both is a model (assumed latency and bandwidth).",
        "",
    ]
    summary = [f"cosim (RTL, {tokens} bytes): cycles/token plain {v['cosim_cycles_per_token_plain']:.0f}, "
               f"SPEQ {v['cosim_cycles_per_token_speq']:.0f}, MoBiLE "
               f"{v['cosim_cycles_per_token_mobile']:.0f}; SPEQ speedup {v['cosim_speq_speedup']:.2f}x "
               f"(model {perf_speedup:.2f}x, paper 2.07x); bytes identical to golden: "
               f"{'yes' if ok else 'NO'}"]
    return DemoSection(TITLE, "\n".join(md), summary, {**v, "details": res}, ok=ok)
