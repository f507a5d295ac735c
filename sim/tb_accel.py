"""cocotb testbench of the accelerator top against golden.accel.AccelModel.

Host memory is cocotbext-axi's AXI RAM (read and write halves sharing one byte array), with
SLVERR answered on the program's poisoned ranges and random pauses on AR, R, AW, W and B;
the registers are driven by cocotbext-axi's AXI-Lite master. Configuration arrives through
the environment (:func:`sim.accel_flow.run_accel_cocotb`):

``ACCEL_PARAMS``    the accelerator's parameters (JSON of :class:`sim.accel_program.AccelParams`)
``ACCEL_COMMANDS``  commands of the random program
``ACCEL_PAUSES``    probability of a pause cycle on each AXI channel
``ACCEL_STATS``     folder; each test writes ``<test>.json`` there
``ACCEL_BENCH``     ``N,K``: the utilisation test's matrix (0 skips it)
``SPEQMOE_SEED``    the run's seed (printed; rerun with it to reproduce)
"""

from __future__ import annotations

import json
import logging
import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRamRead, AxiRamWrite

from golden import bsfp
from golden.accel import (CAUSE_NAMES, AccelModel, Fence, LoadActs, Matmul, Prefetch,
                          SetTables, tensor_layout)
from golden.seed import base_seed, derived_seed
from hw.accel import CACHE_COUNTERS, register_map
from sim.accel_flow import params_from_env
from sim.accel_program import EXPERT_BASE, MEM_BYTES, directed_program, random_program
from sim.cosim import expected_counters

REGS = {r.name: r.offset for r in register_map().registers}


class FaultyRead(AxiRamRead):
    bad = ()

    async def _read(self, address, length):
        if any(lo <= address < hi for lo, hi in self.bad):
            raise OSError(f"injected read error at {address:#x}")
        return await super()._read(address, length)


class FaultyWrite(AxiRamWrite):
    bad = ()

    async def _write(self, address, data):
        if any(lo <= address < hi for lo, hi in self.bad):
            raise OSError(f"injected write error at {address:#x}")
        return await super()._write(address, data)


def _pauses(rng, p):
    while True:
        yield bool(rng.random() < p)


class Host:
    """The accelerator's environment: clock, reset, host memory and the register master."""

    def __init__(self, dut, mem: bytearray, *, bad_reads=(), bad_writes=(), pauses=0.0, seed=0):
        self.dut = dut
        self.mem = mem
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        bus = AxiBus.from_prefix(dut, "m_axi", bus_separator="__")
        self.rd = FaultyRead(bus.read, dut.clk, dut.rst, mem=mem)
        self.wr = FaultyWrite(bus.write, dut.clk, dut.rst, mem=mem)
        self.rd.bad, self.wr.bad = list(bad_reads), list(bad_writes)
        if pauses:
            rng = np.random.default_rng(seed)
            for ch in (self.rd.ar_channel, self.rd.r_channel, self.wr.aw_channel,
                       self.wr.w_channel, self.wr.b_channel):
                ch.set_pause_generator(_pauses(np.random.default_rng(rng.integers(1 << 30)),
                                               pauses))
        self.csr = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"),
                                 dut.clk, dut.rst)
        for log in (self.rd.log, self.wr.log, self.csr.write_if.log, self.csr.read_if.log):
            log.setLevel(logging.WARNING)      # cocotbext-axi logs every transfer at INFO
        self.pushed = 0

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    async def read(self, name: str) -> int:
        return int.from_bytes((await self.csr.read(REGS[name], 4)).data, "little")

    async def write(self, name: str, value: int) -> None:
        await self.csr.write(REGS[name], int(value).to_bytes(4, "little"))

    async def push(self, cmd) -> None:
        for i, word in enumerate(cmd.encode()):
            await self.write(f"CMD{i}", word)
        await self.write("CMD_PUSH", 1)
        self.pushed += 1

    async def wait_done(self, count: int, timeout: int = 2_000_000) -> int:
        start = cocotb.utils.get_sim_time("ns")
        while True:
            done = await self.read("CMD_DONE")
            if done >= count:
                return done
            if cocotb.utils.get_sim_time("ns") - start > timeout * 10:
                raise AssertionError(f"timeout: {done} of {count} commands done")
            await ClockCycles(self.dut.clk, 8)

    async def counters(self) -> dict[str, int]:
        out = {"cmds_done": await self.read("CMD_DONE"), "errors": await self.read("ERR_COUNT")}
        for name in ("BYTES_DENSE", "BYTES_SLOT", "BYTES_FILL", "BYTES_ACTS", "BYTES_WRITTEN",
                     "BUSY_CYCLES", "MEM_STALL_CYCLES", "WB_STALL_CYCLES"):
            out[name.lower()] = await self.read(name)
        out["macs"] = await self.read("MACS_LO") | await self.read("MACS_HI") << 32
        for name in CACHE_COUNTERS:
            out[f"cache_{name}"] = await self.read(f"CACHE_{name.upper()}")
        return out


UNSETTLED = ("bytes_fill", "cache_errors")      # still growing while a prefetch fill runs


async def check_command(host: Host, model: AccelModel, cmd, i: int, *,
                        settled: bool = True) -> dict:
    """Run ``cmd`` on the RTL and the model and compare everything; returns cycle figures.

    ``settled`` false: a prefetch fill may still be running, so the counters it moves are
    only bounded by the model's (the next FENCE settles them).
    """
    before = await host.read("BUSY_CYCLES")
    await host.push(cmd)
    await host.wait_done(model.counters["cmds_done"] + 1)
    outcome = model.run(cmd)
    where = f"command {i} (index {outcome.index}) {cmd!r}"
    last = await host.read("ERR_LAST")
    if outcome.cause is None:
        assert await host.read("ERR_COUNT") == model.counters["errors"], \
            f"{where}: the RTL reported error {CAUSE_NAMES.get(last & 15)}"
    else:
        idx = await host.read("ERR_LAST_INDEX")
        got = CAUSE_NAMES.get(last & 15)
        assert (got, idx) == (outcome.cause, outcome.index), \
            f"{where}: expected error {outcome.cause}, RTL says {got} at index {idx}"
    if outcome.resp is not None:
        resp = await host.read("RESP")
        got = (resp & 0xFF, bool(resp >> 8 & 1), bool(resp >> 9 & 1))
        assert got == outcome.resp, f"{where}: response {got}, expected {outcome.resp}"
        assert await host.read("RESP_INDEX") == outcome.index
    for lo, hi in outcome.undefined:
        model.mem[lo:hi] = host.mem[lo:hi]
    if host.mem != model.mem:
        a = np.frombuffer(bytes(host.mem), np.uint8)
        b = np.frombuffer(bytes(model.mem), np.uint8)
        diff = np.flatnonzero(a != b)
        raise AssertionError(f"{where}: host memory differs from the golden model at "
                             f"{diff.size} bytes, first {int(diff[0]):#x}: RTL "
                             f"{bytes(a[diff[0]:diff[0] + 8]).hex()} expected "
                             f"{bytes(b[diff[0]:diff[0] + 8]).hex()}")
    got = await host.counters()
    want = expected_counters(model)
    bad = {k: (got[k], v) for k, v in want.items()
           if got[k] != v and (settled or k not in UNSETTLED or got[k] > v)}
    assert not bad, f"{where}: counters (RTL, golden) differ: {bad}"
    busy = got["busy_cycles"] - before
    if outcome.ok:
        assert busy >= model.min_cycles(cmd), f"{where}: {busy} busy cycles, below the bound"
    return {"busy": busy, "counters": got, "cause": outcome.cause}


def _seed(name: str) -> int:
    seed = derived_seed(f"tb_accel::{name}")
    cocotb.log.info("SPEQMOE_SEED=%d (derived seed %d)", base_seed(), seed)
    return seed


def _write_stats(name: str, stats: dict) -> None:
    folder = os.environ.get("ACCEL_STATS")
    if folder:
        with open(os.path.join(folder, f"{name}.json"), "w") as f:
            json.dump(stats, f)


@cocotb.test()
async def random_program_matches_golden_model(dut):
    """Random programs: every result, response, error and counter equals the golden model."""
    params = params_from_env()
    n = int(os.environ.get("ACCEL_COMMANDS", "100"))
    if n == 0:
        return
    seed = _seed("random_program")
    prog = random_program(params, np.random.default_rng(seed), n)
    t0 = time.perf_counter()
    causes = {}
    for r in await run_program(dut, prog, seed):
        causes[r["cause"] or "ok"] = causes.get(r["cause"] or "ok", 0) + 1
    cocotb.log.info("%d commands in %.1f s: %s", len(prog.commands), time.perf_counter() - t0,
                    causes)
    _write_stats("random_program", {"commands": len(prog.commands), "causes": causes})


async def run_program(dut, prog, seed: int) -> list[dict]:
    host = Host(dut, bytearray(prog.mem), bad_reads=prog.bad_read_ranges,
                bad_writes=prog.bad_write_ranges, pauses=float(os.environ.get("ACCEL_PAUSES", 0)),
                seed=seed)
    await host.reset()
    await host.write("EXPERT_BASE", EXPERT_BASE)
    model = prog.model()
    pending = False
    out = []
    for i, cmd in enumerate(prog.commands):
        if isinstance(cmd, (Prefetch, Fence)):
            pending = isinstance(cmd, Prefetch)
        out.append(await check_command(host, model, cmd, i, settled=not pending))
    return out


@cocotb.test()
async def every_malformed_command_and_bus_error_fails_alone(dut):
    """Each malformed command class and each bus error fails with its cause, and the command
    after it succeeds; a draft pass reads exactly a quarter of the bytes of a verify pass of
    the same matrix, from host memory and from an expert slot."""
    seed = _seed("directed")
    prog = directed_program(params_from_env(), np.random.default_rng(seed))
    runs = await run_program(dut, prog, seed)
    causes = {r["cause"] for r in runs} - {None}
    assert causes == {"OPCODE", "DIMS", "ALIGN", "TABLES", "READ", "SLOT", "FILL", "RELEASE",
                      "ACTS", "WRITE", "EXPERT", "FULL"}, causes
    mm = [(cmd, r) for cmd, r in zip(prog.commands, runs) if isinstance(cmd, Matmul)][-4:]
    ratios = {}
    for (verify, rv), (draft, rd), key in ((mm[0], mm[1], "bytes_dense"),
                                           (mm[2], mm[3], "bytes_slot")):
        assert (verify.mode, draft.mode) == ("verify", "draft")
        before = rv["counters"][key]
        v_bytes = before - runs[runs.index(rv) - 1]["counters"][key]
        d_bytes = rd["counters"][key] - before
        assert 4 * d_bytes == v_bytes > 0, (key, d_bytes, v_bytes)
        ratios[key] = d_bytes / v_bytes
    _write_stats("directed", {"causes": sorted(causes), "draft_bytes_ratio": ratios})


@cocotb.test()
async def full_queue_drops_the_command_with_an_overflow_error(dut):
    """Commands pushed while the queue is full are dropped with OVERFLOW; the rest run."""
    params = params_from_env()
    seed = _seed("overflow")
    rng = np.random.default_rng(seed)
    mem = bytearray(MEM_BYTES)
    n, k = params.n_max, params.k_max
    w = bsfp.encode(rng.standard_normal((n, k)).astype(np.float16))
    lay = tensor_layout(w, params.pes, params.interleave)
    mem[0x10000:0x10000 + len(lay.draft)] = lay.draft
    mem[0x20000:0x20000 + len(lay.residual)] = lay.residual
    mem[0x30000:0x30000 + 8 * k] = rng.standard_normal((4, k)).astype(np.float16).tobytes()
    host = Host(dut, mem, seed=seed)
    await host.reset()
    model = params.model(bytearray(mem))
    for cmd in (LoadActs(4, k, 0x30000, 2 * k), SetTables.of(w)):
        await check_command(host, model, cmd, model.index)
    long = Matmul("verify", n, k, 0x10000, 0x20000, 0x40000, 4 * n)
    await host.push(long)
    model.run(long)
    for _ in range(params.cmd_depth + 2):
        await host.push(Fence())
    assert await host.read("CMD_DONE") == 2, "the MATMUL finished before the queue filled"
    for _ in range(params.cmd_depth):
        model.run(Fence())
    for _ in range(2):
        model.drop(Fence())
    await host.wait_done(model.counters["cmds_done"])
    assert await host.read("ERR_COUNT") == 2
    assert CAUSE_NAMES[await host.read("ERR_LAST") & 15] == "OVERFLOW"
    assert await host.read("ERR_LAST_INDEX") == model.index - 1
    assert await host.read("ERR_FIRST_INDEX") == model.index - 2
    assert await host.read("CMD_PUSHED") == model.index
    assert host.mem == model.mem
    await host.write("ERR_CLEAR", 1)
    model.clear_errors()
    assert await host.read("ERR_COUNT") == 0 and await host.read("ERR_FIRST") == 0
    await check_command(host, model, Fence(), model.index)


@cocotb.test()
async def draft_and_verify_utilisation(dut):
    """One verify and one draft MATMUL of an ``ACCEL_BENCH`` matrix, dense and from a slot:
    results checked, bytes read 4:1, cycles and utilisation recorded."""
    spec = os.environ.get("ACCEL_BENCH", "0")
    if spec == "0":
        return
    params = params_from_env()
    n, k = (int(x) for x in spec.split(","))
    seed = _seed("bench")
    rng = np.random.default_rng(seed)
    mem = bytearray(MEM_BYTES * 4)
    w = bsfp.encode((rng.standard_normal((n, k)) * 0.1).astype(np.float16))
    lay = tensor_layout(w, params.pes, params.interleave)
    dense = 0x100000
    mem[dense:dense + len(lay.draft)] = lay.draft
    mem[dense + len(lay.draft):dense + len(lay.draft) + len(lay.residual)] = lay.residual
    acts = 0x300000
    mem[acts:acts + 8 * k] = rng.standard_normal((4, k)).astype(np.float16).tobytes()
    host = Host(dut, mem, seed=seed)
    await host.reset()
    model = params.model(bytearray(mem))
    for cmd in (LoadActs(4, k, acts, 2 * k), SetTables.of(w)):
        await check_command(host, model, cmd, model.index)
    stats = {"n": n, "k": k, "pes": params.pes}
    for mode in ("verify", "draft"):
        cmd = Matmul(mode, n, k, dense, dense + len(lay.draft), 0x200000, 4 * n)
        b0 = await host.read("BYTES_DENSE")
        m0 = await host.read("MACS_LO") | await host.read("MACS_HI") << 32
        s0 = await host.read("MEM_STALL_CYCLES")
        w0 = await host.read("WB_STALL_CYCLES")
        t0 = time.perf_counter()
        done = await check_command(host, model, cmd, model.index)
        wall = time.perf_counter() - t0
        cyc = done["busy"]
        macs = (await host.read("MACS_LO") | await host.read("MACS_HI") << 32) - m0
        stats[mode] = {"cycles": cyc, "macs": macs,
                       "bytes": await host.read("BYTES_DENSE") - b0,
                       "utilization": macs / (4 * params.pes * cyc),
                       "mem_stall_cycles": done["counters"]["mem_stall_cycles"] - s0,
                       "wb_stall_cycles": done["counters"]["wb_stall_cycles"] - w0,
                       "sim_cycles_per_s": cyc / wall}
    stats["draft_bytes_ratio"] = stats["draft"]["bytes"] / stats["verify"]["bytes"]
    assert stats["draft_bytes_ratio"] == 0.25
    cocotb.log.info("utilisation: %s", stats)
    _write_stats("bench", stats)
