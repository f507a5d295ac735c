"""cocotb testbench of the generated AXI4 read DMA against cocotbext-axi's ``AxiRamRead``.

Configuration arrives through the environment (set by :func:`sim.runner.run_cocotb`):

``DMA_MAX_BURST``   the DMA's ``max_burst`` (the AR monitor checks it)
``DMA_OUTSTANDING`` the DMA's ``outstanding`` (the monitor checks bursts in flight)
``DMA_FILLS``       random fills in the traffic test
``DMA_EFF_FILLS``   fills in the efficiency run (at most 32)
``DMA_STATS``       optional path of a JSON file for the efficiency run
``SPEQMOE_SEED``    the run's seed (printed; rerun with it to reproduce)

The host memory holds a distinct byte pattern; every fill's words are read back from the
memory write port as they arrive and compared with it. An AR-channel monitor asserts that
no burst crosses a 4 KiB boundary or exceeds ``max_burst`` beats and that the bursts are
exactly the ones :func:`hw.dma.split_bursts` predicts.
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
from hw.dma import BOUNDARY, split_bursts

HOST_BYTES = 1 << 18


class Bench:
    def __init__(self, dut, seed):
        self.dut = dut
        self.rng = np.random.default_rng(seed)
        self.bus_bytes = len(dut.m_axi__rdata) // 8
        self.max_burst = int(os.environ.get("DMA_MAX_BURST", "16"))
        self.outstanding = int(os.environ.get("DMA_OUTSTANDING", "4"))
        self.in_flight = 0
        self.max_in_flight = 0
        self.ram = AxiRamRead(AxiReadBus.from_prefix(dut, "m_axi", bus_separator="__"),
                              dut.clk, dut.rst, size=HOST_BYTES)
        pattern = self.rng.integers(0, 256, HOST_BYTES, dtype=np.uint8).tobytes()
        self.host = pattern
        self.ram.write(0, pattern)
        self.bad_ranges: list[tuple[int, int]] = []
        ram_read = self.ram.read

        async def read(address, length):
            if any(lo < address + length and address < hi for lo, hi in self.bad_ranges):
                raise IOError(f"injected error at {address:#x}")
            return ram_read(address % HOST_BYTES, length)

        self.ram._read = read
        self.bursts: list[tuple[int, int]] = []
        self.memory: dict[int, int] = {}
        self.done: list[bool] = []
        self.violations: list[str] = []
        self.done_stall = 0.0
        self.cycles = 0

    def pause_r(self, idle: float):
        def gen():
            while True:
                yield bool(self.rng.random() < idle)
        if idle:
            self.ram.r_channel.set_pause_generator(gen())
        else:
            self.ram.r_channel.clear_pause_generator()

    async def start(self):
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.rst.value = 1
        dut.cmd__valid.value = 0
        dut.done__ready.value = 0
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        dut = self.dut
        while True:
            await RisingEdge(dut.clk)
            dut.done__ready.value = int(self.rng.random() >= self.done_stall)
            await ReadOnly()
            self.cycles += 1
            if dut.m_axi__arvalid.value and dut.m_axi__arready.value:
                addr = int(dut.m_axi__araddr.value)
                beats = int(dut.m_axi__arlen.value) + 1
                end = addr + beats * self.bus_bytes - 1
                if addr // BOUNDARY != end // BOUNDARY:
                    self.violations.append(f"burst {addr:#x}+{beats} crosses 4 KiB")
                if beats > self.max_burst:
                    self.violations.append(f"burst {addr:#x} of {beats} beats > {self.max_burst}")
                if int(dut.m_axi__arburst.value) != 1 or \
                        1 << int(dut.m_axi__arsize.value) != self.bus_bytes:
                    self.violations.append(f"burst {addr:#x}: not INCR of the full bus width")
                self.bursts.append((addr, beats))
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                if self.in_flight > self.outstanding:
                    self.violations.append(f"{self.in_flight} bursts in flight > {self.outstanding}")
            if dut.m_axi__rvalid.value and dut.m_axi__rready.value and dut.m_axi__rlast.value:
                self.in_flight -= 1
            if dut.wr__en.value:
                self.memory[int(dut.wr__addr.value)] = int(dut.wr__data.value)
            if dut.done__valid.value and dut.done__ready.value:
                self.done.append(bool(int(dut.done__payload.value) & 1))

    def pack_cmd(self, addr, beats, dest):
        beats_w = len(self.dut.cmd__payload) - len(self.dut.wr__addr) - len(self.dut.m_axi__araddr)
        return addr | beats << len(self.dut.m_axi__araddr) | \
            dest << (len(self.dut.m_axi__araddr) + beats_w)

    async def run_fills(self, fills, *, cmd_idle=0.0, timeout=None):
        """Send the fills, wait for every ``done``; returns cycles from first command to last done."""
        dut = self.dut
        first_done = len(self.done)
        start = self.cycles
        limit = timeout or 50 * sum(n for _, n, _ in fills) + 2000
        i = 0
        while len(self.done) - first_done < len(fills):
            await RisingEdge(dut.clk)
            if self.cycles - start > limit:
                raise AssertionError(f"timeout: {len(self.done) - first_done} of {len(fills)} "
                                     f"fills done after {limit} cycles")
            if i < len(fills) and self.rng.random() >= cmd_idle:
                dut.cmd__valid.value = 1
                dut.cmd__payload.value = self.pack_cmd(*fills[i])
            else:
                dut.cmd__valid.value = 0
            await ReadOnly()
            if dut.cmd__valid.value and dut.cmd__ready.value:
                i += 1
        return self.cycles - start

    def check_fills(self, fills, errors=()):
        for k, (addr, beats, dest) in enumerate(fills):
            if k in errors:
                continue
            for j in range(beats):
                a = addr + j * self.bus_bytes
                want = int.from_bytes(self.host[a:a + self.bus_bytes], "little")
                got = self.memory.get(dest + j)
                assert got == want, (f"fill {k} ({addr:#x}, {beats} beats) word {j}: "
                                     f"got {got if got is None else hex(got)}, want {want:#x}")


def _random_fills(rng, n, bus_bytes, dest_words):
    fills = []
    for _ in range(n):
        beats = int(rng.integers(1, 400))
        addr = int(rng.integers(0, (HOST_BYTES - beats * bus_bytes) // bus_bytes)) * bus_bytes
        if rng.random() < 0.4:   # start just below a 4 KiB boundary
            page = int(rng.integers(1, HOST_BYTES // BOUNDARY - 4))
            addr = page * BOUNDARY - bus_bytes * int(rng.integers(1, 12))
        dest = int(rng.integers(0, dest_words - beats))
        fills.append((addr, beats, dest))
    return fills


@cocotb.test()
async def dma_fills_match_axi_ram_with_random_idle(dut):
    seed = derived_seed(f"tb_dma/traffic/{len(dut.m_axi__rdata)}")
    dut._log.info("SPEQMOE_SEED=%d (stimulus seed %d)", base_seed(), seed)
    tb = Bench(dut, seed)
    await tb.start()
    tb.pause_r(0.3)
    tb.done_stall = 0.3
    n = int(os.environ.get("DMA_FILLS", "24"))
    dest_words = 1 << len(dut.wr__addr)
    for k in range(n):
        fills = _random_fills(tb.rng, 1, tb.bus_bytes, dest_words)
        tb.memory.clear()
        before = len(tb.bursts)
        await tb.run_fills(fills, cmd_idle=0.3)
        await RisingEdge(dut.clk)
        assert tb.done[-1] is False, f"fill {fills[0]} reported an error"
        tb.check_fills(fills)
        want = split_bursts(fills[0][0], fills[0][1], bus_bytes=tb.bus_bytes,
                            max_burst=tb.max_burst)
        assert tb.bursts[before:] == want, (fills[0], tb.bursts[before:], want)
    # Overlapping fills into disjoint destinations, back to back.
    fills, dest = [], 0
    for f in _random_fills(tb.rng, 8, tb.bus_bytes, dest_words):
        if dest + f[1] > dest_words:
            break
        fills.append((f[0], f[1], dest))
        dest += f[1]
    tb.memory.clear()
    await tb.run_fills(fills)
    await RisingEdge(dut.clk)
    tb.check_fills(fills)
    assert not tb.violations, tb.violations[:5]


@cocotb.test()
async def dma_reports_read_errors_and_keeps_going(dut):
    seed = derived_seed(f"tb_dma/errors/{len(dut.m_axi__rdata)}")
    tb = Bench(dut, seed)
    await tb.start()
    tb.pause_r(0.2)
    bus = tb.bus_bytes
    fills = [(0x10000 + k * 0x1400 + 0x40, 160, k * 160) for k in range(6)]
    # Fill 1 fails on one word in its middle, fill 4 on its very last word.
    tb.bad_ranges = [(fills[1][0] + 70 * bus, fills[1][0] + 71 * bus),
                     (fills[4][0] + 159 * bus, fills[4][0] + 160 * bus)]
    first = len(tb.done)
    await tb.run_fills(fills)
    await RisingEdge(dut.clk)
    assert tb.done[first:] == [False, True, False, False, True, False], tb.done[first:]
    tb.check_fills(fills, errors={1, 4})
    assert not tb.violations, tb.violations[:5]


@cocotb.test()
async def dma_efficiency_without_backpressure(dut):
    seed = derived_seed(f"tb_dma/efficiency/{len(dut.m_axi__rdata)}")
    tb = Bench(dut, seed)
    await tb.start()
    bus = tb.bus_bytes
    expert = 2560 if bus <= 8 else 5120    # bytes, not a multiple of 4 KiB
    beats = expert // bus
    dest_words = 1 << len(dut.wr__addr)
    n = min(int(os.environ.get("DMA_EFF_FILLS", "32")), dest_words // beats)
    fills = [(0x3040 + k * expert, beats, k * beats) for k in range(n)]
    start = time.perf_counter()
    cycles = await tb.run_fills(fills)
    seconds = time.perf_counter() - start
    await RisingEdge(dut.clk)
    tb.check_fills(fills)
    assert not tb.violations, tb.violations[:5]
    delivered = n * beats * bus
    efficiency = delivered / (cycles * bus)
    stats = {"bytes": delivered, "cycles": cycles, "bus_bytes": bus, "efficiency": efficiency,
             "fills": n, "expert_bytes": expert, "seconds": seconds,
             "max_bursts_in_flight": tb.max_in_flight}
    dut._log.info("efficiency %s", stats)
    if os.environ.get("DMA_STATS"):
        with open(os.environ["DMA_STATS"], "w") as f:
            json.dump(stats, f)
    assert efficiency >= 0.90, stats
    assert tb.max_in_flight >= 2, stats     # several bursts outstanding
