"""Register maps (validation, Markdown, JSON) and the AXI4-Lite CSR slave in the Amaranth
simulator, driven by sim.amaranth_axi.AxiLiteMasterDriver."""

from __future__ import annotations

import json

import pytest
from amaranth.sim import Simulator

from hw.csr import AxiLiteCsr, Field, Register, RegisterMap
from sim.amaranth_axi import OKAY, SLVERR, AxiLiteMasterDriver

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

REGS = RegisterMap([
    Register("CTRL", 0x00, "rw", "control", (Field("en", 0, 1, "enable"),
                                             Field("mode", 4, 3, "mode"))),
    Register("STATUS", 0x04, "ro", "status", (Field("busy", 0, 1, "busy"),)),
    Register("PUSH", 0x08, "wo", "command push"),
    Register("SCRATCH", 0x10, "rw", "scratch word"),
    Register("ID", 0x1C, "ro", "identification"),
    Register("CLEAR", 0x20, "wo", "clear errors"),
])
RO = {"STATUS": 0x5A5A_0001, "ID": 0xC0DE_0042}
UNMAPPED = (0x0C, 0x14, 0x18, 0x24, 0xFFC)


def _mask(strb):
    return sum(0xFF << 8 * i for i in range(4) if strb >> i & 1)


class _Ports:
    """Drives the ``ro`` inputs (a constant or a function of the cycle); records ``wo``
    pulses as (cycle, register, data) and the cycles in which an AR is accepted."""

    def __init__(self, dut, ro=RO):
        self.dut, self.ro, self.cycle, self.pulses = dut, ro, 0, []
        self.ar_accepted = []     # cycles in which an AR was accepted

    def drive(self, ctx):
        for name, value in self.ro.items():
            ctx.set(getattr(self.dut, name), value(self.cycle) if callable(value) else value)

    def sample(self, ctx):
        for r in self.dut.regmap:
            if r.access == "wo" and ctx.get(getattr(self.dut, r.name).stb):
                self.pulses.append((self.cycle, r.name, ctx.get(getattr(self.dut, r.name).data)))
        if ctx.get(self.dut.s_axil.arvalid) and ctx.get(self.dut.s_axil.arready):
            self.ar_accepted.append(self.cycle)
        self.cycle += 1


def _simulate(dut, host, ports, *, max_cycles=5000, after=None):
    """Run until ``host`` is done (plus 2 cycles); returns the cycles taken."""
    cycles = []

    async def bench(ctx):
        n = 0
        while not host.done:
            n += 1
            if n > max_cycles:
                raise AssertionError(f"CSR hung: {len(host.writes)} writes, {len(host.reads)} reads done")
            for x in (host, ports):
                x.drive(ctx)
            for x in (host, ports):
                x.sample(ctx)
            await ctx.tick()
        cycles.append(n)
        for _ in range(2):
            ports.drive(ctx)
            ports.sample(ctx)
            await ctx.tick()
        if after is not None:
            after(ctx)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return cycles[0]


# --- register map ----------------------------------------------------------------------

@pytest.mark.parametrize("make,match", [
    (lambda: [Register("A", 0, "rw", ""), Register("B", 0, "ro", "")], "share offset"),
    (lambda: [Register("A", 0, "rw", ""), Register("A", 4, "ro", "")], "two registers named"),
    (lambda: [Register("A", 6, "rw", "")], "multiple of 4"),
    (lambda: [Register("A", -4, "rw", "")], "multiple of 4"),
    (lambda: [Register("A", 0, "rx", "")], "access"),
    (lambda: [Register("A", 0, "rw", "", (Field("x", 0, 4), Field("y", 3, 2)))], "overlaps"),
    (lambda: [Register("A", 0, "rw", "", (Field("x", 0, 1), Field("x", 1, 1)))], "two fields"),
    (lambda: [Register("A", 0, "rw", "", (Field("x", 30, 3),))], "inside bits"),
    (lambda: [Register("A", 0, "rw", "", (Field("x", 0, 0),))], "width >= 1"),
    (lambda: [Register("1A", 0, "rw", "")], "identifier"),
    (lambda: [Register("a-b", 0, "rw", "")], "identifier"),
    (lambda: [Register("class", 0, "rw", "")], "identifier"),
    (lambda: [Register("_x", 0, "rw", "")], "identifier"),
])
def test_register_map_rejects_invalid_descriptions(make, match):
    with pytest.raises(ValueError, match=match):
        RegisterMap(make())


def test_register_map_rejects_wrong_types():
    with pytest.raises(TypeError):
        RegisterMap(["CTRL"])
    with pytest.raises(TypeError):
        Register("A", "0", "rw", "")
    with pytest.raises(TypeError):
        Register("A", 0, "rw", "", (("x", 0, 1),))
    with pytest.raises(TypeError):
        AxiLiteCsr([Register("A", 0, "rw", "")])


def test_csr_rejects_maps_it_cannot_address_or_name():
    with pytest.raises(ValueError, match="spans"):
        AxiLiteCsr(RegisterMap([Register("A", 0x1000, "rw", "")]), addr_width=12)
    with pytest.raises(ValueError, match="clashes"):
        AxiLiteCsr(RegisterMap([Register("s_axil", 0, "rw", "")]))
    with pytest.raises(ValueError, match="clashes"):
        AxiLiteCsr(RegisterMap([Register("regmap", 0, "rw", "")]))
    with pytest.raises(ValueError):
        AxiLiteCsr(REGS, addr_width=2)


def test_markdown_lists_every_register_with_offset_access_and_fields():
    text = REGS.markdown("Test CSRs")
    assert text.startswith("## Test CSRs\n")
    rows = [line for line in text.splitlines() if line.startswith("| `0x")]
    assert len(rows) == len(REGS)
    for r, row in zip(sorted(REGS, key=lambda r: r.offset), rows):
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert cells[:3] == [f"`0x{r.offset:03X}`", f"`{r.name}`", r.access]
        assert cells[4] == r.doc
        for f in r.fields:
            assert f"`{f.name}` {f.bits}: {f.doc}" in cells[3]
    assert "`mode` [6:4]: mode" in text and "`en` [0]: enable" in text


def test_as_dict_is_json_and_describes_every_register_and_field():
    d = json.loads(json.dumps(REGS.as_dict()))
    assert [r["name"] for r in d["registers"]] == [r.name for r in REGS]
    ctrl = d["registers"][0]
    assert ctrl == {"name": "CTRL", "offset": 0, "access": "rw", "doc": "control",
                    "fields": [{"name": "en", "lsb": 0, "width": 1, "doc": "enable"},
                               {"name": "mode", "lsb": 4, "width": 3, "doc": "mode"}]}


# --- the AXI4-Lite slave ---------------------------------------------------------------

def test_csr_reads_and_writes_each_access_type():
    dut = AxiLiteCsr(REGS)
    host = AxiLiteMasterDriver(dut.s_axil)
    ports = _Ports(dut)
    host.write(0x00, 0x0000_0071)
    host.write(0x10, 0xDEAD_BEEF)
    host.write(0x08, 0x1234_5678)
    for addr in (0x00, 0x04, 0x08, 0x10, 0x1C, 0x20):
        host.read(addr, ar_delay=12)

    def after(ctx):
        assert ctx.get(dut.CTRL) == 0x71 and ctx.get(dut.SCRATCH) == 0xDEAD_BEEF

    _simulate(dut, host, ports, after=after)
    assert host.writes == [(0x00, OKAY), (0x10, OKAY), (0x08, OKAY)]
    assert host.reads == [(0x00, 0x71, OKAY), (0x04, RO["STATUS"], OKAY), (0x08, 0, OKAY),
                          (0x10, 0xDEAD_BEEF, OKAY), (0x1C, RO["ID"], OKAY), (0x20, 0, OKAY)]
    assert [(n, d) for _, n, d in ports.pulses] == [("PUSH", 0x1234_5678)]


def test_csr_write_honours_wstrb_on_rw_and_wo_registers():
    dut = AxiLiteCsr(REGS)
    host = AxiLiteMasterDriver(dut.s_axil)
    ports = _Ports(dut)
    host.write(0x10, 0xFFFF_FFFF)
    host.write(0x10, 0x1122_3344, strb=0b0101)
    host.write(0x00, 0xAABB_CCDD, strb=0b1000)
    host.write(0x08, 0x1122_3344, strb=0b0110)
    host.write(0x20, 0x5566_7788, strb=0)
    host.read(0x10, ar_delay=20)
    host.read(0x00)

    def after(ctx):
        assert ctx.get(dut.SCRATCH) == 0xFF22_FF44 and ctx.get(dut.CTRL) == 0xAA00_0000

    _simulate(dut, host, ports, after=after)
    assert [r[1] for r in host.reads] == [0xFF22_FF44, 0xAA00_0000]
    assert [(n, d) for _, n, d in ports.pulses] == [("PUSH", 0x0022_3300), ("CLEAR", 0)]


def test_csr_answers_slverr_for_ro_and_unmapped_writes_and_unmapped_reads():
    dut = AxiLiteCsr(REGS)
    host = AxiLiteMasterDriver(dut.s_axil)
    ports = _Ports(dut)
    host.write(0x00, 0x33)
    for addr in (0x04, 0x1C) + UNMAPPED:
        host.write(addr, 0xFFFF_FFFF)
    for addr in UNMAPPED:
        host.read(addr, ar_delay=30)
    host.read(0x00)
    host.read(0x04)

    def after(ctx):
        assert ctx.get(dut.CTRL) == 0x33 and ctx.get(dut.SCRATCH) == 0

    _simulate(dut, host, ports, after=after)
    assert host.writes == [(0x00, OKAY)] + [(a, SLVERR) for a in (0x04, 0x1C) + UNMAPPED]
    assert host.reads == [(a, 0, SLVERR) for a in UNMAPPED] + [(0x00, 0x33, OKAY),
                                                                (0x04, RO["STATUS"], OKAY)]
    assert ports.pulses == []


@pytest.mark.parametrize("aw_delay,w_delay", [(0, 0), (3, 0), (0, 3), (1, 6), (6, 1)])
def test_csr_accepts_aw_and_w_in_either_order(aw_delay, w_delay):
    dut = AxiLiteCsr(REGS)
    host = AxiLiteMasterDriver(dut.s_axil)
    ports = _Ports(dut)
    host.write(0x10, 0x0BAD_F00D, aw_delay=aw_delay, w_delay=w_delay)
    host.write(0x08, 0x0000_0777, aw_delay=aw_delay, w_delay=w_delay)
    host.write(0x04, 0x1, aw_delay=aw_delay, w_delay=w_delay)
    host.write(0x00, 0x0000_0011, aw_delay=w_delay, w_delay=aw_delay)
    host.read(0x10, ar_delay=60)
    _simulate(dut, host, ports)
    assert host.writes == [(0x10, OKAY), (0x08, OKAY), (0x04, SLVERR), (0x00, OKAY)]
    assert host.reads == [(0x10, 0x0BAD_F00D, OKAY)]
    # Write 1: both halves present in cycle M, B accepted in M + 1. Write 2 starts in
    # M + 2, both halves present in 2M + 2, stb high in 2M + 3.
    big = max(aw_delay, w_delay)
    assert ports.pulses == [(2 * big + 3, "PUSH", 0x777)]


def test_csr_runs_back_to_back_reads_and_writes_at_one_per_two_cycles():
    dut = AxiLiteCsr(REGS)
    host = AxiLiteMasterDriver(dut.s_axil)
    ports = _Ports(dut)
    for i in range(20):
        host.write(0x10, i * 0x0101_0101)
        host.read(0x04)
    cycles = _simulate(dut, host, ports)
    assert cycles == 40
    assert host.writes == [(0x10, OKAY)] * 20
    assert host.reads == [(0x04, RO["STATUS"], OKAY)] * 20


def test_csr_read_returns_the_value_of_the_cycle_its_ar_is_accepted(rng):
    dut = AxiLiteCsr(REGS)
    host = AxiLiteMasterDriver(dut.s_axil, rng=rng, resp_stall=0.5)
    ports = _Ports(dut, ro={"STATUS": lambda c: 1000 + c, "ID": 7})
    for d in rng.integers(0, 4, 15):
        host.read(0x04, ar_delay=int(d))
    _simulate(dut, host, ports)
    assert len(ports.ar_accepted) == 15
    assert [d for _, d, _ in host.reads] == [1000 + c for c in ports.ar_accepted]


def test_csr_matches_a_reference_model_under_random_traffic(rng):
    dut = AxiLiteCsr(REGS)
    host = AxiLiteMasterDriver(dut.s_axil, rng=rng, resp_stall=0.3)
    ports = _Ports(dut)
    addrs = [r.offset for r in REGS] + list(UNMAPPED)
    rw = {r.offset: 0 for r in REGS if r.access == "rw"}
    wo = {r.offset: r.name for r in REGS if r.access == "wo"}
    want_writes, want_pulses = [], []
    for _ in range(60):
        addr = addrs[int(rng.integers(0, len(addrs)))]
        data, strb = int(rng.integers(0, 1 << 32)), int(rng.integers(0, 16))
        host.write(addr, data, strb, aw_delay=int(rng.integers(0, 4)),
                   w_delay=int(rng.integers(0, 4)))
        ok = addr in rw or addr in wo
        want_writes.append((addr, OKAY if ok else SLVERR))
        if addr in rw:
            rw[addr] = (rw[addr] & ~_mask(strb)) | (data & _mask(strb))
        elif addr in wo:
            want_pulses.append((wo[addr], data & _mask(strb)))
    # Reads of registers whose value does not depend on the writes run alongside them.
    steady = [a for a in addrs if a not in rw]
    want_reads = []
    for _ in range(60):
        addr = steady[int(rng.integers(0, len(steady)))]
        host.read(addr, ar_delay=int(rng.integers(0, 3)))
        r = next((r for r in REGS if r.offset == addr), None)
        want_reads.append((addr, RO.get(r.name, 0) if r else 0, OKAY if r else SLVERR))
    final = {}

    def after(ctx):
        for r in REGS:
            if r.access == "rw":
                final[r.offset] = ctx.get(getattr(dut, r.name))

    _simulate(dut, host, ports, after=after)
    assert host.writes == want_writes
    assert host.reads == want_reads
    assert [(n, d) for _, n, d in ports.pulses] == want_pulses
    assert final == rw
