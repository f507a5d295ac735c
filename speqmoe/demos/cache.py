"""Demo section ``cache``: a MoBiLE request trace through the expert-cache controller RTL."""

from __future__ import annotations

ORDER = 60

TRACE_TOKENS = 16
MISSES = 32


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
    figures = {"trace": tr, "misses": ms, "config": cfg.to_env()}
    return DemoSection(title="Expert-cache DMA controller (MoBiLE offloading)",
                       markdown="\n".join(md), summary=summary, figures=figures, ok=ok)
