"""Host memory for co-simulation (sim.hostmem): AxiMemory in the Amaranth simulator against a
byte-array mirror, its back door on a stand-in array, and both on Verilator and Icarus
through cocotb with cocotbext-axi's AxiMaster."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In
from amaranth.sim import Simulator

from golden.seed import base_seed
from hw.axi import AxiSignature
from sim.amaranth_axi import AxiReadMasterDriver, until
from sim.hostmem import DECERR, OKAY, SLVERR, STORAGE, AxiMemory, Backdoor
from sim.runner import lint_verilog, run_cocotb, simulator_missing, write_verilog

# Constructors that reject their parameters leave Elaboratables behind.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

BUILD = Path(__file__).resolve().parent.parent / "build" / "tests" / "hostmem"


def _mem(**kw):
    args = dict(size=1 << 14, data_width=64, addr_width=16, id_width=3)
    args.update(kw)
    return AxiMemory(**args)


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


class _WriteMaster:
    """AXI4 write master for the memory's slave port. Bursts queued with :meth:`write` go out
    in order: AW at once, then the W beats of each accepted AW (with random gaps, a beat once
    offered is held), B accepted with random stalls."""

    def __init__(self, port, *, rng, w_gap=0.0, b_stall=0.0):
        self.port, self.rng, self.w_gap, self.b_stall = port, rng, w_gap, b_stall
        self.bus_bytes = len(port.wdata) // 8
        self.responses: list[tuple[int, int]] = []
        self.aw_cycles: list[int] = []
        self.b_cycles: list[int] = []
        self.cycle = 0
        self._aw = deque()
        self._w = deque()
        self._queued = 0
        self._w_offered = False
        self._bready = False

    def write(self, addr, beats, *, awid=0, burst=1, size=None):
        """Queue a burst of ``beats``, a list of (wdata, wstrb)."""
        size = (self.bus_bytes - 1).bit_length() if size is None else size
        self._aw.append((awid, addr, list(beats), burst, size))
        self._queued += 1

    @property
    def done(self):
        return len(self.responses) == self._queued

    def drive(self, ctx):
        p = self.port
        awid, addr, beats, burst, size = self._aw[0] if self._aw else (0, 0, [None], 1, 0)
        ctx.set(p.awvalid, bool(self._aw))
        for name, v in (("awid", awid), ("awaddr", addr), ("awlen", len(beats) - 1),
                        ("awsize", size), ("awburst", burst)):
            ctx.set(getattr(p, name), v)
        offer = bool(self._w) and (self._w_offered or self.rng.random() >= self.w_gap)
        self._w_offered = offer
        ctx.set(p.wvalid, offer)
        if offer:
            beats, i = self._w[0]
            ctx.set(p.wdata, beats[i][0])
            ctx.set(p.wstrb, beats[i][1])
            ctx.set(p.wlast, i == len(beats) - 1)
        self._bready = self.rng.random() >= self.b_stall
        ctx.set(p.bready, self._bready)

    def sample(self, ctx):
        p = self.port
        if self._bready and ctx.get(p.bvalid):
            self.responses.append((ctx.get(p.bid), ctx.get(p.bresp)))
            self.b_cycles.append(self.cycle)
        if self._w_offered and ctx.get(p.wready):
            self._w_offered = False
            self._w[0][1] += 1
            if self._w[0][1] == len(self._w[0][0]):
                self._w.popleft()
        if self._aw and ctx.get(p.awready):
            self._w.append([self._aw.popleft()[2], 0])
            self.aw_cycles.append(self.cycle)
        self.cycle += 1


class _HoldCheck:
    """Asserts that an R beat offered without ``rready`` is offered again unchanged."""

    def __init__(self, port):
        self.port, self.held = port, None

    def drive(self, ctx):
        pass

    def sample(self, ctx):
        p = self.port
        valid = ctx.get(p.rvalid)
        beat = tuple(ctx.get(getattr(p, n)) for n in ("rid", "rdata", "rresp", "rlast"))
        if self.held is not None:
            assert valid and beat == self.held, f"R beat {self.held} changed to {beat}"
        self.held = beat if valid and not ctx.get(p.rready) else None


class _ArOverride:
    """Sends AR number ``k`` of ``master`` with the (arburst, arsize) of ``fields[k]``."""

    def __init__(self, master, fields):
        self.master, self.fields = master, fields

    def drive(self, ctx):
        k = len(self.master.bursts)
        if k in self.fields:
            ctx.set(self.master.port.arburst, self.fields[k][0])
            ctx.set(self.master.port.arsize, self.fields[k][1])

    def sample(self, ctx):
        pass


def _random_beats(rng, n, bus):
    """``n`` random (wdata, wstrb), a third of them with every strobe set."""
    full = (1 << bus) - 1
    beats = []
    for _ in range(n):
        strb = int.from_bytes(rng.bytes(max(bus // 8, 1)), "little") & full
        beats.append((int.from_bytes(rng.bytes(bus), "little"),
                      full if rng.random() < 0.3 else strb))
    return beats


def _apply(mirror, addr, beats, bus):
    base = addr - addr % bus
    for i, (data, strb) in enumerate(beats):
        raw = data.to_bytes(bus, "little")
        for j in range(bus):
            if strb >> j & 1:
                mirror[base + i * bus + j] = raw[j]


def _words(mirror, addr, n, bus):
    base = addr - addr % bus
    return [int.from_bytes(mirror[base + i * bus:base + (i + 1) * bus], "little")
            for i in range(n)]



# --- read and write data against a mirror ----------------------------------------------

@pytest.mark.parametrize("data_width,latency,bandwidth", [
    (64, 0, None), (64, 3, None), (128, 1, 7), (32, 2, 2)])
def test_random_strobed_writes_and_reads_match_a_byte_mirror(rng, data_width, latency, bandwidth):
    dut = _mem(data_width=data_width, latency=latency, bandwidth=bandwidth)
    bus, size = dut.line_bytes, dut.size
    mirror = bytearray(size)
    wm = _WriteMaster(dut.s, rng=rng, w_gap=0.3, b_stall=0.3)
    rm = AxiReadMasterDriver(dut.s, rng=rng, ar_gap=0.3, r_stall=0.3)
    models = [wm, rm, _HoldCheck(dut.s)]
    awids = []

    def write_some(n, lo, hi):
        for _ in range(n):
            beats = int(rng.integers(1, 17))
            addr = int(rng.integers(lo // bus, hi // bus - beats + 1)) * bus
            data = _random_beats(rng, beats, bus)
            awids.append(int(rng.integers(0, 8)))
            wm.write(addr, data, awid=awids[-1])
            _apply(mirror, addr, data, bus)

    def read_some(n, lo, hi):
        for _ in range(n):
            beats = int(rng.integers(1, 17))
            addr = int(rng.integers(lo // bus, hi // bus - beats + 1)) * bus
            rm.read(addr + int(rng.integers(0, bus)) * (rng.random() < 0.2), beats,
                    arid=int(rng.integers(0, 8)))

    def check_reads(first, mem):
        """The beats of the bursts accepted from number ``first`` on, against ``mem``."""
        skip = sum(n for _, _, n in rm.bursts[:first])
        expect = [(arid, w, OKAY, int(i == n - 1)) for arid, addr, n in rm.bursts[first:]
                  for i, w in enumerate(_words(mem, addr, n, bus))]
        assert rm.beats[skip:] == expect

    async def bench(ctx):
        for _ in range(2):
            write_some(12, 0, size)
            await until(ctx, models, lambda: wm.done)
            first = len(rm.bursts)
            read_some(12, 0, size)
            await until(ctx, models, lambda: rm.done)
            check_reads(first, mirror)
        # Reads of one half while the other half is written.
        first = len(rm.bursts)
        read_some(12, 0, size // 2)
        write_some(12, size // 2, size)
        await until(ctx, models, lambda: rm.done and wm.done)
        check_reads(first, mirror)
        first = len(rm.bursts)
        read_some(12, size // 2, size)
        await until(ctx, models, lambda: rm.done)
        check_reads(first, mirror)

    _run(dut, bench)
    assert wm.responses == [(awid, OKAY) for awid in awids]


def test_write_response_echoes_awid_and_a_burst_takes_beats_plus_two_cycles(rng):
    dut = _mem()
    wm = _WriteMaster(dut.s, rng=rng)
    rm = AxiReadMasterDriver(dut.s, rng=rng)
    data = _random_beats(rng, 16, 8)
    wm.write(0x100, data, awid=5)
    wm.write(0x800, data[:1], awid=2)

    async def bench(ctx):
        await until(ctx, [wm], lambda: wm.done)
        rm.read(0x100, 16, arid=6)
        await until(ctx, [rm], lambda: rm.done)

    _run(dut, bench)
    assert wm.responses == [(5, OKAY), (2, OKAY)]
    # AW, 16 W beats back to back, B: the B handshake 17 cycles after the AW handshake.
    assert wm.b_cycles[0] - wm.aw_cycles[0] == 16 + 1
    # The next AW is taken in the cycle after the B handshake.
    assert wm.aw_cycles[1] == wm.b_cycles[0] + 1
    mirror = bytearray(dut.size)
    _apply(mirror, 0x100, data, 8)
    words = _words(mirror, 0x100, 16, 8)
    assert rm.beats == [(6, w, OKAY, int(i == 15)) for i, w in enumerate(words)]


# --- timing -----------------------------------------------------------------------------

def _beat_cycles(dut, bursts, *, r_pattern=None):
    """Cycles of the AR handshakes and of the R beats accepted for ``bursts``, (addr, beats)."""
    rm = AxiReadMasterDriver(dut.s, rng=np.random.default_rng(0))
    for k, (addr, n) in enumerate(bursts):
        rm.read(addr, n, arid=k % 8)
    ar, beats = [], []

    def each(ctx, cycle):
        if ctx.get(dut.s.arvalid) and ctx.get(dut.s.arready):
            ar.append(cycle)
        if ctx.get(dut.s.rvalid) and ctx.get(dut.s.rready):
            beats.append(cycle)

    async def bench(ctx):
        await until(ctx, [rm], lambda: rm.done, each=each)

    _run(dut, bench)
    return ar, beats


@pytest.mark.parametrize("latency", [0, 1, 2, 7])
def test_first_beat_arrives_exactly_latency_plus_one_cycles_after_ar(latency):
    for bandwidth in (None, 2):
        dut = _mem(latency=latency, bandwidth=bandwidth)
        ar, beats = _beat_cycles(dut, [(0x40, 4)])
        assert beats[0] - ar[0] == latency + 1 == dut.first_beat_cycles, (bandwidth, ar, beats)


@pytest.mark.parametrize("bandwidth", [8, 4, 2, 3])
def test_bandwidth_spaces_the_beats_of_a_long_burst(bandwidth):
    dut = _mem(bandwidth=bandwidth)
    _, beats = _beat_cycles(dut, [(0x800, 256)])
    gaps = np.diff(beats)
    if 8 % bandwidth == 0:
        assert set(gaps.tolist()) == {8 // bandwidth}, gaps
    else:
        span = beats[-1] - beats[0]
        assert abs(span - 255 * 8 / bandwidth) <= 1, span
        assert set(gaps.tolist()) <= {2, 3}


@pytest.mark.parametrize("latency", [0, 3])
def test_back_to_back_bursts_leave_no_idle_cycle_at_full_bandwidth(rng, latency):
    dut = _mem(latency=latency)
    bursts = [(int(rng.integers(0, 1024)) * 8, int(rng.integers(1, 9))) for _ in range(12)]
    bursts[3:6] = [(0x100, 1), (0x200, 1), (0x300, 1)]
    ar, beats = _beat_cycles(dut, bursts)
    total = sum(n for _, n in bursts)
    assert beats == list(range(beats[0], beats[0] + total)), beats
    assert beats[0] - ar[0] == latency + 1


def test_rready_low_holds_the_beat(rng):
    dut = _mem(latency=1)
    p = dut.s
    mirror = bytearray(dut.size)
    wm = _WriteMaster(p, rng=rng)
    data = _random_beats(rng, 4, 8)
    wm.write(0x300, [(d, 0xFF) for d, _ in data])
    _apply(mirror, 0x300, [(d, 0xFF) for d, _ in data], 8)
    seen = []

    async def bench(ctx):
        await until(ctx, [wm], lambda: wm.done)
        ctx.set(p.rready, 0)
        ctx.set(p.arvalid, 1)
        ctx.set(p.araddr, 0x300)
        ctx.set(p.arlen, 3)
        ctx.set(p.arsize, 3)
        ctx.set(p.arburst, 1)
        ctx.set(p.arid, 4)
        await ctx.tick().until(p.arready)
        ctx.set(p.arvalid, 0)
        await ctx.tick().until(p.rvalid)
        for hold in (6, 0, 3, 1):
            for _ in range(hold):
                seen.append((ctx.get(p.rvalid), ctx.get(p.rdata), ctx.get(p.rlast)))
                await ctx.tick()
            ctx.set(p.rready, 1)
            seen.append((ctx.get(p.rvalid), ctx.get(p.rdata), ctx.get(p.rlast)))
            await ctx.tick()
            ctx.set(p.rready, 0)
        assert not ctx.get(p.rvalid)

    _run(dut, bench)
    words = _words(mirror, 0x300, 4, 8)
    expect = [(1, words[0], 0)] * 7 + [(1, words[1], 0)] + [(1, words[2], 0)] * 4 + \
        [(1, words[3], 1)] * 2
    assert seen == expect


# --- errors -----------------------------------------------------------------------------

def test_bursts_outside_the_memory_answer_decerr_and_write_nothing(rng):
    dut = _mem(latency=2)
    size = dut.size
    wm = _WriteMaster(dut.s, rng=rng)
    rm = AxiReadMasterDriver(dut.s, rng=rng)
    ones = [((1 << 64) - 1, 0xFF)] * 4
    wm.write(size - 16, ones, awid=1)           # the last two lines, then two past the end
    wm.write(size, ones[:1], awid=2)            # wholly past the end

    async def bench(ctx):
        await until(ctx, [wm], lambda: wm.done)
        rm.read(size - 24, 4, arid=1)           # one line past the end
        rm.read(size + 0x1000, 2, arid=2)
        rm.read(size - 16, 2, arid=3)           # untouched by the DECERR write
        await until(ctx, [rm], lambda: rm.done)
        wm.write(size - 32, ones, awid=3)       # the last four lines: fine
        await until(ctx, [wm], lambda: wm.done)
        rm.read(size - 32, 4, arid=4)
        await until(ctx, [rm], lambda: rm.done)

    _run(dut, bench)
    assert wm.responses == [(1, DECERR), (2, DECERR), (3, OKAY)]
    full = (1 << 64) - 1
    assert rm.beats == ([(1, 0, DECERR, 0)] * 3 + [(1, 0, DECERR, 1)] +
                        [(2, 0, DECERR, 0), (2, 0, DECERR, 1)] +
                        [(3, 0, OKAY, 0), (3, 0, OKAY, 1)] +
                        [(4, full, OKAY, 0)] * 3 + [(4, full, OKAY, 1)])


def test_non_incr_or_narrow_bursts_answer_slverr_and_the_memory_keeps_serving(rng):
    dut = _mem()
    wm = _WriteMaster(dut.s, rng=rng)
    rm = AxiReadMasterDriver(dut.s, rng=rng)
    ov = _ArOverride(rm, {1: (0, 3), 2: (2, 3), 3: (1, 2)})   # FIXED, WRAP, 4-byte beats
    data = [(0x1122334455667788, 0xFF), (0x99AABBCCDDEEFF00, 0xFF)]
    wm.write(0x40, data, awid=1)
    wm.write(0x80, data, awid=2, burst=0)
    wm.write(0x80, data, awid=3, burst=2)
    wm.write(0x80, data, awid=4, size=2)

    async def bench(ctx):
        await until(ctx, [wm], lambda: wm.done)
        for k in range(4):
            rm.read(0x40, 2, arid=k)
        rm.read(0x80, 2, arid=7)
        await until(ctx, [rm, ov], lambda: rm.done)

    _run(dut, bench)
    assert wm.responses == [(1, OKAY), (2, SLVERR), (3, SLVERR), (4, SLVERR)]
    words = [d for d, _ in data]
    assert rm.beats == ([(0, words[0], OKAY, 0), (0, words[1], OKAY, 1)] +
                        [b for k in (1, 2, 3) for b in ((k, 0, SLVERR, 0), (k, 0, SLVERR, 1))] +
                        [(7, 0, OKAY, 0), (7, 0, OKAY, 1)])


def test_bad_parameters_are_rejected():
    for bad in (dict(size=0), dict(size=1004), dict(size=1 << 17), dict(latency=-1),
                dict(bandwidth=0), dict(bandwidth=9), dict(data_width=48),
                dict(addr_width=8), dict(id_width=0)):
        with pytest.raises(ValueError):
            _mem(**bad)
    for bad in (dict(size=4096.0), dict(bandwidth="8"), dict(latency=True)):
        with pytest.raises(TypeError):
            _mem(**bad)


@pytest.mark.parametrize("kw", [dict(latency=0), dict(latency=4, bandwidth=5),
                                dict(data_width=256, bandwidth=8)])
def test_generated_verilog_is_lint_clean(kw):
    reason = simulator_missing("verilator")
    if reason:
        pytest.skip(reason)
    path = write_verilog(_mem(**kw), "axi_memory", BUILD / "lint" / "axi_memory.v")
    clean, output = lint_verilog(path, "axi_memory")
    assert clean, output[-3000:]
    assert "reg [%d:0] storage [" % (kw.get("data_width", 64) - 1) in path.read_text()


# --- the back door on a stand-in array ----------------------------------------------------

class _Line:
    def __init__(self, array, i):
        self.array, self.i = array, i

    def __len__(self):
        return self.array.width

    @property
    def value(self):
        return self.array.lines[self.i]

    @value.setter
    def value(self, v):
        from cocotb.handle import Immediate

        assert isinstance(v, Immediate), "the back door must write with Immediate"
        assert 0 <= v.value < 1 << self.array.width
        self.array.lines[self.i] = v.value
        self.array.writes += 1


class _Array:
    """Stands in for a cocotb ArrayObject of ``depth`` lines of ``width`` bits."""

    def __init__(self, depth, width):
        self.width, self.lines, self.writes = width, [0] * depth, 0

    def __len__(self):
        return len(self.lines)

    def __getitem__(self, i):
        if not 0 <= i < len(self.lines):
            raise IndexError(i)
        return _Line(self, i)


def test_back_door_reads_and_writes_bytes_at_any_alignment(rng):
    array = _Array(64, 128)
    bd = Backdoor(array, 16)
    mirror = bytearray(bd.size)
    image = bytearray(rng.bytes(700))
    image[100:300] = bytes(200)
    bd.load(image, 5)
    mirror[5:705] = image
    for _ in range(200):
        addr = int(rng.integers(0, bd.size))
        n = int(rng.integers(0, min(50, bd.size - addr) + 1))
        data = rng.bytes(n)
        bd.write(addr, data)
        mirror[addr:addr + n] = data
        addr = int(rng.integers(0, bd.size))
        n = int(rng.integers(0, bd.size - addr + 1))
        assert bd.read(addr, n) == mirror[addr:addr + n]
    # Two partial writes to one line within one step both land.
    bd.write(33, b"\x01\x02")
    bd.write(36, b"\x03")
    mirror[33:35], mirror[36] = b"\x01\x02", 3
    assert bd.read(0, bd.size) == mirror
    assert [int.from_bytes(mirror[16 * i:16 * i + 16], "little") for i in range(64)] == array.lines


def test_back_door_load_skips_zero_lines_only_when_told():
    array = _Array(8, 64)
    bd = Backdoor(array, 8)
    image = bytes(8) * 3 + b"\x01" * 8 + bytes(8)
    bd.load(image)
    assert array.writes == 5
    bd.load(image, known_zero=True)
    assert array.writes == 6
    assert bd.read(0, 40) == image


def test_back_door_rejects_bad_arguments():
    bd = Backdoor(_Array(4, 64), 8)
    for call in (lambda: bd.read(30, 4), lambda: bd.write(-1, b"x"),
                 lambda: bd.load(bytes(33)), lambda: Backdoor(_Array(4, 64), 16)):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(TypeError):
        Backdoor(object(), 8)


# --- cocotb with cocotbext-axi's AxiMaster -------------------------------------------------

class _Top(wiring.Component):
    """The memory as submodule ``mem`` with its port passed through, as in a co-simulation top."""

    def __init__(self, **kw):
        self._kw = kw
        super().__init__({"s": In(AxiSignature(addr_width=kw["addr_width"],
                                               data_width=kw["data_width"], id_width=4))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = AxiMemory(**self._kw)
        wiring.connect(m, wiring.flipped(self.s), mem.s)
        return m


@pytest.mark.parametrize("simulator,kw", [
    ("verilator", dict(size=1 << 18, data_width=256, latency=2)),
    ("icarus", dict(size=1 << 15, data_width=128, latency=0, bandwidth=8))])
@pytest.mark.slow
def test_axi_master_and_back_door_agree_in_cocotb(simulator, kw):
    reason = simulator_missing(simulator)
    if reason:
        pytest.skip(reason)
    build = BUILD / f"{simulator}_{kw['data_width']}"
    v = write_verilog(_Top(addr_width=32, **kw), "hostmem_top", build / "hostmem_top.v")
    stats = build / "stats.json"
    result = run_cocotb(simulator=simulator, verilog_path=v, toplevel="hostmem_top",
                        test_module="sim.tb_hostmem", build_dir=build,
                        public=[("hostmem_top__mem", STORAGE)],
                        extra_env={"HOSTMEM_OPS": "60", "HOSTMEM_STATS": str(stats),
                                   "SPEQMOE_SEED": str(base_seed())})
    assert result.tests == 1 and result.failed == 0
    measured = json.loads(stats.read_text())
    print(f"{simulator} back door: {measured}")
    assert measured["handle"] == "hostmem_top.mem.storage"
