"""A cycle-level AXI4 read slave for the Amaranth simulator (DMA unit tests).

:func:`simulate_dma` runs :class:`hw.dma.AxiReadDma` on a list of fills against a byte
array standing in for host memory, with random idle cycles on AR and R and random
``done`` backpressure, and returns the on-chip memory it wrote, the bursts it issued, the
``done`` beats and the cycle count.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from amaranth.sim import Simulator


@dataclass
class DmaRun:
    memory: dict[int, int]        # on-chip word address -> word
    bursts: list[tuple[int, int]]  # (araddr, beats)
    done: list[bool]               # error flag per fill, in completion order
    cycles: int
    max_in_flight: int = 0         # bursts accepted on AR whose last beat had not arrived


def simulate_dma(dma, host: bytes, fills, *, seed: int, ar_idle: float = 0.0,
                 r_idle: float = 0.0, done_stall: float = 0.0,
                 bad_ranges=(), max_cycles: int = 200_000) -> DmaRun:
    """Run ``fills`` (``(addr, beats, dest)``) through ``dma`` against ``host``.

    A beat whose address lies in one of ``bad_ranges`` (``(start, end)`` byte ranges)
    returns ``RRESP`` SLVERR.
    """
    rng = np.random.default_rng(seed)
    bus_bytes = dma.bus_bytes
    axi = dma.m_axi
    run = DmaRun(memory={}, bursts=[], done=[], cycles=0)

    def beat(addr):
        word = int.from_bytes(host[addr:addr + bus_bytes], "little")
        bad = any(lo <= addr < hi for lo, hi in bad_ranges)
        return word, 2 if bad else 0

    async def bench(ctx):
        ar_queue = deque()
        r_beats = deque()     # (data, resp, last) of bursts being returned
        cmd_i = 0
        cycles = 0
        in_flight = 0
        while len(run.done) < len(fills):
            cycles += 1
            if cycles > max_cycles:
                raise AssertionError(f"DMA timeout after {cycles} cycles, {len(run.done)} fills done")
            # Inputs for this cycle.
            if cmd_i < len(fills):
                a, n, d = fills[cmd_i]
                ctx.set(dma.cmd.valid, 1)
                ctx.set(dma.cmd.payload, {"addr": a, "beats": n, "dest": d})
            else:
                ctx.set(dma.cmd.valid, 0)
            ctx.set(axi.arready, int(len(ar_queue) < 4 and rng.random() >= ar_idle))
            if not r_beats and ar_queue:
                addr, n = ar_queue.popleft()
                for i in range(n):
                    word, resp = beat(addr + i * bus_bytes)
                    r_beats.append((word, resp, int(i == n - 1)))
            r_offer = bool(r_beats) and rng.random() >= r_idle
            ctx.set(axi.rvalid, int(r_offer))
            if r_offer:
                word, resp, last = r_beats[0]
                ctx.set(axi.rdata, word)
                ctx.set(axi.rresp, resp)
                ctx.set(axi.rlast, last)
            ctx.set(dma.done.ready, int(rng.random() >= done_stall))
            # Handshakes (settled combinational outputs).
            if ctx.get(dma.cmd.valid) and ctx.get(dma.cmd.ready):
                cmd_i += 1
            if ctx.get(axi.arvalid) and ctx.get(axi.arready):
                burst = (ctx.get(axi.araddr), ctx.get(axi.arlen) + 1)
                assert ctx.get(axi.arburst) == 1 and 1 << ctx.get(axi.arsize) == bus_bytes
                run.bursts.append(burst)
                ar_queue.append(burst)
                in_flight += 1
                run.max_in_flight = max(run.max_in_flight, in_flight)
            if r_offer and ctx.get(axi.rready):
                if r_beats.popleft()[2]:
                    in_flight -= 1
            if ctx.get(dma.wr.en):
                run.memory[ctx.get(dma.wr.addr)] = ctx.get(dma.wr.data)
            if ctx.get(dma.done.valid) and ctx.get(dma.done.ready):
                run.done.append(bool(ctx.get(dma.done.payload.error)))
            await ctx.tick()
        run.cycles = cycles

    sim = Simulator(dma)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return run
