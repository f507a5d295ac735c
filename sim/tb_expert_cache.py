"""cocotb testbench of the generated expert-cache controller against the golden model.

Host memory is cocotbext-axi's ``AxiRamRead`` holding random bytes (so every expert's
bytes are distinct), with random idle cycles on R. Configuration arrives through the
environment: the ``CACHE_*`` variables of :class:`sim.cache_flow.CacheConfig`, and

``CACHE_OPS``       lockstep operations
``CACHE_BAD``       experts whose fills fail, ``layer:expert,...`` (one word of each
                    returns SLVERR)
``CACHE_R_IDLE``    probability of an idle R cycle
``CACHE_STATS``     optional JSON file for cycles and wall time
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
from sim.cache_flow import CacheConfig, CacheDriver, host_pattern, run_lockstep


class CocotbPorts:
    def __init__(self, dut):
        self.dut = dut
        self.started = False

    async def cycle(self, inputs):
        if self.started:
            await RisingEdge(self.dut.clk)
        self.started = True
        for name, v in inputs.items():
            getattr(self.dut, name).value = v
        await ReadOnly()

    def get(self, name):
        return int(getattr(self.dut, name).value)


def _bad_experts():
    text = os.environ.get("CACHE_BAD", "")
    return [tuple(int(x) for x in item.split(":")) for item in text.split(",") if item]


async def _setup(dut, cfg, seed):
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
    return host


@cocotb.test()
async def lockstep_matches_golden(dut):
    cfg = CacheConfig.from_env(os.environ)
    seed = derived_seed(f"tb_expert_cache/lockstep/{cfg}")
    dut._log.info("SPEQMOE_SEED=%d (stimulus seed %d) %s", base_seed(), seed, cfg)
    host = await _setup(dut, cfg, seed)
    drv = CacheDriver(CocotbPorts(dut), cfg, host, np.random.default_rng(seed))
    start = time.perf_counter()
    model = await run_lockstep(drv, int(os.environ.get("CACHE_OPS", "300")),
                               bad_experts=_bad_experts())
    seconds = time.perf_counter() - start
    stats = {"cycles": drv.cycles, "seconds": seconds, **model.counters.as_dict()}
    dut._log.info("stats %s", stats)
    if os.environ.get("CACHE_STATS"):
        with open(os.environ["CACHE_STATS"], "w") as f:
            json.dump(stats, f)
