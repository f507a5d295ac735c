"""Amaranth-simulator runs of :class:`hw.dma.AxiReadDma` against :class:`sim.amaranth_axi.AxiReadSlave`.

:func:`simulate_dma` runs the DMA on a list of fills against a byte array standing in for
host memory, with random idle cycles on AR and R and random ``done`` backpressure, and
returns the on-chip memory it wrote, the bursts it issued, the ``done`` beats and the
cycle count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.sim import Simulator

from sim.amaranth_axi import AxiReadSlave


@dataclass
class DmaRun:
    memory: dict[int, int]        # on-chip word address -> word
    bursts: list[tuple[int, int]]  # (araddr, beats)
    done: list[bool]               # error flag per fill, in completion order
    cycles: int
    max_in_flight: int = 0         # bursts accepted on AR whose last beat had not arrived


class _DmaDriver:
    """Feeds the fills into ``cmd``, stalls ``done`` at random, records memory writes."""

    def __init__(self, dma, fills, rng, done_stall, run):
        self.dma, self.fills, self.rng, self.done_stall, self.run = dma, fills, rng, done_stall, run
        self.cmd_i = 0

    def drive(self, ctx):
        dma = self.dma
        if self.cmd_i < len(self.fills):
            a, n, d = self.fills[self.cmd_i]
            ctx.set(dma.cmd.valid, 1)
            ctx.set(dma.cmd.payload, {"addr": a, "beats": n, "dest": d})
        else:
            ctx.set(dma.cmd.valid, 0)
        ctx.set(dma.done.ready, int(self.rng.random() >= self.done_stall))

    def sample(self, ctx):
        dma = self.dma
        if ctx.get(dma.cmd.valid) and ctx.get(dma.cmd.ready):
            self.cmd_i += 1
        if ctx.get(dma.wr.en):
            self.run.memory[ctx.get(dma.wr.addr)] = ctx.get(dma.wr.data)
        if ctx.get(dma.done.valid) and ctx.get(dma.done.ready):
            self.run.done.append(bool(ctx.get(dma.done.payload.error)))


def simulate_dma(dma, host: bytes, fills, *, seed: int, ar_idle: float = 0.0,
                 r_idle: float = 0.0, done_stall: float = 0.0,
                 bad_ranges=(), max_cycles: int = 200_000, latency: int = 0) -> DmaRun:
    """Run ``fills`` (``(addr, beats, dest)``) through ``dma`` against ``host``.

    A beat touching one of ``bad_ranges`` (``(start, end)`` byte ranges) returns ``RRESP``
    SLVERR. The slave answers an AR ``latency`` cycles after the cycle following its
    acceptance and keeps up to 8 bursts in flight.
    """
    rng = np.random.default_rng(seed)
    run = DmaRun(memory={}, bursts=[], done=[], cycles=0)
    slave = AxiReadSlave(dma.m_axi, host, rng=rng, latency=latency, ar_idle=ar_idle,
                         r_idle=r_idle, bad_ranges=bad_ranges)
    driver = _DmaDriver(dma, fills, rng, done_stall, run)

    async def bench(ctx):
        cycles = 0
        while len(run.done) < len(fills):
            cycles += 1
            if cycles > max_cycles:
                raise AssertionError(f"DMA timeout after {cycles} cycles, {len(run.done)} fills done")
            for x in (slave, driver):
                x.drive(ctx)
            for x in (slave, driver):
                x.sample(ctx)
            await ctx.tick()
        run.cycles = cycles

    sim = Simulator(dma)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    run.bursts = [(a, n) for _, a, n in slave.bursts]
    run.max_in_flight = slave.max_in_flight
    return run
