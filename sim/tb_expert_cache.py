"""cocotb testbench of the generated expert-cache controller against the golden model.

Host memory is cocotbext-axi's ``AxiRamRead`` holding random bytes (so every expert's
bytes are distinct), with random idle cycles on R. Configuration arrives through the
environment: the ``CACHE_*`` variables of :class:`sim.cache_flow.CacheConfig`, and

``CACHE_OPS``       lockstep operations
``CACHE_BAD``       experts whose fills fail, ``layer:expert,...`` (one word of each
                    returns SLVERR)
``CACHE_R_IDLE``    probability of an idle R cycle
``CACHE_OVERLAP``   requests of overlapping traffic (0 skips that test)
``CACHE_EVENTS``    requests of event-by-event traffic vs golden (0 skips that test)
``CACHE_TRACE``     tokens of the MoBiLE trace to replay (0 skips that test)
``CACHE_TRACE_FILE`` a recorded trace to take those tokens from (default: record the
                    tiny LM's trace now)
``CACHE_MISSES``    demand misses in a row for the bus-efficiency run (0 skips it)
``CACHE_STATS``     optional folder; each test writes ``<test>.json`` there
``SPEQMOE_SEED``    the run's seed (printed; rerun with it to reproduce)
"""

from __future__ import annotations

import json
import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from cocotbext.axi import AxiRamRead, AxiReadBus

from golden.seed import base_seed, derived_seed
from hw.dma import BOUNDARY
from golden.trace import read_trace
from sim.cache_flow import (CacheConfig, CacheDriver, first_steps, host_pattern, mobile_trace,
                            run_events, run_lockstep, run_overlap, trace_ops)


class CocotbPorts:
    """Ports of the generated controller; inputs are written only when they change."""

    def __init__(self, dut):
        self.dut = dut
        self.started = False
        self.handles = {}
        self.written = {}
        self.clock_edge = RisingEdge(dut.clk)
        self.read_only = ReadOnly()

    def _handle(self, name):
        h = self.handles.get(name)
        if h is None:
            h = self.handles[name] = getattr(self.dut, name)
        return h

    async def cycle(self, inputs):
        if self.started:
            await self.clock_edge
        self.started = True
        for name, v in inputs.items():
            if self.written.get(name) != v:
                self._handle(name).value = v
                self.written[name] = v
        await self.read_only

    def get(self, name):
        return int(self._handle(name).value)


def _write_stats(name, stats):
    folder = os.environ.get("CACHE_STATS")
    if folder:
        with open(os.path.join(folder, f"{name}.json"), "w") as f:
            json.dump(stats, f)


def _bad_experts():
    text = os.environ.get("CACHE_BAD", "")
    return [tuple(int(x) for x in item.split(":")) for item in text.split(",") if item]


async def _setup(dut, cfg, seed, bus=None):
    host = host_pattern(cfg, seed)
    ram = AxiRamRead(AxiReadBus.from_prefix(dut, "m_axi", bus_separator="__"), dut.clk, dut.rst,
                     size=len(host))
    ram.write(0, host)
    bad = [(cfg.address(l, e) + cfg.expert_bytes // 2, cfg.address(l, e) + cfg.expert_bytes // 2 + 1)
           for l, e in _bad_experts()]
    ram_read = ram.read

    async def read(address, length):
        if any(lo < address + length and address < hi for lo, hi in bad):
            raise IOError(f"injected error at {address:#x}")
        return ram_read(address, length)

    ram._read = read
    rng = np.random.default_rng(seed ^ 0xA11)
    r_idle = float(os.environ.get("CACHE_R_IDLE", "0.2"))

    def pause():
        while True:
            yield bool(rng.random() < r_idle)
    if r_idle:
        ram.r_channel.set_pause_generator(pause())
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.req__valid.value = 0
    dut.release__valid.value = 0
    dut.resp__ready.value = 0
    dut.mem__en.value = 0
    dut.base_addr.value = cfg.base_addr
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    violations = []
    cocotb.start_soon(_ar_monitor(dut, cfg, violations, bus))
    return host, violations


async def _ar_monitor(dut, cfg, violations, bus=None):
    """Every AR burst: INCR, full width, within one 4 KiB page, at most max_burst beats.

    ``bus``: a dict whose ``beats`` (R beats transferred) and ``busy`` (cycles with a burst
    open: from its AR handshake to its last R beat, both included) the monitor counts.
    """
    bus_bytes = cfg.data_width // 8
    while True:
        await RisingEdge(dut.clk)
        await ReadOnly()
        ar = bool(dut.m_axi__arvalid.value and dut.m_axi__arready.value)
        if bus is not None:
            r = bool(dut.m_axi__rvalid.value and dut.m_axi__rready.value)
            if ar or bus["open"]:
                bus["busy"] += 1
            bus["beats"] += r
            bus["open"] += int(ar) - int(r and bool(dut.m_axi__rlast.value))
        if ar:
            addr = int(dut.m_axi__araddr.value)
            beats = int(dut.m_axi__arlen.value) + 1
            if addr // BOUNDARY != (addr + beats * bus_bytes - 1) // BOUNDARY:
                violations.append(f"burst {addr:#x}+{beats} beats crosses 4 KiB")
            if beats > cfg.max_burst:
                violations.append(f"burst {addr:#x} of {beats} beats > max_burst {cfg.max_burst}")
            if addr % bus_bytes or int(dut.m_axi__arburst.value) != 1 or \
                    1 << int(dut.m_axi__arsize.value) != bus_bytes:
                violations.append(f"burst {addr:#x}: unaligned or not INCR of the bus width")


@cocotb.test(skip=os.environ.get("CACHE_OPS", "300") == "0")
async def lockstep_matches_golden(dut):
    cfg = CacheConfig.from_env(os.environ)
    seed = derived_seed(f"tb_expert_cache/lockstep/{cfg}")
    dut._log.info("SPEQMOE_SEED=%d (stimulus seed %d) %s", base_seed(), seed, cfg)
    host, violations = await _setup(dut, cfg, seed)
    drv = CacheDriver(CocotbPorts(dut), cfg, host, np.random.default_rng(seed))
    start = time.perf_counter()
    model = await run_lockstep(drv, int(os.environ.get("CACHE_OPS", "300")),
                               bad_experts=_bad_experts())
    seconds = time.perf_counter() - start
    assert not violations, violations[:5]
    stats = {"cycles": drv.cycles, "seconds": seconds, **model.counters.as_dict()}
    dut._log.info("stats %s", stats)
    _write_stats("lockstep", stats)


@cocotb.test(skip=os.environ.get("CACHE_OVERLAP", "0") == "0")
async def overlapping_traffic_keeps_invariants(dut):
    cfg = CacheConfig.from_env(os.environ)
    seed = derived_seed(f"tb_expert_cache/overlap/{cfg}")
    dut._log.info("SPEQMOE_SEED=%d (stimulus seed %d) %s", base_seed(), seed, cfg)
    host, violations = await _setup(dut, cfg, seed)
    drv = CacheDriver(CocotbPorts(dut), cfg, host, np.random.default_rng(seed))
    stats = await run_overlap(drv, int(os.environ["CACHE_OVERLAP"]), bad_experts=_bad_experts())
    dut._log.info("overlap stats %s", stats)
    _write_stats("overlap", stats)
    assert not violations, violations[:5]
    assert stats["hits_in_flight"] > 0 and stats["prefetches_useful"] > 0, stats


@cocotb.test(skip=os.environ.get("CACHE_EVENTS", "0") == "0")
async def events_match_golden(dut):
    """Hit under miss: every cycle's acceptance, responses, hits_in_flight and
    demand_stall_cycles against the golden model in deferred mode."""
    cfg = CacheConfig.from_env(os.environ)
    seed = derived_seed(f"tb_expert_cache/events/{cfg}")
    dut._log.info("SPEQMOE_SEED=%d (stimulus seed %d) %s", base_seed(), seed, cfg)
    host, violations = await _setup(dut, cfg, seed)
    drv = CacheDriver(CocotbPorts(dut), cfg, host, np.random.default_rng(seed))
    stats = await run_events(drv, int(os.environ["CACHE_EVENTS"]), bad_experts=_bad_experts())
    dut._log.info("event stats %s", stats)
    _write_stats("events", stats)
    assert not violations, violations[:5]
    assert stats["hits_under_miss"] > 0 and stats["hits_in_flight"] > 0, stats


@cocotb.test(skip=os.environ.get("CACHE_TRACE", "0") == "0")
async def mobile_trace_replays_like_golden(dut):
    cfg = CacheConfig.from_env(os.environ)
    tokens = int(os.environ["CACHE_TRACE"])
    if os.environ.get("CACHE_TRACE_FILE"):
        trace = first_steps(read_trace(os.environ["CACHE_TRACE_FILE"]), tokens)
    else:
        trace = mobile_trace(tokens)
    assert (trace.n_layers, trace.n_experts) == (cfg.n_layers, cfg.n_experts)
    seed = derived_seed(f"tb_expert_cache/trace/{cfg}")
    bus = {"beats": 0, "busy": 0, "open": 0}
    host, violations = await _setup(dut, cfg, seed, bus)
    drv = CacheDriver(CocotbPorts(dut), cfg, host, np.random.default_rng(seed))
    ops = trace_ops(trace)
    steps = [r.step for r in trace.records if r.op in ("D", "P", "R")]
    assert len(steps) == len(ops)
    timeline = []       # cumulative figures at the end of each decode step of the trace

    def after_op(i):
        if i + 1 == len(ops) or steps[i + 1] != steps[i]:
            c = drv.counters()
            timeline.append({"step": steps[i], "ops": i + 1, "cycles": drv.cycles,
                             "demands": c["demands"], "hits": c["hits"], "misses": c["misses"],
                             "bytes_read": c["bytes_read"], "beats": bus["beats"],
                             "bus_busy_cycles": bus["busy"]})

    start = time.perf_counter()
    model = await run_lockstep(drv, len(ops), ops=ops, bad_experts=_bad_experts(),
                               after_op=after_op)
    seconds = time.perf_counter() - start
    c = model.counters
    _write_stats("trace", {"cycles": drv.cycles, "seconds": seconds, "records": len(ops),
                           "tokens": tokens, "file": os.environ.get("CACHE_TRACE_FILE", ""),
                           "rtl": drv.counters(), "golden": c.as_dict(),
                           "bus": {"beats": bus["beats"], "busy_cycles": bus["busy"],
                                   "bus_bytes": cfg.data_width // 8,
                                   "r_idle": float(os.environ.get("CACHE_R_IDLE", "0.2"))},
                           "timeline": timeline})
    dut._log.info("trace: %d demands, %d hits, %d misses, %d prefetches issued, %d useful",
                  c.demands, c.hits, c.misses, c.prefetches_issued, c.prefetches_useful)
    assert c.demands == trace.count("D") and c.hits > 0
    assert not violations, violations[:5]


@cocotb.test(skip=os.environ.get("CACHE_MISSES", "0") == "0")
async def miss_stream_keeps_the_bus_busy(dut):
    """Back-to-back demand misses, no memory backpressure: bytes / (cycles x bus bytes)."""
    cfg = CacheConfig.from_env(os.environ)
    seed = derived_seed(f"tb_expert_cache/misses/{cfg}")
    old = os.environ.get("CACHE_R_IDLE")
    os.environ["CACHE_R_IDLE"] = "0"
    try:
        host, violations = await _setup(dut, cfg, seed)
    finally:
        if old is not None:
            os.environ["CACHE_R_IDLE"] = old
    drv = CacheDriver(CocotbPorts(dut), cfg, host, np.random.default_rng(seed), resp_stall=0.0)
    n = int(os.environ["CACHE_MISSES"])
    tags = [(t // cfg.n_experts, t % cfg.n_experts) for t in range(cfg.n_layers * cfg.n_experts)]
    bad = set(_bad_experts())
    tags = [t for t in tags if t not in bad]
    await drv.cycle()
    start_cycle = drv.cycles
    start = time.perf_counter()
    for k in range(n):
        layer, expert = tags[k % len(tags)]
        r = await drv.request(layer, expert, "demand", k)
        assert not r["hit"] and not r["error"], r
        await drv.release(r["slot"])
    cycles = drv.cycles - start_cycle
    seconds = time.perf_counter() - start
    c = drv.counters()
    bus_bytes = cfg.data_width // 8
    stats = {"misses": n, "bytes": c["bytes_read"], "cycles": cycles, "bus_bytes": bus_bytes,
             "efficiency": c["bytes_read"] / (cycles * bus_bytes), "seconds": seconds}
    dut._log.info("miss stream %s", stats)
    _write_stats("misses", stats)
    assert c["misses"] == n and not violations, (c, violations[:5])
    await drv.check_slot(r["slot"], layer, expert, full=True)
