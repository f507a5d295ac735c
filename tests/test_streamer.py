"""Weight streamer (hw.streamer), Amaranth simulator: the sub-blocks one by one, then whole
passes from host memory (AXI read slave model) and from the slot memory, checked beat for
beat against golden.accel.stream_words."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from amaranth import Fragment, Module, Signal, Value
from amaranth.sim import Simulator

from golden.accel import stream_words, tensor_layout
from golden.bsfp import BsfpTensor
from golden.pe_array import weight_stream
from hw.dma import BOUNDARY
from hw.streamer import (DraftGather, PlaneMerge, QuarterPacker, QuarterSplitter,
                         ResidualGearbox, SlotReader, StreamFetcher, WeightStreamer)
from sim.amaranth_axi import AxiReadSlave


# --- testbench helpers ------------------------------------------------------------------

def _run(dut, bench):
    m = Module()                           # a sync domain even for combinational blocks
    m.submodules.dut = dut
    tick = Signal()
    m.d.sync += tick.eq(~tick)
    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


class Source:
    """Offers ``items`` (ints) on a stream with random idle cycles; holds an offer until taken."""

    def __init__(self, port, items, rng, idle=0.0):
        self.port, self.items, self.rng, self.idle = port, deque(items), rng, idle
        self.offered = False

    def drive(self, ctx):
        self.offered = bool(self.items) and (self.offered or self.rng.random() >= self.idle)
        ctx.set(self.port.valid, self.offered)
        if self.offered:
            ctx.set(Value.cast(self.port.payload), self.items[0])

    def sample(self, ctx):
        if self.offered and ctx.get(self.port.ready):
            self.items.popleft()
            self.offered = False


class Sink:
    """Takes a stream with random stalls; checks that an offer is held until taken."""

    def __init__(self, port, rng, stall=0.0):
        self.port, self.rng, self.stall = port, rng, stall
        self.got = []
        self.held = None

    def drive(self, ctx):
        self.ready = self.rng.random() >= self.stall
        ctx.set(self.port.ready, self.ready)

    def sample(self, ctx):
        valid = ctx.get(self.port.valid)
        payload = ctx.get(Value.cast(self.port.payload)) if valid else None
        assert self.held is None or payload == self.held, "valid dropped or payload changed"
        if valid and self.ready:
            self.got.append(payload)
        self.held = payload if valid and not self.ready else None


async def _loop(ctx, models, done, max_cycles=20_000):
    cycles = 0
    while not done():
        for x in models:
            x.drive(ctx)
        for x in models:
            x.sample(ctx)
        await ctx.tick()
        cycles += 1
        assert cycles < max_cycles, "timeout"
    return cycles


def _ints(rng, bits, n):
    return [int.from_bytes(rng.bytes(-(-bits // 8)), "little") & ((1 << bits) - 1)
            for _ in range(n)]


# --- sub-blocks ---------------------------------------------------------------------------

@pytest.mark.parametrize("pes", [4, 16])
def test_gearbox_cuts_residual_lines_into_12_bit_field_chunks(rng, pes):
    dut = ResidualGearbox(pes=pes)
    lines = _ints(rng, 16 * pes, 30)                       # 40 chunks
    stream = sum(v << (16 * pes * j) for j, v in enumerate(lines))
    want = [(stream >> (12 * pes * b)) & ((1 << 12 * pes) - 1) for b in range(40)]
    src, snk = Source(dut.i, lines, rng, 0.3), Sink(dut.o, rng, 0.3)

    async def bench(ctx):
        await _loop(ctx, [src, snk], lambda: len(snk.got) == 40)
    _run(dut, bench)
    assert snk.got == want


def test_gearbox_keeps_one_chunk_per_cycle_when_lines_keep_up(rng):
    dut = ResidualGearbox(pes=4)
    lines = _ints(rng, 64, 24)
    src, snk = Source(dut.i, lines, rng), Sink(dut.o, rng)

    async def bench(ctx):
        cycles = await _loop(ctx, [src, snk], lambda: len(snk.got) == 32)
        assert cycles == 32
    _run(dut, bench)


def test_quarter_splitter_emits_quarters_low_bits_first(rng):
    dut = QuarterSplitter(pes=8)
    lines = _ints(rng, 128, 10)
    want = [(v >> (32 * i)) & 0xFFFFFFFF for v in lines for i in range(4)]
    src, snk = Source(dut.i, lines, rng, 0.3), Sink(dut.o, rng, 0.3)

    async def bench(ctx):
        await _loop(ctx, [src, snk], lambda: len(snk.got) == 40)
    _run(dut, bench)
    assert snk.got == want


@pytest.mark.parametrize("max_r", [1, 2, 4])
def test_quarter_packer_cuts_lines_into_chunks_of_r_quarters(rng, max_r):
    pes = 8
    q = 4 * pes
    dut = QuarterPacker(pes=pes, max_r=max_r)
    # Runs of 3 lines per chunk size r (12 quarters, a multiple of every r up to 4).
    runs = [(r, _ints(rng, 16 * pes, 3)) for r in list(range(1, max_r + 1)) * 2]
    lines = [x for _, run in runs for x in run]
    want, rs = [], []
    for r, run in runs:
        stream = sum(x << (16 * pes * i) for i, x in enumerate(run))
        for c in range(12 // r):
            want.append((stream >> (c * r * q)) & ((1 << (r * q)) - 1))
            rs.append(r)
    src = Source(dut.i, lines, rng, idle=0.3)
    snk = Sink(dut.o, rng, stall=0.3)

    class R:
        def drive(self, ctx):
            ctx.set(dut.r, rs[min(len(snk.got), len(rs) - 1)])

        def sample(self, ctx):
            pass

    async def bench(ctx):
        await _loop(ctx, [R(), src, snk], lambda: len(snk.got) == len(want))
    _run(dut, bench)
    assert snk.got == want


@pytest.mark.parametrize("pes", [4, 8])
def test_plane_merge_puts_draft_nibble_above_residual_field(rng, pes):
    dut = PlaneMerge(pes=pes)
    quarters = _ints(rng, 4 * pes, 25)
    chunks = _ints(rng, 12 * pes, 25)
    want = []
    for dq, rc in zip(quarters, chunks):
        words = [((dq >> 4 * p) & 0xF) << 12 | ((rc >> 12 * p) & 0xFFF) for p in range(pes)]
        want.append(sum(w << 16 * p for p, w in enumerate(words)))
    srcs = [Source(dut.draft, quarters, rng, 0.4), Source(dut.resid, chunks, rng, 0.2)]
    snk = Sink(dut.o, rng, 0.3)

    async def bench(ctx):
        await _loop(ctx, srcs + [snk], lambda: len(snk.got) == 25)
    _run(dut, bench)
    assert snk.got == want


def test_draft_gather_zeroes_and_skips_missing_blocks(rng):
    pes = 8
    dut = DraftGather(pes=pes)
    masks = [0b1111, 0b0001, 0b0011, 0b0111, 0b1111, 0b0111, 0b0001, 0b1111]
    beats = [(mask, _ints(rng, 4 * pes, 4)) for mask in masks for _ in range(3)]
    items = [[qs[q] for mask, qs in beats if mask >> q & 1] for q in range(4)]
    want = [sum(qs[q] << (4 * pes * q) for q in range(4) if mask >> q & 1) for mask, qs in beats]
    srcs = [Source(getattr(dut, f"q{q}"), items[q], rng, 0.3) for q in range(4)]
    snk = Sink(dut.o, rng, 0.3)

    class Mask:
        def drive(self, ctx):
            ctx.set(dut.present, beats[len(snk.got)][0] if len(snk.got) < len(beats) else 0)

        def sample(self, ctx):
            pass

    async def bench(ctx):
        await _loop(ctx, [Mask()] + srcs + [snk], lambda: len(snk.got) == len(beats))
    _run(dut, bench)
    assert snk.got == want
    assert all(not s.items for s in srcs)


@pytest.mark.parametrize("segs,last_lines", [(5, 37), (5, 9), (1, 3)])
def test_stream_fetcher_covers_segments_in_bursts_within_credit(rng, segs, last_lines):
    line, max_burst, credit = 16, 8, 20
    dut = StreamFetcher(addr_width=24, line_bytes=line, max_burst=max_burst, max_lines=100,
                        max_segs=8, credit=credit)
    base, seg_lines, stride = BOUNDARY * 3 - 5 * line, 37, 64 * line
    want = [base + s * stride + i * line for s in range(segs)
            for i in range(last_lines if s == segs - 1 else seg_lines)]
    got, state = [], {"fifo": 0, "reserved": 0, "max": 0}

    class Model:
        def drive(self, ctx):
            self.ready = rng.random() >= 0.3
            self.pop = state["fifo"] > 0 and rng.random() >= 0.5
            ctx.set(dut.req.ready, self.ready)
            ctx.set(dut.pop, self.pop)

        def sample(self, ctx):
            if self.pop:
                state["fifo"] -= 1
                state["reserved"] -= 1
            if ctx.get(dut.req.valid) and self.ready:
                addr, n = ctx.get(dut.req.payload.addr), ctx.get(dut.req.payload.len)
                assert 1 <= n <= max_burst
                assert addr // BOUNDARY == (addr + n * line - 1) // BOUNDARY
                got.extend(addr + i * line for i in range(n))
                state["fifo"] += n            # data lands at once: the worst case for credit
                state["reserved"] += n
                state["max"] = max(state["max"], state["reserved"])

    async def bench(ctx):
        ctx.set(dut.base, base)
        ctx.set(dut.seg_lines, seg_lines)
        ctx.set(dut.last_lines, last_lines)
        ctx.set(dut.segs, segs)
        ctx.set(dut.stride, stride)
        ctx.set(dut.load, 1)
        await ctx.tick()
        ctx.set(dut.load, 0)
        await _loop(ctx, [Model()], lambda: ctx.get(dut.idle) and not state["fifo"])
    _run(dut, bench)
    assert got == want
    assert state["max"] == min(credit, len(want))


def test_slot_reader_reads_back_to_back_bursts_one_word_per_cycle(rng):
    dut = SlotReader(addr_width=10, width=32, max_burst=8)
    bursts = [(int(rng.integers(0, 1000)), int(rng.integers(1, 9)), int(rng.integers(0, 4)))
              for _ in range(12)]
    items = [a | n << 10 | i << 14 for a, n, i in bursts]
    want = [(a + j, i) for a, n, i in bursts for j in range(n)]
    src = Source(dut.req, items, rng)
    reads, pending = [], deque()

    class Port:
        def drive(self, ctx):
            pass

        def sample(self, ctx):
            if ctx.get(dut.wr_en):
                addr = pending.popleft()
                reads.append((addr, ctx.get(dut.wr_id)))
            if ctx.get(dut.mem.en):
                pending.append(ctx.get(dut.mem.addr))

    async def bench(ctx):
        cycles = await _loop(ctx, [src, Port()], lambda: len(reads) == len(want))
        # taken in cycle 0, one read per cycle from cycle 1, the last word a cycle later
        assert cycles == len(want) + 2
    _run(dut, bench)
    assert reads == want


def test_components_reject_bad_parameters():
    for bad in (dict(rows=1, cols=2), dict(rows=3, cols=4), dict(rows=16, cols=8),
                dict(rows=2, cols=2, max_burst=0), dict(rows=2, cols=2, fifo_lines=8),
                dict(rows=2, cols=2, k_max=10), dict(rows=2, cols=2, addr_width=8),
                dict(rows=2, cols=2, slot_addr_width=0), dict(rows=2, cols="2")):
        with pytest.raises(ValueError):
            WeightStreamer(**bad)
    for cls in (ResidualGearbox, PlaneMerge, DraftGather, QuarterSplitter):
        with pytest.raises(ValueError):
            cls(pes=6)
    with pytest.raises(ValueError):
        StreamFetcher(addr_width=32, line_bytes=16, max_burst=16, max_lines=8, max_segs=1,
                      credit=8)


def test_streamer_exposes_its_parameters():
    dut = WeightStreamer(rows=2, cols=4, max_burst=8, fifo_lines=32, k_max=64, n_max=100)
    assert (dut.rows, dut.cols, dut.pes, dut.line_bytes) == (2, 4, 8, 16)
    assert (dut.max_burst, dut.fifo_lines, dut.k_max, dut.n_max, dut.tiles_max) == \
        (8, 32, 64, 100, 13)
    assert len(dut.m_axi.rdata) == 128 and len(dut.mem.data) == 128
    Fragment.get(dut, None)                # elaborates


# --- whole passes ---------------------------------------------------------------------------

def _tensor(rng, n, k):
    # Windows 4d .. 4d+3 cover all 32 exponents, so every 16-bit word is a valid code.
    words = rng.integers(0, 1 << 16, (n, k), dtype=np.uint16)
    lut = rng.integers(0, 0x7C00, 8, dtype=np.uint16).view(np.float16)
    return BsfpTensor.from_parts(words, np.arange(8) * 4, np.full(8, 4), lut)


class SlotMemory:
    """Synchronous read port model: data of the address enabled in the previous cycle."""

    def __init__(self, port, mem: bytes, line: int):
        self.port, self.mem, self.line = port, mem, line
        self.reads = []
        self.pending = None

    def drive(self, ctx):
        if self.pending is not None:
            a = self.pending * self.line
            ctx.set(self.port.data, int.from_bytes(self.mem[a:a + self.line], "little"))

    def sample(self, ctx):
        self.pending = None
        if ctx.get(self.port.en):
            self.pending = ctx.get(self.port.addr)
            self.reads.append(self.pending * self.line)


def _place(rng, layouts, line, *, near_pages, aligned=False):
    """Host (or slot) memory holding every layout's two regions, with junk around them.

    Each region starts a few lines before a 4 KiB boundary (``near_pages``: bursts have to be
    split), on a 4 KiB boundary (``aligned``) or a few lines after the previous one."""
    regions, cursor = [], line * int(rng.integers(1, 8))
    for lay in layouts:
        pair = []
        for blob in (lay.draft, lay.residual):
            if aligned:
                cursor = -(-cursor // BOUNDARY) * BOUNDARY
            elif near_pages:
                page = (cursor // BOUNDARY + 1) * BOUNDARY
                cursor = max(cursor, page - line * int(rng.integers(1, 6)))
            pair.append((cursor, blob))
            cursor += len(blob) + line * int(rng.integers(1, 4))
        regions.append(pair)
    mem = bytearray(rng.bytes(cursor + line))
    for pair in regions:
        for addr, blob in pair:
            mem[addr:addr + len(blob)] = blob
    return bytes(mem), [(a0, a1) for (a0, _), (a1, _) in regions]


def _stream(dut, cmds, mem, *, rng, latency=4, ar_idle=0.2, r_idle=0.2, stall=0.3,
            bad_ranges=()):
    """Run ``cmds`` (payload dicts) one after another; returns per-command beats and reads."""
    p = dut.pes
    line = dut.line_bytes
    axi = AxiReadSlave(dut.m_axi, mem, rng=rng, latency=latency, ar_idle=ar_idle,
                       r_idle=r_idle, bad_ranges=bad_ranges)
    port = SlotMemory(dut.mem, mem, line)
    out = {"beats": [[] for _ in cmds], "bursts": [], "reads": [], "errors": [], "cycles": 0,
           "times": []}
    words_mask = (1 << 16 * p) - 1
    state = {"i": 0, "err": False, "cycle": 0, "marks": [], "busy": True}

    class Driver:
        def drive(self, ctx):
            ctx.set(dut.cmd.valid, state["i"] < len(cmds))
            if state["i"] < len(cmds):
                ctx.set(dut.cmd.payload, cmds[state["i"]])
            self.ready = rng.random() >= stall
            ctx.set(dut.beats.ready, self.ready)

        def sample(self, ctx):
            assert ctx.get(dut.error) == state["err"], f"error flag at cycle {state['cycle']}"
            assert ctx.get(dut.m_axi.rready)
            if ctx.get(dut.m_axi.rvalid) and ctx.get(dut.m_axi.rresp):
                state["err"] = True
            if ctx.get(dut.cmd.valid) and ctx.get(dut.cmd.ready):
                if state["i"]:
                    out["errors"].append(state["err"])
                state["marks"].append((len(axi.bursts), len(port.reads)))
                state["i"] += 1
                state["err"] = False
            if ctx.get(dut.beats.valid) and self.ready:
                v = ctx.get(Value.cast(dut.beats.payload))
                out["beats"][state["i"] - 1].append((v & words_mask, v >> 16 * p))
                out["times"].append(state["cycle"])
            state["busy"] = ctx.get(dut.busy) or ctx.get(dut.cmd.valid)
            state["cycle"] += 1

    async def bench(ctx):
        out["cycles"] = await _loop(ctx, [Driver(), axi, port],
                                    lambda: state["i"] == len(cmds) and not state["busy"],
                                    max_cycles=100_000)
    _run(dut, bench)
    out["errors"].append(state["err"])
    marks = state["marks"] + [(len(axi.bursts), len(port.reads))]
    out["bursts"] = [axi.bursts[a:b] for (a, _), (b, _) in zip(marks, marks[1:])]
    out["reads"] = [port.reads[a:b] for (_, a), (_, b) in zip(marks, marks[1:])]
    return out


def _beats_of(words):
    return [sum(int(w) << 16 * p for p, w in enumerate(row)) for row in words]


def _cases(dut, rng, shapes, *, slot, aligned=False):
    """Commands (both modes per shape) and what each must produce.

    ``slot``: the source of every command (bool), or ``"mixed"`` (mostly slot, some dense)."""
    p, line = dut.pes, dut.line_bytes
    layouts, ws = [], []
    for n, k in shapes:
        w = _tensor(rng, n, k)
        ws.append(w)
        layouts.append(tensor_layout(w, p, dut.interleave))
    mem, addrs = _place(rng, layouts, line, near_pages=slot is not True, aligned=aligned)
    cmds, expect = [], []
    for (w, lay, (a_d, a_r)) in zip(ws, layouts, addrs):
        for mode in ("verify", "draft"):
            words = stream_words(mode, lay)
            golden_words, last = weight_stream(mode, w, dut.rows, dut.cols, dut.interleave)
            assert np.array_equal(words, golden_words)       # the two golden views agree
            src = bool(rng.random() < 0.7) if slot == "mixed" else slot
            cmds.append({"draft": mode == "draft", "slot_src": src, "tiles": lay.tiles,
                         "k": lay.k, "draft_addr": a_d, "resid_addr": a_r})
            group_lines = dut.interleave * lay.k // 4
            lines = [(a_d + i * line, i // group_lines % 4 if mode == "draft" else 0)
                     for i in range(lay.draft_lines)]
            if mode == "verify":
                lines += [(a_r + i * line, 1) for i in range(lay.residual_lines)]
            expect.append((list(zip(_beats_of(words), last.astype(int).tolist())), lines))
    return cmds, expect, mem


def _check_reads(dut, out, expect):
    line = dut.line_bytes
    for i, (_, lines) in enumerate(expect):
        read = []
        for arid, addr, n in out["bursts"][i]:
            assert 1 <= n <= dut.max_burst
            assert addr // BOUNDARY == (addr + n * line - 1) // BOUNDARY
            read += [(addr + j * line, arid) for j in range(n)]
        assert sorted(read) == sorted(lines), f"command {i}: lines read (with arid)"


# (N, K) per array: T = 1..9 verify tiles, N off multiples of P and 4P, K = 4 and bursts
# longer than max_burst.
SHAPES = {
    (2, 2): [(3, 4), (6, 8), (11, 12), (16, 4), (17, 20), (34, 8), (9, 72)],
    (4, 4): [(5, 8), (40, 4), (64, 12), (130, 4)],
    (1, 4): [(1, 16), (30, 4)],
}


@pytest.mark.parametrize("interleave", [1, 2, 4])
@pytest.mark.parametrize("rows,cols", list(SHAPES))
def test_dense_passes_match_golden_beats_and_read_each_line_once(rng, rows, cols, interleave):
    dut = WeightStreamer(rows=rows, cols=cols, addr_width=20, max_burst=8, fifo_lines=16,
                         k_max=128, n_max=160, interleave=interleave)
    cmds, expect, mem = _cases(dut, rng, SHAPES[(rows, cols)], slot=False)
    out = _stream(dut, cmds, mem, rng=rng, latency=int(rng.integers(2, 12)))
    for i, (beats, _) in enumerate(expect):
        assert out["beats"][i] == beats, f"command {i} ({cmds[i]})"
    _check_reads(dut, out, expect)
    assert out["errors"] == [False] * len(cmds)
    for i in range(0, len(cmds), 2):                         # draft bytes = verify bytes / 4
        verify, draft = (sum(n for _, _, n in out["bursts"][j]) for j in (i, i + 1))
        assert 4 * draft == verify


@pytest.mark.parametrize("rows,cols,max_burst,fifo_lines,source,interleave", [
    (2, 2, 8, 8, True, 1), (2, 4, 4, 4, True, 1), (2, 2, 4, 12, "mixed", 1),
    (2, 2, 8, 8, True, 4), (2, 4, 4, 4, "mixed", 4)])
def test_slot_passes_match_golden_beats_and_read_each_line_once(rng, rows, cols, max_burst,
                                                                fifo_lines, source, interleave):
    dut = WeightStreamer(rows=rows, cols=cols, max_burst=max_burst, fifo_lines=fifo_lines,
                         k_max=128, n_max=160, slot_addr_width=14, interleave=interleave)
    shapes = [(3, 4), (11, 8), (17, 12), (34, 4), (24, 36)]
    cmds, expect, mem = _cases(dut, rng, shapes, slot=source)
    out = _stream(dut, cmds, mem, rng=rng)
    for i, (beats, lines) in enumerate(expect):
        assert out["beats"][i] == beats, f"command {i} ({cmds[i]})"
        if cmds[i]["slot_src"]:
            assert sorted(out["reads"][i]) == sorted(a for a, _ in lines), f"command {i}"
            assert not out["bursts"][i]
        else:
            assert not out["reads"][i]
    if source == "mixed":
        assert {c["slot_src"] for c in cmds} == {True, False}
        _check_reads(dut, out, [e if c["slot_src"] is False else (e[0], []) for c, e in
                                zip(cmds, expect)])
    assert out["errors"] == [False] * len(cmds)


def test_read_error_raises_error_until_next_command_and_pass_completes(rng):
    dut = WeightStreamer(rows=2, cols=2, addr_width=20, max_burst=4, fifo_lines=8, k_max=64,
                         n_max=64)
    shapes = [(17, 8), (17, 8), (6, 12)]
    cmds, expect, mem = _cases(dut, rng, shapes, slot=False)
    line = dut.line_bytes
    # One bad residual line in the first matrix, one bad draft line in the second.
    bad = [(cmds[0]["resid_addr"] + 7 * line, cmds[0]["resid_addr"] + 8 * line),
           (cmds[2]["draft_addr"] + 5 * line, cmds[2]["draft_addr"] + 6 * line)]
    out = _stream(dut, cmds, mem, rng=rng, bad_ranges=bad)
    # verify 0 (bad residual), draft 0 (no residual read), verify 1 and draft 1 (both read
    # the bad draft line: K/4 = 2, line 5 of block 2, stream 2), then clean passes.
    assert out["errors"] == [True, False, True, True, False, False]
    for i, (beats, _) in enumerate(expect):
        assert len(out["beats"][i]) == len(beats), f"command {i}"
        assert [l for _, l in out["beats"][i]] == [l for _, l in beats]
        if not out["errors"][i]:
            assert out["beats"][i] == beats
    _check_reads(dut, out, expect)


@pytest.mark.parametrize("rows,cols,max_burst,fifo_lines,interleave", [
    (1, 4, 1, 2, 1), (2, 2, 3, 5, 1), (2, 4, 5, 9, 1), (4, 4, 16, 16, 1), (8, 4, 2, 6, 1),
    (1, 4, 1, 2, 4), (2, 2, 3, 5, 2), (2, 4, 5, 9, 4), (8, 4, 2, 6, 4)])
def test_random_shapes_and_parameters_match_golden_beats(rng, rows, cols, max_burst,
                                                         fifo_lines, interleave):
    dut = WeightStreamer(rows=rows, cols=cols, addr_width=24, max_burst=max_burst,
                         fifo_lines=fifo_lines, k_max=96, n_max=9 * rows * cols,
                         slot_addr_width=14, interleave=interleave)
    p = rows * cols
    shapes = [(int(rng.integers(1, 9 * p + 1)), 4 * int(rng.integers(1, 25))) for _ in range(3)]
    cmds, expect, mem = _cases(dut, rng, shapes, slot="mixed")
    out = _stream(dut, cmds, mem, rng=rng, latency=int(rng.integers(0, 30)), ar_idle=0.3,
                  r_idle=0.3, stall=0.4)
    for i, (beats, lines) in enumerate(expect):
        assert out["beats"][i] == beats, f"command {i} ({cmds[i]}), shapes {shapes}"
        if cmds[i]["slot_src"]:
            assert sorted(out["reads"][i]) == sorted(a for a, _ in lines), f"command {i}"
    _check_reads(dut, out, [e if c["slot_src"] is False else (e[0], []) for c, e in
                            zip(cmds, expect)])


@pytest.mark.parametrize("interleave", [1, 4])
@pytest.mark.parametrize("mode", ["verify", "draft"])
@pytest.mark.parametrize("placement", ["aligned", "near_page", "slot"])
def test_4x4_pass_streams_at_least_095_beats_per_cycle_with_latency_24(rng, mode, placement,
                                                                       interleave):
    # N = 64, K = 256: 1024 verify beats, 256 draft beats (one draft tile). Regions on a
    # 4 KiB boundary (and slot regions) run at full rate from the first beat; regions
    # starting 1..5 lines before a boundary get short first bursts, which can stall the start
    # of a draft pass (the four block streams share the R channel), so there the rate is
    # taken after the first quarter of the beats.
    dut = WeightStreamer(rows=4, cols=4, k_max=256, n_max=256, slot_addr_width=12,
                         interleave=interleave)
    # Interleave 4: N = 256, K = 64 (16 verify tiles, 4 draft tiles: one full draft group).
    shape = (64, 256) if interleave == 1 else (256, 64)
    cmds, expect, mem = _cases(dut, rng, [shape], slot=placement == "slot",
                               aligned=placement == "aligned")
    i = 0 if mode == "verify" else 1
    out = _stream(dut, [cmds[i]], mem, rng=rng, latency=24, ar_idle=0.0,
                  r_idle=0.0, stall=0.0)
    beats = expect[i][0]
    assert out["beats"][0] == beats
    times = out["times"]
    whole = len(times) / (times[-1] - times[0] + 1)
    q = len(times) // 4
    steady = (len(times) - q) / (times[-1] - times[q] + 1)
    print(f"\n{mode} {placement}: {len(times)} beats, first at cycle {times[0]}, "
          f"{whole:.4f} beats/cycle first to last, {steady:.4f} after the first quarter")
    # Interleaved draft passes take one stream per beat: the first beat leaves as soon as
    # stream 0's first line is in, the other streams' first bursts follow on the shared R
    # channel, so there too the rate is taken after the first quarter.
    late_start = placement == "near_page" or (mode == "draft" and interleave > 1)
    assert (steady if late_start else whole) >= 0.95
