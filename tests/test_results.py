"""Result writer (hw.results): tile buffer layout, token-major writes of golden PE-array
results over AXI4 in the Amaranth simulator against sim.amaranth_axi.AxiWriteSlave."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from golden import pe_array
from golden.bsfp import encode
from golden.fp import fp32_to_fp16
from hw.results import ResultWriter, TileBuffer
from sim.amaranth_axi import AxiWriteSlave
from sim.array_flow import random_layer
from sim.pe_stimulus import FP16_EDGES

MEM = 1 << 16


@dataclass
class Cmd:
    mode: str
    fp16: bool
    n: int
    tokens: int
    out_addr: int
    stride: int
    beats: np.ndarray         # (tiles * P, 4) uint32, as the array emits them
    values: np.ndarray        # (tokens, N) uint32 results, token-major (matmul)

    @property
    def payload(self):
        return dict(draft=int(self.mode == "draft"), fp16=int(self.fp16), n=self.n,
                    tokens=self.tokens, out_addr=self.out_addr, out_stride=self.stride)

    def expect(self, mem: bytearray) -> int:
        """Write the expected outputs into *mem*; return the bytes written."""
        out = fp32_to_fp16(self.values) if self.fp16 else self.values
        for t, row in enumerate(out):
            raw = row.astype("<u2" if self.fp16 else "<u4").tobytes()
            a = self.out_addr + t * self.stride
            mem[a:a + len(raw)] = raw
        return out.size * out.itemsize


def make_cmd(rng, mode, fp16, n, tokens, out_addr, stride, rows, cols, k=8,
             interleave=1) -> Cmd:
    w = encode(random_layer(rng, n, k, edges=True))
    shape = (k,) if mode == "draft" else (tokens, k)
    acts = rng.normal(size=shape).astype(np.float16)
    pick = rng.random(shape) < 0.05
    acts[pick] = FP16_EDGES[rng.integers(0, FP16_EDGES.size, int(pick.sum()))].view(np.float16)
    beats = pe_array.result_beats(mode, w, acts, rows, cols, interleave)
    values = pe_array.matmul(mode, w, acts).view(np.uint32).reshape(-1, n)
    if mode == "draft":
        tokens = int(rng.integers(1, 5))       # ignored by the writer
    return Cmd(mode, fp16, n, tokens, out_addr, stride, beats, values)


@dataclass
class Run:
    done: list = field(default_factory=list)
    cycles: int = 0
    waits: int = 0               # cycles a result beat was offered and not taken
    bursts: list = field(default_factory=list)
    bytes_written: int = 0       # the DUT's counter
    slave_bytes: int = 0


def simulate(dut, mem, cmds, *, rng, aw_idle=0.0, w_idle=0.0, b_idle=0.0, latency=0,
             gap=0.0, done_stall=0.0, tile_period=None, bad_ranges=(),
             max_cycles=50_000) -> Run:
    """Run *cmds* through the writer. Result beats are offered in order with random gaps
    (``gap``), or, with ``tile_period = K``, as the array emits them: tile ``i``'s ``P``
    beats from cycle ``i K`` of the command on, never earlier than the previous beat's
    handshake + 1."""
    slave = AxiWriteSlave(dut.m_axi, mem, rng=rng, latency=latency, aw_idle=aw_idle,
                          w_idle=w_idle, b_idle=b_idle, bad_ranges=bad_ranges)
    p = dut.pes
    run = Run()

    async def bench(ctx):
        cycle = 0
        for c in cmds:
            offered, start, bi = True, None, 0
            on = False
            while True:
                assert cycle < max_cycles, f"timeout, {bi} beats taken"
                ctx.set(dut.cmd.valid, offered)
                ctx.set(dut.cmd.payload, c.payload)
                if not on and bi < len(c.beats) and start is not None:
                    if tile_period is None:
                        on = rng.random() >= gap
                    else:
                        on = cycle >= start + (bi // p) * tile_period + bi % p
                ctx.set(dut.results.valid, on)
                if on:
                    ctx.set(dut.results.payload.data, [int(x) for x in c.beats[bi]])
                    ctx.set(dut.results.payload.last, bi % p == p - 1)
                done_ready = rng.random() >= done_stall
                ctx.set(dut.done.ready, done_ready)
                slave.drive(ctx)
                slave.sample(ctx)
                if offered and ctx.get(dut.cmd.ready):
                    offered, start = False, cycle + 1
                if on:
                    if ctx.get(dut.results.ready):
                        on, bi = False, bi + 1
                    else:
                        run.waits += 1
                finished = done_ready and ctx.get(dut.done.valid)
                if finished:
                    assert bi == len(c.beats), "done before every result beat was taken"
                    assert slave.idle, "done before every B response"
                    run.done.append(bool(ctx.get(dut.done.payload.error)))
                await ctx.tick()
                cycle += 1
                if finished:
                    break
        for _ in range(3):
            ctx.set(dut.cmd.valid, 0)
            ctx.set(dut.results.valid, 0)
            slave.drive(ctx)
            slave.sample(ctx)
            assert not ctx.get(dut.busy) and not ctx.get(dut.m_axi.awvalid)
            assert not ctx.get(dut.m_axi.wvalid) and not ctx.get(dut.done.valid)
            await ctx.tick()
        run.cycles = cycle
        run.bytes_written = ctx.get(dut.bytes_written)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    run.bursts = slave.bursts
    run.slave_bytes = slave.bytes_written
    return run


def _pattern(rng):
    return bytearray(rng.integers(0, 256, MEM, dtype=np.uint8).tobytes())


def _check_memory(got, want):
    if got != want:
        diff = np.flatnonzero(np.frombuffer(got, np.uint8) != np.frombuffer(want, np.uint8))
        raise AssertionError(f"{diff.size} bytes differ, first at {diff[0]:#x}: "
                             f"got {got[diff[0]]:#04x}, want {want[diff[0]]:#04x}")


def _layout(rng, cmds_spec, w, rows, cols, interleave=1):
    """Place commands' outputs one after another, some starting near a 4 KiB boundary."""
    cmds, addr = [], 0x400
    for mode, fp16, n, tokens in cmds_spec:
        e = 2 if fp16 else 4
        span = -(-n * e // w) * w
        stride = span + w * int(rng.integers(0, 4))
        if rng.random() < 0.5:
            addr = (addr // 4096 + 1) * 4096 - w * int(rng.integers(1, 6))
        cmds.append(make_cmd(rng, mode, fp16, n, tokens, addr, stride, rows, cols,
                             interleave=interleave))
        addr += 4 * stride + w * int(rng.integers(1, 8))
    assert addr < MEM
    return cmds


# --- construction ------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    dict(rows=1, cols=1), dict(rows=3, cols=2), dict(rows=-1, cols=4), dict(rows=2, cols="2"),
    dict(rows=2, cols=2, n_max=0), dict(rows=2, cols=2, addr_width=70),
    dict(rows=2, cols=2, max_burst=0), dict(rows=2, cols=2, max_burst=300)])
def test_result_writer_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        ResultWriter(**kwargs)


def test_result_writer_bus_is_one_line_of_p_halfwords():
    dut = ResultWriter(rows=4, cols=4, n_max=100)
    assert (dut.pes, dut.bus_bytes, len(dut.m_axi.wdata), len(dut.m_axi.wstrb)) == (16, 32, 256, 32)
    with pytest.raises(AttributeError):
        dut.max_burst = 2
    Fragment.get(dut, None)


# --- tile buffer -------------------------------------------------------------------------

@pytest.mark.parametrize("draft,fp16", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_tile_buffer_lines_are_the_runs_of_the_tile(draft, fp16, rng):
    p = 8
    dut = TileBuffer(pes=p)
    beats = rng.integers(0, 1 << 32, (p, 4), dtype=np.uint64).astype(np.uint32)
    beats[0, 0], beats[1, 1] = 0x7F800001, 0xFFC00000       # NaNs
    vals = fp32_to_fp16(beats).astype(np.uint32) if fp16 else beats
    # verify: run of token t is (row 0..P-1, token t); draft: rows 4p + j in order.
    flat = vals.reshape(-1) if draft else vals.T.reshape(-1)
    raw = flat.astype("<u2" if fp16 else "<u4").tobytes()
    lines = [int.from_bytes(raw[l * 2 * p:(l + 1) * 2 * p], "little")
             for l in range(len(raw) // (2 * p))]

    async def bench(ctx):
        ctx.set(dut.draft, draft)
        ctx.set(dut.fp16, fp16)
        for i in range(p):
            ctx.set(dut.shift, 1)
            ctx.set(dut.beat, [int(x) for x in beats[i]])
            await ctx.tick()
        ctx.set(dut.shift, 0)
        ctx.set(dut.beat, [0] * 4)
        await ctx.tick()
        got = []
        for l in range(len(lines)):
            ctx.set(dut.line, l)
            got.append(ctx.get(dut.data))
        assert got == lines

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# --- golden results into host memory -------------------------------------------------

@pytest.mark.parametrize("rows,cols,max_burst,interleave", [(2, 2, 16, 1), (4, 4, 3, 1),
                                                           (2, 2, 16, 4), (4, 4, 3, 2)])
@pytest.mark.parametrize("mode", ["verify", "draft"])
def test_result_writer_writes_golden_results_token_major_and_nothing_else(
        rows, cols, max_burst, interleave, mode, rng):
    # With an interleave G the padding tiles' beats (up to a multiple of G) follow the real
    # tiles' and are dropped.
    p, w = rows * cols, 2 * rows * cols
    dut = ResultWriter(rows=rows, cols=cols, n_max=256, max_burst=max_burst,
                       interleave=interleave)
    unit = 4 * p if mode == "draft" else p
    spec = []
    for fp16 in (False, True):
        for tokens in (1, 2, 3, 4):
            n = int(rng.integers(1, 3 * unit + 1))
            if tokens == 4:
                n = 2 * unit + int(rng.integers(1, unit))     # not a multiple of P / 4P
            spec.append((mode, fp16, n, tokens))
    cmds = _layout(rng, spec, w, rows, cols, interleave)
    mem = _pattern(rng)
    want = bytearray(mem)
    total = sum(c.expect(want) for c in cmds)
    run = simulate(dut, mem, cmds, rng=rng, aw_idle=0.3, w_idle=0.3, b_idle=0.3, latency=2,
                   gap=0.3, done_stall=0.3)
    assert run.done == [False] * len(cmds)
    _check_memory(mem, want)
    assert run.bytes_written == run.slave_bytes == total
    assert all(1 <= beats <= max_burst for _, _, beats in run.bursts)


def test_result_writer_zero_rows_completes_without_a_write(rng):
    dut = ResultWriter(rows=2, cols=2, n_max=64)
    c = make_cmd(rng, "verify", False, 5, 2, 0x100, 0x40, 2, 2)
    empty = Cmd("verify", False, 0, 2, 0x100, 0x40, c.beats[:0], c.values[:, :0])
    mem = _pattern(rng)
    want = bytearray(mem)
    c.expect(want)
    run = simulate(dut, mem, [empty, c], rng=rng, gap=0.2)
    assert run.done == [False, False]
    _check_memory(mem, want)


def test_result_writer_reports_bresp_error_and_next_command_is_fine(rng):
    rows = cols = 2
    dut = ResultWriter(rows=rows, cols=cols, n_max=128, max_burst=4)
    cmds = [make_cmd(rng, "verify", False, 40, 3, 0x1000, 0x200, rows, cols),
            make_cmd(rng, "draft", True, 50, 1, 0x2000, 0x200, rows, cols)]
    bad = (0x1200 + 8 * 5, 0x1200 + 8 * 5 + 1)      # one beat of token 1's output
    mem = _pattern(rng)
    want = bytearray(mem)
    for c in cmds:
        c.expect(want)
    want[bad[0]:bad[0] + 8] = mem[bad[0]:bad[0] + 8]  # the slave drops that beat
    run = simulate(dut, mem, cmds, rng=rng, w_idle=0.2, b_idle=0.4, latency=3,
                   bad_ranges=[bad])
    assert run.done == [True, False]
    _check_memory(mem, want)      # every other write of the failing command was made


# --- throughput --------------------------------------------------------------------------

@pytest.mark.parametrize("rows,cols", [(2, 2), (4, 4)])
@pytest.mark.parametrize("slack", [16, 8])
def test_result_writer_takes_every_tile_as_the_array_emits_it(rows, cols, slack, rng):
    # Tiles every K = P + slack cycles, a slave that never pauses, outputs straddling 4 KiB
    # boundaries (more bursts): no result beat ever waits, so the array never stalls.
    p, w = rows * cols, 2 * rows * cols
    dut = ResultWriter(rows=rows, cols=cols, n_max=256, max_burst=16)
    cmds = []
    for i, (mode, fp16) in enumerate([("verify", False), ("verify", True), ("draft", False),
                                      ("draft", True)]):
        n = (5 if mode == "verify" else 3) * (4 * p if mode == "draft" else p) - 1
        addr = 0x1000 * (4 * i + 1) - w
        cmds.append(make_cmd(rng, mode, fp16, n, 4, addr, 0x1000 - w, rows, cols))
    mem = _pattern(rng)
    want = bytearray(mem)
    for c in cmds:
        c.expect(want)
    run = simulate(dut, mem, cmds, rng=rng, tile_period=p + slack)
    assert run.waits == 0
    assert run.done == [False] * len(cmds)
    _check_memory(mem, want)


@pytest.mark.parametrize("add_stages", [0, 3])
def test_result_writer_never_blocks_the_pe_array_for_k_of_p_plus_8(rng, add_stages):
    # The real PEArray feeding the writer back to back, K = P + 8, a slave that never
    # pauses: the array's blocked_cycles counter stays 0 in both modes and formats, also
    # with pipelined PEs (4 interleaved tiles, padding tiles dropped).
    from amaranth.hdl import Elaboratable, Module
    from amaranth.lib import wiring

    from hw.array import PEArray
    from hw.pe import PeMode
    from sim.array_flow import make_job

    rows = cols = 2
    p, w = rows * cols, 2 * rows * cols
    k = p + 8
    array = PEArray(rows, cols, mul_stages=add_stages, add_stages=add_stages)
    writer = ResultWriter(rows=rows, cols=cols, n_max=64, interleave=add_stages + 1)

    class Top(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            m.submodules.array, m.submodules.writer = array, writer
            wiring.connect(m, array.results, writer.results)
            return m

    jobs, cmds = [], []
    for i, (mode, fp16, n) in enumerate([("verify", False, 4 * p - 1), ("draft", True, 12 * p),
                                         ("verify", True, 3 * p), ("draft", False, 9 * p)]):
        enc = encode(random_layer(rng, n, k, edges=True))
        acts = rng.normal(size=(k,) if mode == "draft" else (4, k)).astype(np.float16)
        jobs.append(make_job(mode, enc, acts, rows, cols, mul_stages=add_stages,
                             add_stages=add_stages))
        values = pe_array.matmul(mode, enc, acts).view(np.uint32).reshape(-1, n)
        cmds.append(Cmd(mode, fp16, n, 4, 0x1000 * (4 * i + 1) - 3 * w, 0x200, None, values))
    mem = _pattern(rng)
    want = bytearray(mem)
    for c in cmds:
        c.expect(want)
    slave = AxiWriteSlave(writer.m_axi, mem, rng=rng)
    done = []

    async def bench(ctx):
        ctx.set(writer.done.ready, 1)
        for job, c in zip(jobs, cmds):
            mode = PeMode.DRAFT if job.mode == "draft" else PeMode.VERIFY
            ctx.set(array.config.payload.mode, mode)
            for d in range(8):
                ctx.set(array.config.payload.base[d], int(job.base[d]))
                ctx.set(array.config.payload.lut[d], int(job.lut[d]))
            ctx.set(array.config.valid, 1)
            ctx.set(writer.cmd.payload, c.payload)
            ctx.set(writer.cmd.valid, 1)
            slave.drive(ctx)
            slave.sample(ctx)
            assert ctx.get(writer.cmd.ready) and ctx.get(array.config.ready)
            await ctx.tick()
            ctx.set(array.config.valid, 0)
            ctx.set(writer.cmd.valid, 0)
            bi = 0
            while True:
                on = bi < job.beats
                ctx.set(array.weights.valid, on)
                ctx.set(array.acts.valid, on)
                if on:
                    ctx.set(array.weights.payload.words, [int(x) for x in job.words[bi]])
                    ctx.set(array.weights.payload.last, bool(job.last[bi]))
                    ctx.set(array.acts.payload, [int(x) for x in job.acts[bi]])
                slave.drive(ctx)
                slave.sample(ctx)
                if on and ctx.get(array.weights.ready):
                    bi += 1
                finished = ctx.get(writer.done.valid)
                if finished:
                    done.append(bool(ctx.get(writer.done.payload.error)))
                await ctx.tick()
                if finished:
                    break
        assert ctx.get(array.blocked_cycles) == 0
        assert ctx.get(array.busy_cycles) == sum(j.beats for j in jobs)

    sim = Simulator(Top())
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert done == [False] * len(jobs)
    _check_memory(mem, want)
