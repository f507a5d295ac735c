"""Bench section ``cache``: the expert-cache controller and its AXI4 read DMA.

* ``dma_efficiency``: bytes delivered / (cycles x bus bytes) over a stream of back-to-back
  demand misses through the whole controller (request, fill, response, release), with no
  memory backpressure (cocotbext-axi ``AxiRamRead``, Verilator); the goal is at least 0.90.
  ``dma_efficiency_engine`` is the same ratio for the DMA alone, fills queued back to back.
* ``cache_sim_cycles_per_s_verilator``: clock cycles per second of wall time of the
  golden-checking lockstep testbench (cocotb + Verilator, Python testbench included).
* ``cache_<config>_{cells,transistors,logic_depth,flip_flops}``: Yosys synthesis of two
  configurations (``speqmoe synth``); experts of two bus words, because generic synthesis
  maps the expert SRAM to flip-flops.
* ``cache_trace_*``: a MoBiLE trace replayed through the RTL in lockstep (identical to the
  golden model, checked): the first tokens of ``<out>/mobile.trace`` recorded by the
  ``mobile`` section when it exists, else the trained tiny LM's trace recorded now.
  ``cache_trace_hit_rate``: hits / (hits + misses); ``cache_trace_bus_efficiency``: R data
  beats / cycles with a burst open (AR handshake to last R beat), counted by the testbench's
  AXI monitor, with the memory model idling R in 20 % of the cycles (so at most 0.8).
"""

from __future__ import annotations

from pathlib import Path

from golden.seed import base_seed

SYNTH_DESIGNS = ("expert_cache_w64_s4", "expert_cache_w128_s16")
MISSES = 64
LOCKSTEP_OPS = 400
TRACE_TOKENS = 16


def run(ctx) -> dict:
    from sim.cache_flow import CACHE_CONFIGS, run_cache_cocotb
    from sim.runner import run_cocotb, simulator_missing, write_verilog
    from speqmoe.commands.synth import synth_designs
    from speqmoe.config import Config

    out: dict = {}
    build = Path("build/bench")
    reason = simulator_missing("verilator")
    if reason:
        ctx.progress(f"verilator missing: {reason}; simulation figures omitted")
    else:
        cfg = CACHE_CONFIGS["demo"]
        ctx.progress(f"controller on Verilator: {MISSES} misses, {LOCKSTEP_OPS} lockstep ops, "
                     f"{TRACE_TOKENS}-token MoBiLE trace ...")
        recorded = Path(ctx.out_dir) / "mobile.trace"
        result, stats = run_cache_cocotb("verilator", cfg, build / "cache_demo", seed=base_seed(),
                                         ops=LOCKSTEP_OPS, trace=TRACE_TOKENS, misses=MISSES,
                                         trace_file=recorded if recorded.is_file() else None)
        m, ls, tr = stats["misses"], stats["lockstep"], stats["trace"]
        out.update({
            "dma_efficiency": m["efficiency"],
            "cache_sim_cycles_per_s_verilator": ls["cycles"] / ls["seconds"],
            "cache_trace_demands": tr["rtl"]["demands"],
            "cache_trace_hits": tr["rtl"]["hits"],
            "cache_trace_misses": tr["rtl"]["misses"],
            "cache_trace_bytes_read": tr["rtl"]["bytes_read"],
            "cache_trace_cycles": tr["cycles"],
            "cache_trace_hit_rate": tr["rtl"]["hits"] / max(1, tr["rtl"]["hits"] + tr["rtl"]["misses"]),
            "cache_trace_bus_efficiency": tr["bus"]["beats"] / max(1, tr["bus"]["busy_cycles"]),
        })
        ctx.progress("DMA engine alone on Verilator ...")
        from hw.dma import AxiReadDma
        dma_dir = (build / "dma_64").resolve()
        stats_path = dma_dir / "efficiency.json"
        dma = AxiReadDma(data_width=64, max_burst=16, outstanding=4, max_beats=512,
                         mem_addr_width=13)
        v = write_verilog(dma, "axi_read_dma", dma_dir / "axi_read_dma.v")
        run_cocotb(simulator="verilator", verilog_path=v, toplevel="axi_read_dma",
                   test_module="sim.tb_dma", build_dir=dma_dir,
                   testcase="dma_efficiency_without_backpressure",
                   extra_env={"DMA_MAX_BURST": "16", "DMA_STATS": str(stats_path),
                              "SPEQMOE_SEED": str(base_seed())})
        import json
        out["dma_efficiency_engine"] = json.loads(stats_path.read_text())["efficiency"]
    summary = synth_designs(list(SYNTH_DESIGNS), Config(), Path("build/synth"), ctx.progress)
    for name in SYNTH_DESIGNS:
        r = summary[name]
        key = name.replace("expert_cache_", "cache_")
        for field in ("cells", "transistors", "logic_depth", "flip_flops"):
            out[f"{key}_{field}"] = r[field]
    return out
