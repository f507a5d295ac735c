"""AXI4 helpers: the simulation slave models of sim.amaranth_axi, AxiReadArbiter and
AxiReadLatency, in the Amaranth simulator."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import ClockDomain, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out
from amaranth.sim import Simulator

from hw.axi import AxiReadArbiter, AxiReadLatency, AxiReadSignature, AxiSignature
from sim.amaranth_axi import (SLVERR, AxiReadMasterDriver, AxiReadSlave, AxiWriteSlave, step,
                              until)

# Constructors that reject their parameters leave Elaboratables behind.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

BUS = 8   # bytes of the 64-bit buses used here


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def _word(mem, addr):
    return int.from_bytes(mem[addr:addr + BUS], "little")


def _random_bursts(rng, n, *, mem_size, max_beats=16, id_bits=2):
    out = []
    for _ in range(n):
        beats = int(rng.integers(1, max_beats + 1))
        page = int(rng.integers(0, mem_size // 4096))
        start = int(rng.integers(0, 4096 // BUS - beats + 1))
        out.append((int(rng.integers(0, 1 << id_bits)), page * 4096 + start * BUS, beats))
    return out


def _check_received(master, mem):
    """Each burst's beats, in AR order: its rid, its bytes, OKAY, rlast on the last."""
    expect = [(arid, _word(mem, addr + i * BUS), 0, int(i == n - 1))
              for arid, addr, n in master.bursts for i in range(n)]
    assert master.beats == expect


class _Bare(wiring.Component):
    """An AXI4 master port driven only by the testbench."""

    def __init__(self):
        super().__init__({"m_axi": Out(AxiSignature(addr_width=16, data_width=64, id_width=2))})

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain()
        return m


# --- the slave models ------------------------------------------------------------------

def test_read_slave_returns_first_beat_exactly_latency_after_ar_and_pipelines_bursts(rng):
    dut = _Bare()
    mem = rng.integers(0, 256, 1 << 16, dtype=np.uint8).tobytes()
    slave = AxiReadSlave(dut.m_axi, mem, rng=rng, latency=9, bad_ranges=[(0x2010, 0x2011)])
    master = AxiReadMasterDriver(dut.m_axi, rng=rng)
    for arid, addr in ((1, 0x1000), (2, 0x2000), (3, 0x3000)):
        master.read(addr, 4, arid=arid)
    first_beat = []

    def each(ctx, cycle):
        if ctx.get(dut.m_axi.rvalid) and not first_beat:
            first_beat.append(cycle)

    async def bench(ctx):
        await until(ctx, [slave, master], lambda: master.done, each=each)

    _run(dut, bench)
    # ARs at cycles 0, 1, 2; beats from cycle 10 on, back to back.
    assert first_beat == [10]
    assert slave.bursts == [(1, 0x1000, 4), (2, 0x2000, 4), (3, 0x3000, 4)]
    assert slave.max_in_flight == 3 and slave.beats_returned == 12
    resp = [b[2] for b in master.beats]
    assert resp == [0] * 6 + [SLVERR] + [0] * 5
    assert [b[1] for b in master.beats[:4]] == [_word(mem, 0x1000 + 8 * i) for i in range(4)]


def test_read_slave_rejects_a_burst_crossing_4k():
    dut = _Bare()
    slave = AxiReadSlave(dut.m_axi, bytes(1 << 14), rng=np.random.default_rng(0))
    master = AxiReadMasterDriver(dut.m_axi, rng=np.random.default_rng(0))
    master.read(0x0FF8, 2)

    async def bench(ctx):
        with pytest.raises(AssertionError, match="crosses a 4 KiB boundary"):
            await until(ctx, [slave, master], lambda: master.done)

    _run(dut, bench)


def test_write_slave_honours_strobes_bad_ranges_and_checks_wlast(rng):
    dut = _Bare()
    p = dut.m_axi
    mem = bytearray(1 << 14)
    slave = AxiWriteSlave(p, mem, rng=rng, latency=3, aw_idle=0.3, w_idle=0.3, b_idle=0.3,
                          bad_ranges=[(0x208, 0x210)])
    cycles = [0]

    async def tick(ctx):
        slave.drive(ctx)
        slave.sample(ctx)
        cycles[0] += 1
        await ctx.tick()

    async def handshake(ctx, valid, ready):
        ctx.set(valid, 1)
        while True:
            slave.drive(ctx)
            slave.sample(ctx)
            done = ctx.get(ready)
            await ctx.tick()
            if done:
                break
        ctx.set(valid, 0)

    async def burst(ctx, awid, addr, words, strobes, wlast=None):
        ctx.set(p.awid, awid)
        ctx.set(p.awaddr, addr)
        ctx.set(p.awlen, len(words) - 1)
        ctx.set(p.awsize, 3)
        ctx.set(p.awburst, 1)
        await handshake(ctx, p.awvalid, p.awready)
        for i, (w, s) in enumerate(zip(words, strobes)):
            ctx.set(p.wdata, w)
            ctx.set(p.wstrb, s)
            ctx.set(p.wlast, i == len(words) - 1 if wlast is None else wlast[i])
            await handshake(ctx, p.wvalid, p.wready)

    async def bench(ctx):
        ctx.set(p.bready, 1)
        await burst(ctx, 1, 0x100, [0x1122334455667788, 0x99AABBCCDDEEFF00], [0x0F, 0xFF])
        await burst(ctx, 2, 0x200, [1, 2, 3], [0xFF, 0xFF, 0x81])
        while not slave.idle:
            await tick(ctx)
        assert slave.responses == [(1, 0), (2, SLVERR)]
        assert slave.bytes_written == 4 + 8 + 8 + 2
        assert bytes(mem[0x100:0x110]) == bytes.fromhex("88776655000000000000000000000000")[:4] \
            + bytes(4) + (0x99AABBCCDDEEFF00).to_bytes(8, "little")
        assert bytes(mem[0x200:0x218]) == (1).to_bytes(8, "little") + bytes(8) + b"\x03" + bytes(7)
        with pytest.raises(AssertionError, match="wlast=0, expected 1"):
            await burst(ctx, 3, 0x300, [5, 6], [0xFF, 0xFF], wlast=[0, 0])

    _run(dut, bench)


# --- AxiReadArbiter --------------------------------------------------------------------

def test_arbiter_rejects_bad_parameters():
    good = dict(sources=3, addr_width=32, data_width=64, id_width=2)
    for bad in (dict(sources=0), dict(addr_width=8), dict(data_width=48), dict(id_width=0)):
        with pytest.raises(ValueError):
            AxiReadArbiter(**{**good, **bad})
    with pytest.raises(TypeError):
        AxiReadArbiter(**{**good, "sources": 2.0})
    arb = AxiReadArbiter(**good)
    assert arb.m.signature == AxiReadSignature(addr_width=32, data_width=64, id_width=4)
    assert arb.s2.signature.flip() == AxiReadSignature(addr_width=32, data_width=64, id_width=2)


@pytest.mark.parametrize("low,order", [
    (0b0000, [0, 1, 2, 3]), (0b0101, [1, 3, 0, 2]), (0b0010, [0, 2, 3, 1]),
    (0b1111, [0, 1, 2, 3]), (0b1000, [0, 1, 2, 3]), (0b0001, [1, 2, 3, 0])])
def test_arbiter_grants_lowest_index_first_with_low_sources_last(rng, low, order):
    arb = AxiReadArbiter(sources=4, addr_width=16, data_width=64, id_width=2)
    masters = [AxiReadMasterDriver(arb.source(i), rng=rng) for i in range(4)]
    for i, mst in enumerate(masters):
        mst.read(0x1000 * i, 1, arid=3 - i)
    slave = AxiReadSlave(arb.m, bytes(1 << 16), rng=rng, latency=5)
    ar_cycles = []

    def each(ctx, cycle):
        if ctx.get(arb.m.arvalid) and ctx.get(arb.m.arready):
            ar_cycles.append(cycle)

    async def bench(ctx):
        ctx.set(arb.low, low)
        await until(ctx, masters + [slave], lambda: all(x.done for x in masters), each=each)

    _run(arb, bench)
    assert slave.bursts == [((i << 2) | (3 - i), 0x1000 * i, 1) for i in order]
    assert ar_cycles == [1, 2, 3, 4]      # one register stage, no bubble between ARs


def test_arbiter_holds_an_offered_ar_until_arready(rng):
    arb = AxiReadArbiter(sources=3, addr_width=16, data_width=64, id_width=2)
    m = arb.m

    def ar(i):
        s = arb.source(i)
        return s.arvalid, s.arid, s.araddr, s.arlen, s.arsize, s.arburst

    async def bench(ctx):
        ctx.set(m.arready, 0)
        for i in range(3):
            ctx.set(arb.source(i).arsize, 3)
            ctx.set(arb.source(i).arburst, 1)
        ctx.set(arb.source(2).arvalid, 1)
        ctx.set(arb.source(2).arid, 1)
        ctx.set(arb.source(2).araddr, 0x2000)
        ctx.set(arb.source(2).arlen, 7)
        assert ctx.get(arb.source(2).arready) == 1
        await ctx.tick()
        ctx.set(arb.source(2).arvalid, 0)
        # A higher-priority AR arrives while source 2's waits on m.
        ctx.set(arb.source(0).arvalid, 1)
        ctx.set(arb.source(0).arid, 3)
        ctx.set(arb.source(0).araddr, 0x0100)
        ctx.set(arb.source(0).arlen, 2)
        for _ in range(6):
            assert (ctx.get(m.arvalid), ctx.get(m.arid), ctx.get(m.araddr), ctx.get(m.arlen)) \
                == (1, (2 << 2) | 1, 0x2000, 7)
            assert ctx.get(arb.source(0).arready) == 0
            ctx.set(arb.low, int(rng.integers(0, 8)))
            await ctx.tick()
        ctx.set(arb.low, 0)
        ctx.set(m.arready, 1)
        assert ctx.get(arb.source(0).arready) == 1     # loads as source 2's AR leaves
        await ctx.tick()
        ctx.set(arb.source(0).arvalid, 0)
        assert (ctx.get(m.arvalid), ctx.get(m.arid), ctx.get(m.araddr), ctx.get(m.arlen)) \
            == (1, 3, 0x0100, 2)
        await ctx.tick()
        assert ctx.get(m.arvalid) == 0

    _run(arb, bench)


def test_arbiter_routes_interleaved_r_beats_by_the_high_id_bits(rng):
    arb = AxiReadArbiter(sources=3, addr_width=16, data_width=64, id_width=2)
    m = arb.m
    srcs = [arb.source(i) for i in range(3)]

    async def bench(ctx):
        seen = [0, 0, 0]
        for _ in range(300):
            src, low = int(rng.integers(0, 3)), int(rng.integers(0, 4))
            valid = int(rng.random() < 0.8)
            word = int(rng.integers(0, 1 << 63)) * 2 + 1
            resp, last = int(rng.integers(0, 4)), int(rng.integers(0, 2))
            readies = [int(r) for r in rng.integers(0, 2, 3)]
            for s, r in zip(srcs, readies):
                ctx.set(s.rready, r)
            ctx.set(m.rvalid, valid)
            ctx.set(m.rid, (src << 2) | low)
            ctx.set(m.rdata, word)
            ctx.set(m.rresp, resp)
            ctx.set(m.rlast, last)
            assert ctx.get(m.rready) == readies[src]
            for i, s in enumerate(srcs):
                assert ctx.get(s.rvalid) == (valid and i == src)
                if i == src:
                    assert (ctx.get(s.rid), ctx.get(s.rdata), ctx.get(s.rresp), ctx.get(s.rlast)) \
                        == (low, word, resp, last)
                    seen[i] += valid
            await ctx.tick()
        assert min(seen) > 50

    _run(arb, bench)


def test_arbiter_delivers_each_source_exactly_its_own_bytes_under_random_traffic(rng):
    arb = AxiReadArbiter(sources=3, addr_width=16, data_width=64, id_width=2)
    mem = rng.integers(0, 256, 1 << 16, dtype=np.uint8).tobytes()
    masters = []
    for i in range(3):
        mst = AxiReadMasterDriver(arb.source(i), rng=rng, ar_gap=0.5, r_stall=0.25)
        for arid, addr, beats in _random_bursts(rng, 25, mem_size=len(mem)):
            mst.read(addr, beats, arid=arid)
        masters.append(mst)
    slave = AxiReadSlave(arb.m, mem, rng=rng, latency=20, ar_idle=0.2, r_idle=0.2,
                         max_outstanding=6)

    class LowBits:      # random `low` half of the time, all clear the other half
        cycle = 0

        def drive(self, ctx):
            ctx.set(arb.low, int(rng.integers(0, 8)) if self.cycle % 50 < 25 else 0)

        def sample(self, ctx):
            self.cycle += 1

    async def bench(ctx):
        await until(ctx, masters + [slave, LowBits()], lambda: all(x.done for x in masters))

    _run(arb, bench)
    for i, mst in enumerate(masters):
        assert len(mst.bursts) == 25
        _check_received(mst, mem)
        assert [(aid & 3, a, n) for aid, a, n in slave.bursts if aid >> 2 == i] == mst.bursts
    assert slave.max_in_flight == 6


# --- AxiReadLatency --------------------------------------------------------------------

def test_read_latency_rejects_bad_parameters():
    good = dict(latency=4, addr_width=32, data_width=64, id_width=2)
    for bad in (dict(latency=-1), dict(depth=0), dict(addr_width=4)):
        with pytest.raises(ValueError):
            AxiReadLatency(**{**good, **bad})
    with pytest.raises(TypeError):
        AxiReadLatency(**{**good, "latency": 1.5})


@pytest.mark.parametrize("latency", [0, 1, 7, 30])
def test_read_latency_delays_each_ar_by_latency_cycles(rng, latency):
    dut = AxiReadLatency(latency=latency, addr_width=16, data_width=64, id_width=2)
    mem = rng.integers(0, 256, 1 << 16, dtype=np.uint8).tobytes()
    master = AxiReadMasterDriver(dut.s, rng=rng)
    master.read(0x0400, 4, arid=2)
    slave = AxiReadSlave(dut.m, mem, rng=rng)
    events = {}

    def each(ctx, cycle):
        for name, v, r in (("s_ar", dut.s.arvalid, dut.s.arready),
                           ("m_ar", dut.m.arvalid, dut.m.arready),
                           ("r", dut.s.rvalid, dut.s.rready)):
            if ctx.get(v) and ctx.get(r):
                events.setdefault(name, cycle)

    async def bench(ctx):
        await until(ctx, [slave, master], lambda: master.done, each=each)

    _run(dut, bench)
    delay = max(latency, 1)
    assert events == {"s_ar": 0, "m_ar": delay, "r": delay + 1}
    _check_received(master, mem)


def test_read_latency_keeps_the_r_channel_busy_with_pipelined_bursts(rng):
    dut = AxiReadLatency(latency=30, addr_width=16, data_width=64, id_width=1)
    mem = rng.integers(0, 256, 1 << 16, dtype=np.uint8).tobytes()
    master = AxiReadMasterDriver(dut.s, rng=rng)
    for i in range(32):
        master.read(0x800 * i, 16, arid=i % 2)
    slave = AxiReadSlave(dut.m, mem, rng=rng, max_outstanding=2)

    async def bench(ctx):
        cycles = await until(ctx, [slave, master], lambda: master.done)
        assert cycles <= 32 * 16 + 30 + 4, cycles

    _run(dut, bench)
    _check_received(master, mem)


def test_read_latency_holds_at_most_depth_waiting_ars(rng):
    dut = AxiReadLatency(latency=3, depth=4, addr_width=16, data_width=64, id_width=1)
    master = AxiReadMasterDriver(dut.s, rng=rng)
    for i in range(6):
        master.read(0x100 * i, 1)

    async def bench(ctx):
        ctx.set(dut.m.arready, 0)
        for _ in range(20):
            await step(ctx, master)
        assert len(master.bursts) == 4
        assert ctx.get(dut.m.arvalid) and ctx.get(dut.m.araddr) == 0

    _run(dut, bench)


def test_read_slave_rejects_an_ar_withdrawn_or_changed_before_arready():
    for change in ("arvalid", "araddr"):
        dut = _Bare()
        p = dut.m_axi
        slave = AxiReadSlave(p, bytes(1 << 14), rng=np.random.default_rng(0), ar_idle=0.999)

        async def bench(ctx):
            for name, v in (("arvalid", 1), ("araddr", 0x40), ("arsize", 3), ("arburst", 1)):
                ctx.set(getattr(p, name), v)
            await step(ctx, slave)
            ctx.set(getattr(p, change), 0 if change == "arvalid" else 0x80)
            with pytest.raises(AssertionError, match="before ARREADY"):
                await step(ctx, slave)

        _run(dut, bench)
