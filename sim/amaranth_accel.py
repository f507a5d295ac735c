"""The accelerator top in the Amaranth simulator, driven like the cocotb testbench.

:func:`simulate_accel` pushes commands through the AXI-Lite registers (the shared
:class:`sim.amaranth_axi.AxiLiteMasterDriver`), serves the AXI4 master with the shared
:class:`~sim.amaranth_axi.AxiReadSlave` / :class:`~sim.amaranth_axi.AxiWriteSlave` on one
byte array, waits for each command to finish and calls ``check(i, cmd, regs)`` with the
registers read after it. Much slower than Verilator, but every signal is at hand: unit tests
of the top's sequencing use it with a few commands.
"""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from hw.accel import register_map
from sim.amaranth_axi import AxiLiteMasterDriver, AxiReadSlave, AxiWriteSlave, step

REGS = {r.name: r.offset for r in register_map().registers}
STATUS_REGS = ("CMD_DONE", "ERR_COUNT", "ERR_LAST", "ERR_LAST_INDEX", "RESP", "RESP_INDEX",
               "BYTES_DENSE", "BYTES_SLOT", "BYTES_FILL", "BYTES_ACTS", "BYTES_WRITTEN",
               "MACS_LO", "BUSY_CYCLES", "CACHE_HITS", "CACHE_MISSES")


def simulate_accel(accel, mem: bytearray, commands, *, check=None, seed: int = 0,
                   latency: int = 4, idle: float = 0.0, bad_reads=(), bad_writes=(),
                   expert_base: int = 0, max_cycles: int = 200_000, vcd: str | None = None):
    """Run ``commands`` (objects with ``encode()``) one at a time on ``accel``."""
    rng = np.random.default_rng(seed)
    rd = AxiReadSlave(accel.m_axi, mem, rng=rng, latency=latency, ar_idle=idle, r_idle=idle,
                      bad_ranges=bad_reads)
    wr = AxiWriteSlave(accel.m_axi, mem, rng=rng, aw_idle=idle, w_idle=idle, b_idle=idle,
                       bad_ranges=bad_writes)
    lite = AxiLiteMasterDriver(accel.s_axil)
    models = (rd, wr, lite)

    async def until_done(ctx):
        cycles = 0
        while not lite.done:
            await step(ctx, *models)
            cycles += 1
            if cycles > max_cycles:
                raise AssertionError("AXI-Lite transaction never completed")

    async def read(ctx, name):
        lite.read(REGS[name])
        await until_done(ctx)
        return lite.reads[-1][1]

    async def bench(ctx):
        lite.write(REGS["EXPERT_BASE"], expert_base)
        await until_done(ctx)
        for i, cmd in enumerate(commands):
            for w, word in enumerate(cmd.encode()):
                lite.write(REGS[f"CMD{w}"], word)
            lite.write(REGS["CMD_PUSH"], 1)
            await until_done(ctx)
            for _ in range(max_cycles // 16):
                if await read(ctx, "CMD_DONE") > i:
                    break
                for _ in range(16):
                    await step(ctx, *models)
            else:
                raise AssertionError(f"command {i} {cmd} never finished")
            regs = {name: await read(ctx, name) for name in STATUS_REGS}
            if check is not None:
                check(i, cmd, regs)

    sim = Simulator(accel)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
