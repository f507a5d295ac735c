"""cocotb testbench of :class:`sim.hostmem.AxiMemory` and its :class:`sim.hostmem.Backdoor`.

The top (built by ``tests/test_hostmem.py``) holds the memory as submodule ``mem`` and passes
its slave port through as ``s__*``, as the co-simulation top does. cocotbext-axi's
``AxiMaster`` drives the port while the back door loads, writes and reads the array; every
operation is mirrored on a ``bytearray`` and the two must agree.

Configuration arrives through the environment (set by :func:`sim.runner.run_cocotb`):

``HOSTMEM_OPS``     random AXI and back-door operations
``HOSTMEM_STATS``   optional path of a JSON file for the back door's measured speeds
``SPEQMOE_SEED``    the run's seed (printed; rerun with it to reproduce)
"""

from __future__ import annotations

import json
import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiMaster

from golden.seed import base_seed, derived_seed
from sim.hostmem import DECERR, Backdoor


async def _start(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


def _rate(n, seconds):
    return n / seconds if seconds > 0 else float("inf")


@cocotb.test()
async def axi_and_back_door_agree_with_a_byte_mirror(dut):
    seed = derived_seed(f"tb_hostmem/{len(dut.s__rdata)}")
    dut._log.info("SPEQMOE_SEED=%d (stimulus seed %d)", base_seed(), seed)
    rng = np.random.default_rng(seed)
    line = len(dut.s__rdata) // 8
    # The master drives the bus before reset ends: an input left floating (Z) in Icarus
    # would leave X in the read path's counters.
    axi = AxiMaster(AxiBus.from_prefix(dut, "s", bus_separator="__"), dut.clk, dut.rst)
    await _start(dut)
    bd = Backdoor.find(dut, line)
    size = bd.size

    # Bulk load: random data with zero stretches, as a weight image has.
    image = bytearray(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    for _ in range(8):
        at, n = int(rng.integers(0, size - 4096)), int(rng.integers(1, 4096))
        image[at:at + n] = bytes(n)
    start = time.perf_counter()
    bd.load(image)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    back = bd.read(0, size)
    read_s = time.perf_counter() - start
    assert back == image, "back-door read after load differs"
    mirror = bytearray(image)
    await RisingEdge(dut.clk)

    # Two partial writes to one line in the same time step both land.
    a = 5 * line + 1
    bd.write(a, b"\xaa\xbb")
    bd.write(a + 3, b"\xcc")
    mirror[a:a + 2], mirror[a + 3] = b"\xaa\xbb", 0xCC
    assert bd.read(5 * line, line) == mirror[5 * line:6 * line]

    ops = int(os.environ.get("HOSTMEM_OPS", "60"))
    for k in range(ops):
        n = int(rng.integers(1, 3 * line + 200))
        addr = int(rng.integers(0, size - n))
        kind = rng.integers(0, 4)
        if kind == 0:      # AXI write, seen by the back door
            data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            resp = await axi.write(addr, data)
            assert resp.resp == 0, (k, addr, n, resp)
            mirror[addr:addr + n] = data
            await RisingEdge(dut.clk)
            assert bd.read(addr, n) == data, f"op {k}: back door misses AXI write at {addr:#x}+{n}"
        elif kind == 1:    # back-door write, seen by AXI
            data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            bd.write(addr, data)
            mirror[addr:addr + n] = data
            await RisingEdge(dut.clk)
            got = (await axi.read(addr, n)).data
            assert got == data, f"op {k}: AXI misses back-door write at {addr:#x}+{n}"
        else:              # AXI read of anything
            got = await axi.read(addr, n)
            assert got.resp == 0 and got.data == mirror[addr:addr + n], \
                f"op {k}: AXI read at {addr:#x}+{n} differs from the mirror"
    assert bd.read(0, size) == mirror

    # A burst past the end answers DECERR and the memory keeps serving.
    got = await axi.read(size - line, 2 * line)
    assert got.resp == DECERR, got
    got = await axi.read(size - 2 * line, 2 * line)
    assert got.resp == 0 and got.data == mirror[size - 2 * line:]

    lines = size // line
    start = time.perf_counter()
    bd.load(image)
    load2_s = time.perf_counter() - start
    stats = {"line_bytes": line, "lines": lines,
             "write_lines_per_s": round(_rate(lines, min(load_s, load2_s))),
             "read_lines_per_s": round(_rate(lines, read_s)),
             "handle": bd.handle._path}
    dut._log.info("back door %s", stats)
    if os.environ.get("HOSTMEM_STATS"):
        with open(os.environ["HOSTMEM_STATS"], "w") as f:
            json.dump(stats, f)
