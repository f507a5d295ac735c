"""Demo section ``cache``: a MoBiLE request trace through the expert-cache controller RTL."""

from __future__ import annotations

ORDER = 60

TRACE_TOKENS = 16
MISSES = 32


def windows(timeline: list) -> list[dict]:
    """Per decode step of a replayed trace (the testbench's cumulative ``timeline``): demands
    served, hit rate (hits / (hits + misses), ``None`` without demands) and bus efficiency
    (R beats / cycles with a burst open, ``None`` without a burst)."""
    out, prev = [], {"hits": 0, "misses": 0, "beats": 0, "bus_busy_cycles": 0, "cycles": 0}
    for t in timeline:
        hits, misses = t["hits"] - prev["hits"], t["misses"] - prev["misses"]
        beats, busy = t["beats"] - prev["beats"], t["bus_busy_cycles"] - prev["bus_busy_cycles"]
        out.append({"step": t["step"], "served": hits + misses,
                    "hit_rate": hits / (hits + misses) if hits + misses else None,
                    "beats": beats, "bus_busy_cycles": busy, "cycles": t["cycles"] - prev["cycles"],
                    "bus_efficiency": beats / busy if busy else None})
        prev = t
    return out


def _plot(win: list, overall: dict, r_idle: float, path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = [w["step"] for w in win]
    nan = lambda v: np.nan if v is None else v     # noqa: E731
    fig, (ax_h, ax_b) = plt.subplots(1, 2, figsize=(8, 3.2))
    ax_h.plot(steps, [nan(w["hit_rate"]) for w in win], "o-", color="#1f4e99", ms=3,
              label="per decode step (RTL counters)")
    ax_h.axhline(overall["hit_rate"], color="k", ls=":", lw=0.9,
                 label=f"whole trace {overall['hit_rate']:.3f}")
    ax_h.set_xlabel("decode step of the trace (token)")
    ax_h.set_ylabel("hit rate (hits / demands)")
    ax_h.set_ylim(0, 1.25)
    ax_h.legend(fontsize=7, loc="upper left")
    ax_h.set_title("expert-cache hit rate", fontsize=9)
    ax_b.plot(steps, [nan(w["bus_efficiency"]) for w in win], "s-", color="#c0392b", ms=3,
              label="per decode step (RTL, AXI monitor)")
    ax_b.axhline(overall["bus_efficiency"], color="k", ls=":", lw=0.9,
                 label=f"whole trace {overall['bus_efficiency']:.3f}")
    ax_b.axhline(1 - r_idle, color="#888888", ls="--", lw=0.9,
                 label=f"memory model's limit {1 - r_idle:.2f} (assumed)")
    ax_b.set_xlabel("decode step of the trace (token)")
    ax_b.set_ylabel("R beats / cycles with a burst open")
    ax_b.set_ylim(0, 1.25)
    ax_b.legend(fontsize=7, loc="upper left")
    ax_b.set_title("AXI4 read bus efficiency of the fills", fontsize=9)
    from matplotlib.ticker import MaxNLocator
    for ax in (ax_h, ax_b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(ctx):
    from sim.cache_flow import CACHE_CONFIGS, run_cache_cocotb
    from sim.runner import simulator_missing
    from speqmoe import designs
    from speqmoe.config import Config
    from speqmoe.demo import DemoSection

    cfg = CACHE_CONFIGS["demo"]
    seed = ctx.config.sim.seed if ctx.config is not None else None
    if seed is None:
        from golden.seed import base_seed
        seed = base_seed()
    tokens = 8 if ctx.quick else TRACE_TOKENS
    # The trace `speqmoe bench` recorded (the mobile section), else one recorded now.
    recorded = ctx.build_dir / "bench" / "mobile.trace"
    trace_file = recorded if recorded.is_file() else None
    origin = (f"the first {tokens} tokens of the recorded trace `{recorded}`" if trace_file
              else f"the trace of the trained tiny LM over {tokens} held-out tokens")
    vdir = ctx.build_dir / "verilog"
    ctx.progress("generating the controller's Verilog ...")
    v = designs.write("expert_cache_demo", ctx.config or Config(), vdir)
    reason = simulator_missing("verilator")
    if reason:
        return DemoSection(title="Expert-cache DMA controller (MoBiLE offloading)",
                           markdown=f"Verilog: `{v.name}`. Simulation skipped: {reason}.",
                           summary=[f"expert cache: simulation skipped ({reason})"], ok=False)
    ctx.progress(f"simulating on Verilator: MoBiLE requests, {origin}, then {MISSES} "
                 "back-to-back misses ...")
    result, stats = run_cache_cocotb("verilator", cfg, ctx.build_dir / "demo" / "cache_sim",
                                     seed=seed, ops=0, trace=tokens, trace_file=trace_file,
                                     misses=MISSES)
    ok = result.failed == 0 and "trace" in stats and "misses" in stats
    tr, ms = stats.get("trace", {}), stats.get("misses", {})
    rtl, gold = tr.get("rtl", {}), tr.get("golden", {})
    same = all(rtl.get(k) == gold.get(k) for k in ("hits", "misses", "prefetches_issued",
                                                     "prefetches_useful", "evictions",
                                                     "bytes_read"))
    ok = ok and same
    served = rtl.get("hits", 0) + rtl.get("misses", 0)
    hit_rate = rtl.get("hits", 0) / served if served else 0.0
    verdict = "identical to the golden model" if same else "DIFFERS from the golden model"
    bus = tr.get("bus", {})
    bus_eff = bus["beats"] / bus["busy_cycles"] if bus.get("busy_cycles") else 0.0
    win = windows(tr.get("timeline", []))
    figure_md = []
    if win:
        plot = ctx.out_dir / "cache_trace.png"
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        _plot(win, {"hit_rate": hit_rate, "bus_efficiency": bus_eff}, bus.get("r_idle", 0.2),
              plot, f"MoBiLE trace on the controller RTL: {cfg.slots} slots, {cfg.policy.upper()}, "
              f"{cfg.data_width}-bit AXI4")
        figure_md = [
            "",
            f"**Over the trace** (measured): hit rate and bus efficiency per decode step. Hit "
            f"rate: hits / (hits + misses) of the demands of that step, from the controller's "
            f"counters (the golden model's are identical, checked after every request). Bus "
            f"efficiency: R data beats / cycles in which a burst was open (from its AR handshake "
            f"to its last R beat), counted by an AXI monitor in the testbench; steps without a "
            f"fill have none. Over the whole trace: {bus.get('beats', 0)} beats in "
            f"{bus.get('busy_cycles', 0)} cycles, **{bus_eff:.3f}**. The memory model is an "
            f"**assumption**: cocotbext-axi `AxiRamRead` idles the R channel in "
            f"{bus.get('r_idle', 0.2):.0%} of the cycles (seeded), so fills average at most about "
            f"{1 - bus.get('r_idle', 0.2):.2f}; the back-to-back miss run below has no idle cycles.",
            "",
            f"![hit rate and bus efficiency over the trace]({plot.name})",
            "",
            "*Figure:* left, hit rate per decode step and over the whole trace; right, R beats "
            "per cycle with a burst open per step, over the whole trace, and the limit the "
            "memory model's idle cycles set. Measured on Verilator.",
        ]
    md = [
        f"Configuration: {cfg.slots} slots of {cfg.expert_bytes} bytes, {cfg.n_layers} layers x "
        f"{cfg.n_experts} experts, {cfg.data_width}-bit AXI4, bursts of up to {cfg.max_burst} "
        f"beats, policy {cfg.policy}, prefetch queue {cfg.queue_depth}, host base address "
        f"{cfg.base_addr:#x} (not 4 KiB-aligned). Verilog: `{v.name}` (in `{vdir}`).",
        "",
        f"**Trace replay** (measured, Verilator via cocotb, host memory cocotbext-axi `AxiRamRead` "
        f"with 20 % idle R cycles): MoBiLE requests, {origin} ({tr.get('records', 0)} requests "
        f"and releases), in lockstep; "
        f"every response and every counter is {verdict}, and every missed expert's bytes were "
        f"read back through the memory read port.",
        "",
        "| | RTL | golden |",
        "|---|---|---|",
        *[f"| {k} | {rtl.get(k)} | {gold.get(k)} |"
          for k in ("demands", "hits", "misses", "prefetches_issued", "prefetches_dropped",
                    "prefetches_useful", "evictions", "bytes_read")],
        "",
        f"Hit rate {hit_rate:.3f}; {tr.get('cycles', 0)} cycles.",
        *figure_md,
        "",
        f"**Bus efficiency** (measured): {ms.get('misses', 0)} back-to-back demand misses with no "
        f"memory backpressure delivered {ms.get('bytes', 0)} bytes in {ms.get('cycles', 0)} "
        f"cycles: {ms.get('efficiency', 0.0):.3f} of the {cfg.data_width}-bit bus (goal >= 0.90).",
    ]
    summary = [
        f"expert cache: {tokens}-token MoBiLE trace, {rtl.get('hits', 0)} hits / "
        f"{rtl.get('misses', 0)} misses, {rtl.get('bytes_read', 0)} bytes read, {verdict}",
        f"expert cache DMA efficiency {ms.get('efficiency', 0.0):.3f} (goal >= 0.90)",
    ]
    figures = {"trace": tr, "misses": ms, "config": cfg.to_env(), "trace_hit_rate": hit_rate,
               "trace_bus_efficiency": bus_eff, "trace_windows": win}
    return DemoSection(title="Expert-cache DMA controller (MoBiLE offloading)",
                       markdown="\n".join(md), summary=summary, figures=figures, ok=ok)
