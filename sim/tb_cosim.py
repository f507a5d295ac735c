"""cocotb testbench of the co-simulation: text decoded on the accelerator top.

Each test decodes the runs of ``COSIM_RUNS`` (:class:`sim.cosim_flow.RunSpec`) with
:class:`sim.cosim.Decoder` on the RTL and writes ``run<i>.json`` (decoded bytes, cycles, counters,
passes) and ``run<i>.progress`` (the bytes as they are decoded) into ``COSIM_RESULTS``.
``decode_on_rtl_memory`` runs the RunSpecs whose memory is ``rtl`` on
:class:`sim.hostmem.AxiMemory` (weights loaded once through VPI); ``decode_on_axiram`` the ones
on cocotbext-axi's ``AxiRam`` (random pauses on every AXI channel).

A run with ``lockstep`` runs every command on :class:`golden.accel.AccelModel` too and checks,
per batch of commands, every error, every demand response (slot and hit) and every MATMUL output
bit for bit, and at the end of every pass every counter. Every run then compares its bytes with
:func:`sim.cosim.golden_decode` and, if they differ, names the first differing position and
matrix. Other configuration: ``COSIM_PARAMS``, ``COSIM_MEMORY``, ``COSIM_WEIGHTS``,
``COSIM_CLOCK_NS``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, ReadOnly, RisingEdge

from golden.accel import CAUSE_NAMES, Demand, Matmul, Prefetch
from golden.mobile import MobileConfig
from golden.model import MoeLM, blas_threads
from hw.accel import CACHE_COUNTERS, register_map
from sim.accel_program import AccelParams
from sim.cosim import (CommandWords, CosimError, Decoder, MemoryMap, Timing, expected_counters,
                       first_difference, golden_decode, golden_model)
from sim.cosim_flow import MemoryParams, RunSpec

REGS = {r.name: r.offset for r in register_map().registers}
COUNTER_REGS = ("BYTES_DENSE", "BYTES_SLOT", "BYTES_FILL", "BYTES_ACTS", "BYTES_WRITTEN")
CYCLE_REGS = ("BUSY_CYCLES", "MEM_STALL_CYCLES", "WB_STALL_CYCLES")


class Csr:
    """A lean AXI4-Lite master: one transaction at a time, sampled in the ReadOnly phase (the
    host side of the register file costs a few Python wake-ups per access, not a coroutine per
    channel per cycle)."""

    def __init__(self, dut):
        self.dut, self.clk = dut, dut.clk
        for name in ("awvalid", "wvalid", "bready", "arvalid", "rready"):
            getattr(dut, f"s_axil__{name}").value = 0
        dut.s_axil__wstrb.value = 0xF
        dut.s_axil__awprot.value = 0
        dut.s_axil__arprot.value = 0

    async def write(self, addr: int, value: int) -> None:
        d = self.dut
        d.s_axil__awaddr.value = addr
        d.s_axil__wdata.value = value & 0xFFFFFFFF
        d.s_axil__awvalid.value = 1
        d.s_axil__wvalid.value = 1
        d.s_axil__bready.value = 1
        aw = w = False
        while True:
            await ReadOnly()
            aw_now = not aw and int(d.s_axil__awready.value)
            w_now = not w and int(d.s_axil__wready.value)
            b_now = aw and w and int(d.s_axil__bvalid.value)
            await RisingEdge(self.clk)
            if b_now:
                if int(d.s_axil__bresp.value) != 0:
                    raise CosimError(f"register write at {addr:#x} answered {int(d.s_axil__bresp.value)}")
                d.s_axil__bready.value = 0
                return
            aw, w = aw or aw_now, w or w_now
            if aw_now:
                d.s_axil__awvalid.value = 0
            if w_now:
                d.s_axil__wvalid.value = 0

    async def read(self, addr: int) -> int:
        d = self.dut
        d.s_axil__araddr.value = addr
        d.s_axil__arvalid.value = 1
        d.s_axil__rready.value = 1
        ar = False
        while True:
            await ReadOnly()
            ar_now = not ar and int(d.s_axil__arready.value)
            r_now = ar and int(d.s_axil__rvalid.value)
            data = int(d.s_axil__rdata.value) if r_now else 0
            await RisingEdge(self.clk)
            if r_now:
                d.s_axil__rready.value = 0
                return data
            if ar_now:
                ar = True
                d.s_axil__arvalid.value = 0


class RtlBackend:
    """Runs the decoder's commands on the accelerator (see the module docstring)."""

    def __init__(self, dut, mem, line: int, cmd_depth: int, clock_ns: float,
                 golden=None, timing=None):
        self.dut, self.mem, self.line = dut, mem, line
        self.cmd_depth = cmd_depth
        self.clock_ns = clock_ns
        self.csr = Csr(dut)
        self.golden = golden
        self.pushed = 0
        self.done = 0
        self.errors = 0
        self.words = CommandWords()
        self.labels: dict[int, str] = {}
        self.timing = timing
        self.batches: list[tuple[float, dict, float]] = []
        self.prefetches_issued = 0

    def cycles(self) -> int:
        return int(round(cocotb.utils.get_sim_time("ns") / self.clock_ns))

    async def reg(self, name: str) -> int:
        return await self.csr.read(REGS[name])

    async def write(self, addr: int, data: bytes) -> None:
        self.mem.write(addr, data)
        if self.golden is not None:
            self.golden.mem[addr:addr + len(data)] = data

    async def read(self, addr: int, n: int) -> bytes:
        return self.mem.read(addr, n)

    async def _push(self, cmd) -> None:
        while self.pushed - self.done >= self.cmd_depth:
            self.done = await self.reg("CMD_DONE")
        changes = self.words.changes(cmd)
        for i, word in changes:
            await self.csr.write(REGS[f"CMD{i}"], word)
        await self.csr.write(REGS["CMD_PUSH"], 1)
        self.pushed += 1
        return len(changes) + 1

    async def _wait(self, limit: int = 2_000_000) -> None:
        """Until every pushed command is done; a ``CosimError`` after ``limit`` cycles."""
        start = self.cycles()
        while True:
            self.done = await self.reg("CMD_DONE")
            if self.done >= self.pushed:
                return
            if self.cycles() - start > limit:
                raise CosimError(f"the accelerator did not finish command {self.done} "
                                 f"({self.labels.get(self.done, '?')}) within {limit} cycles")
            if int(self.dut.irq.value):
                await ClockCycles(self.dut.clk, 1)
            else:
                await First(RisingEdge(self.dut.irq), ClockCycles(self.dut.clk, limit))

    async def run(self, commands: list[tuple[object, str]]):
        first = self.pushed
        c0 = self.cycles()
        writes = 0
        for cmd, label in commands:
            self.labels[self.pushed] = label
            writes += await self._push(cmd)
        await self._wait()
        cycles = self.cycles() - c0
        errors = await self.reg("ERR_COUNT")
        if errors != self.errors:
            index = await self.reg("ERR_LAST_INDEX")
            cause = CAUSE_NAMES.get(await self.reg("ERR_LAST") & 15, "?")
            cmd, label = commands[index - first] if 0 <= index - first < len(commands) \
                else (None, self.labels.get(index, "?"))
            raise CosimError(f"{label}: {cmd!r} failed with {cause} on the hardware")
        resp = None
        if isinstance(commands[-1][0], Demand):
            r = await self.reg("RESP")
            resp = (r & 0xFF, bool(r >> 8 & 1))
        if self.timing is not None:
            fills = 0
            if any(isinstance(c, Prefetch) for c, _ in commands):
                issued = await self.reg("CACHE_PREFETCHES_ISSUED")
                fills, self.prefetches_issued = issued - self.prefetches_issued, issued
            base, feats = self.timing.batch([c for c, _ in commands],
                                            [resp[1]] if resp is not None else [], fills, writes)
            self.batches.append((base, feats, float(cycles)))
        if self.golden is not None:
            await self._check(commands, resp)
        for i in range(first, self.pushed):
            self.labels.pop(i, None)
        return resp

    async def _check(self, commands, resp) -> None:
        g = self.golden
        for cmd, label in commands:
            out = g.run(cmd)
            if out.cause is not None:
                raise CosimError(f"{label}: {cmd!r} succeeded on the hardware but fails with "
                                 f"{out.cause} in the golden model")
            if out.resp is not None and isinstance(cmd, Demand) and cmd is commands[-1][0]:
                if resp != out.resp[:2]:
                    raise CosimError(f"{label}: the cache answered (slot, hit) {resp}, the golden "
                                     f"cache {out.resp[:2]}")
            if isinstance(cmd, Matmul):
                rows = 1 if cmd.mode == "draft" else g.acts_tokens
                for t in range(rows):
                    a = cmd.out_addr + t * cmd.out_stride
                    got, want = self.mem.read(a, 4 * cmd.n), bytes(g.mem[a:a + 4 * cmd.n])
                    if got != want:
                        i = next(j for j in range(0, len(got), 4) if got[j:j + 4] != want[j:j + 4])
                        raise CosimError(f"{label}: token {t} row {i // 4} is "
                                         f"{got[i:i + 4][::-1].hex()} on the hardware, "
                                         f"{want[i:i + 4][::-1].hex()} in the golden model")

    async def counters(self) -> dict[str, int]:
        out = {"cmds_done": await self.reg("CMD_DONE"), "errors": await self.reg("ERR_COUNT")}
        for name in COUNTER_REGS + CYCLE_REGS:
            out[name.lower()] = await self.reg(name)
        out["macs"] = await self.reg("MACS_LO") | await self.reg("MACS_HI") << 32
        for name in CACHE_COUNTERS:
            out[f"cache_{name}"] = await self.reg(f"CACHE_{name.upper()}")
        if self.golden is not None:
            want = expected_counters(self.golden)
            bad = {k: (out[k], v) for k, v in want.items() if out[k] != v}
            if bad:
                raise CosimError(f"counters (hardware, golden) differ: {bad}")
        return out


@dataclasses.dataclass
class Setup:
    """The co-simulation's configuration (from the environment) and its host memory map."""
    params: AccelParams
    memory: MemoryParams
    runs: list[RunSpec]
    model: MoeLM
    folder: Path
    clock_ns: float
    mmap: MemoryMap

    @classmethod
    def from_env(cls) -> "Setup":
        params = AccelParams(**json.loads(os.environ["COSIM_PARAMS"]))
        model = MoeLM.load(os.environ["COSIM_WEIGHTS"])
        return cls(params, MemoryParams(**json.loads(os.environ["COSIM_MEMORY"])),
                   [RunSpec(**r) for r in json.loads(os.environ["COSIM_RUNS"])], model,
                   Path(os.environ["COSIM_RESULTS"]),
                   float(os.environ.get("COSIM_CLOCK_NS", "10")),
                   MemoryMap.build(model, params.pes, params.interleave))


async def _reset(dut, ext: int) -> None:
    dut.ext_mem.value = ext
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)


async def _decode(dut, index: int, run: RunSpec, setup: Setup, mem) -> None:
    with blas_threads(1):          # small matmuls; the simulator needs the other core
        await _decode_run(dut, index, run, setup, mem)


async def _decode_run(dut, index: int, run: RunSpec, setup: Setup, mem) -> None:
    params, model, mmap, folder = setup.params, setup.model, setup.mmap, setup.folder
    golden = golden_model(params, mmap) if run.lockstep else None
    backend = RtlBackend(dut, mem, mmap.line, params.cmd_depth, setup.clock_ns, golden,
                         Timing.of(params, setup.memory.latency, setup.memory.bandwidth))
    await backend.csr.write(REGS["EXPERT_BASE"], mmap.expert_base)
    progress = open(folder / f"run{index}.progress", "wb", buffering=0)

    def on_byte(b: int) -> None:
        progress.write(bytes([b]))

    mobile = MobileConfig(tau=run.tau)
    dec = Decoder(model, mmap, backend, run.mode, gamma=run.gamma, mobile=mobile, on_byte=on_byte,
                  record=True)
    prompt = bytes.fromhex(run.prompt)
    cocotb.log.info("run %d: %s, %d bytes after %r (%s memory%s)", index, run.mode, run.tokens,
                    prompt, run.memory, ", lockstep" if run.lockstep else "")
    t0 = time.perf_counter()
    result = await dec.generate(prompt, run.tokens)
    wall = time.perf_counter() - t0
    progress.close()
    want, outputs = golden_decode(model, prompt, run.tokens, run.mode, gamma=run.gamma,
                                  mobile=mobile, record=True)
    where = None if result.bytes == want else first_difference(result.outputs, outputs)
    record = {
        "mode": run.mode, "memory": run.memory, "lockstep": run.lockstep,
        "prompt_hex": prompt.hex(), "bytes_hex": result.bytes.hex(),
        "golden_bytes_hex": want.hex(), "identical": result.bytes == want,
        "first_difference": where,
        "prefill_cycles": result.prefill_cycles, "cycles": result.decode_cycles,
        "cycles_per_token": result.cycles_per_token, "wall_seconds": wall,
        "prefill_seconds": result.prefill_seconds, "decode_seconds": result.decode_seconds,
        "counters": result.counters, "decode_counters": result.decode_counters(),
        "passes": [dataclasses.asdict(p) for p in result.passes],
        "gamma": run.gamma, "tau": run.tau,
        "batches": [[b, f, c] for b, f, c in backend.batches],
    }
    (folder / f"run{index}.json").write_text(json.dumps(record))
    cocotb.log.info("run %d: %r in %.1f s, %.0f cycles per token", index, result.bytes, wall,
                    result.cycles_per_token)
    assert result.bytes == want, (f"run {index} ({run.mode}): decoded {result.bytes!r}, the golden "
                                  f"decoding is {want!r}; first difference: {where}")


@cocotb.test()
async def decode_on_rtl_memory(dut):
    """Decode the ``rtl`` runs with the host memory inside the simulated Verilog."""
    from sim.hostmem import Backdoor

    setup = Setup.from_env()
    mmap = setup.mmap
    cocotb.start_soon(Clock(dut.clk, setup.clock_ns, unit="ns").start())
    mem = Backdoor(dut.hostmem.array.ram.storage, mmap.line)
    await _reset(dut, 0)             # after the simulator's initial blocks (they zero the array)
    t0 = time.perf_counter()
    mem.load(bytes(mmap.image))
    cocotb.log.info("host memory: %d bytes loaded in %.1f s", mmap.size, time.perf_counter() - t0)
    for i, run in enumerate(setup.runs):
        if run.memory != "rtl":
            continue
        await _reset(dut, 0)
        await ClockCycles(dut.clk, 1)
        await _decode(dut, i, run, setup, mem)


@cocotb.test()
async def decode_on_axiram(dut):
    """Decode the ``axiram`` runs on cocotbext-axi's AXI RAM, with random AXI pauses."""
    from cocotbext.axi import AxiBus, AxiRam

    setup = Setup.from_env()
    mmap = setup.mmap
    cocotb.start_soon(Clock(dut.clk, setup.clock_ns, unit="ns").start())
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi", bus_separator="__"), dut.clk, dut.rst,
                 size=mmap.size)              # one model per bus: its coroutines never stop
    ram.read_if.log.setLevel(logging.WARNING)
    ram.write_if.log.setLevel(logging.WARNING)
    channels = (ram.read_if.ar_channel, ram.read_if.r_channel, ram.write_if.aw_channel,
                ram.write_if.w_channel, ram.write_if.b_channel)
    for i, run in enumerate(setup.runs):
        if run.memory != "axiram":
            continue
        ram.write(0, bytes(mmap.image))
        rng = np.random.default_rng(run.seed)
        for ch in channels:
            ch.set_pause_generator(_pauses(np.random.default_rng(rng.integers(1 << 30)),
                                           run.pauses) if run.pauses else None)
        await _reset(dut, 1)
        await _decode(dut, i, run, setup, _RamMemory(ram))


def _pauses(rng, p: float):
    while True:
        yield bool(rng.random() < p)


class _RamMemory:
    def __init__(self, ram):
        self.ram = ram

    def write(self, addr: int, data: bytes) -> None:
        self.ram.write(addr, data)

    def read(self, addr: int, n: int) -> bytes:
        return bytes(self.ram.read(addr, n))
