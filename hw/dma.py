"""AXI4 read DMA: fills regions of an on-chip memory from host memory in INCR bursts.

A *fill* command ``{addr, beats, dest}`` asks for ``beats`` bus words starting at host
byte address ``addr`` to be written to consecutive on-chip words starting at ``dest``. The
engine splits the fill into INCR bursts that never cross a 4 KiB boundary and never exceed
``max_burst`` beats, keeps up to ``outstanding`` bursts in flight on the AR channel so that
the R channel stays busy, and writes every R beat to the on-chip memory through
:attr:`AxiReadDma.wr` in the cycle it arrives. When the last beat of a fill has arrived,
one ``done`` beat reports whether any beat of that fill came back with an ``RRESP`` error
(SLVERR or DECERR). Fills complete in command order; every burst of a fill is read even
after an error.

A *malformed* fill -- ``addr`` not aligned to the bus width, ``beats == 0``, or ``beats >
max_beats`` (when the ``beats`` field can hold such a value) -- issues no burst and writes
no word: it completes with ``done.error = 1``, in command order with the other fills, and
the engine goes on with the next command.

The AXI4 port uses the AXI signal names (``arvalid``, ``rdata``, ...) as the members of
:class:`AxiReadSignature`, so that the flattened Verilog ports of a component member
``m_axi`` are ``m_axi__arvalid`` etc. (cocotbext-axi finds them with
``AxiReadBus.from_prefix(dut, "m_axi", bus_separator="__")``).
"""

from amaranth import *
from amaranth.lib import data, fifo, stream, wiring
from amaranth.utils import exact_log2
from amaranth.lib.wiring import In, Out

from hw import refusing

__all__ = ["AXI_DATA_WIDTHS", "BOUNDARY", "AxiReadSignature", "BurstSplitter", "AxiReadDma",
           "burst_length", "split_bursts"]

AXI_DATA_WIDTHS = (64, 128, 256)
BOUNDARY = 4096


def burst_length(addr: int, beats: int, *, bus_bytes: int, max_burst: int) -> int:
    """Beats of the next burst of a fill at ``addr`` with ``beats`` left (reference model)."""
    to_boundary = (BOUNDARY - addr % BOUNDARY) // bus_bytes
    return min(beats, max_burst, to_boundary)


def split_bursts(addr: int, beats: int, *, bus_bytes: int, max_burst: int) -> list[tuple[int, int]]:
    """The ``(address, beats)`` bursts the DMA issues for one fill, in order."""
    addr -= addr % bus_bytes
    out = []
    while beats:
        n = burst_length(addr, beats, bus_bytes=bus_bytes, max_burst=max_burst)
        out.append((addr, n))
        addr += n * bus_bytes
        beats -= n
    return out


class AxiReadSignature(wiring.Signature):
    """AXI4 read channels (AR, R) seen from the master."""

    def __init__(self, *, addr_width: int, data_width: int, id_width: int = 1):
        self._addr_width, self._data_width, self._id_width = addr_width, data_width, id_width
        super().__init__({
            "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8),
            "arsize": Out(3), "arburst": Out(2), "arvalid": Out(1), "arready": In(1),
            "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
            "rvalid": In(1), "rready": Out(1),
        })

    addr_width = property(lambda self: self._addr_width)
    data_width = property(lambda self: self._data_width)
    id_width = property(lambda self: self._id_width)

    def __eq__(self, other):
        return (isinstance(other, AxiReadSignature) and other.addr_width == self.addr_width
                and other.data_width == self.data_width and other.id_width == self.id_width)

    def __repr__(self):
        return (f"AxiReadSignature(addr_width={self._addr_width}, "
                f"data_width={self._data_width}, id_width={self._id_width})")


class BurstSplitter(wiring.Component):
    """Length of the next burst: ``min(beats, max_burst, beats left before 4 KiB)``.

    Combinational. ``addr`` is a byte address aligned to ``bus_bytes``.
    """

    def __init__(self, *, addr_width: int, beats_width: int, bus_bytes: int, max_burst: int):
        self._bus_bytes, self._max_burst = bus_bytes, max_burst
        super().__init__({
            "addr": In(addr_width),
            "beats": In(beats_width),
            "length": Out(range(max_burst + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        shift = exact_log2(self._bus_bytes)
        page_beats = BOUNDARY // self._bus_bytes
        # Beats left in this 4 KiB page: page_beats - (beat index within the page).
        to_boundary = Signal(range(page_beats + 1))
        m.d.comb += to_boundary.eq(page_beats - self.addr[shift:12])
        limit = Signal(range(max(self._max_burst, page_beats) + 1))
        m.d.comb += limit.eq(Mux(to_boundary < self._max_burst, to_boundary, self._max_burst))
        m.d.comb += self.length.eq(Mux(self.beats < limit, self.beats, limit))
        return m


class AxiReadDma(wiring.Component):
    """AXI4 read engine writing fills into an on-chip memory.

    Parameters
    ----------
    addr_width : int
        AXI address width in bits (13..64).
    data_width : int
        AXI data width: 64, 128 or 256 bits. Also the on-chip memory word.
    max_burst : int
        Longest burst in beats, 1..256.
    outstanding : int
        Bursts that may be in flight (AR accepted or offered, last R beat not yet seen), >= 1.
    max_beats : int
        Longest fill in beats, >= 1 (sets the width of ``cmd.beats``).
    mem_addr_width : int
        Word address width of the on-chip memory, >= 1.

    Interfaces
    ----------
    cmd : In(stream)
        ``{addr, beats, dest}``. Accepted when the previous fill's bursts have all been
        issued and fewer than two fills are waiting for data or for their ``done`` beat.
    done : Out(stream)
        ``{error}``, one per fill, in command order. ``error`` is set when any beat of the
        fill returned an ``RRESP`` error, or when the fill was malformed: ``addr`` not
        aligned to the bus width, ``beats`` 0 or greater than ``max_beats``. A malformed
        fill touches neither the AXI bus nor the on-chip memory.
    wr : Out
        ``{en, addr, data}``: the memory write port (one word per R beat).
    m_axi : Out(AxiReadSignature)
        The AXI4 read master (``arid`` 0, ``arburst`` INCR, ``arsize`` the full bus width).
    busy : Out(1)
        A fill is being issued or waits for data.

    Throughput: one R beat per cycle while the slave delivers; one idle AR cycle per fill.
    """

    @refusing
    def __init__(self, *, addr_width: int = 32, data_width: int = 64, max_burst: int = 16,
                 outstanding: int = 4, max_beats: int = 4096, mem_addr_width: int = 12):
        if not isinstance(addr_width, int) or not 13 <= addr_width <= 64:
            raise ValueError(f"addr_width must be an integer in 13..64, not {addr_width!r}")
        if data_width not in AXI_DATA_WIDTHS:
            raise ValueError(f"data_width must be one of {AXI_DATA_WIDTHS}, not {data_width!r}")
        if not isinstance(max_burst, int) or not 1 <= max_burst <= 256:
            raise ValueError(f"max_burst must be an integer in 1..256, not {max_burst!r}")
        if not isinstance(outstanding, int) or outstanding < 1:
            raise ValueError(f"outstanding must be a positive integer, not {outstanding!r}")
        if not isinstance(max_beats, int) or max_beats < 1:
            raise ValueError(f"max_beats must be a positive integer, not {max_beats!r}")
        if not isinstance(mem_addr_width, int) or mem_addr_width < 1:
            raise ValueError(f"mem_addr_width must be a positive integer, not {mem_addr_width!r}")
        self._addr_width = addr_width
        self._data_width = data_width
        self._max_burst = max_burst
        self._outstanding = outstanding
        self._max_beats = max_beats
        self._mem_addr_width = mem_addr_width
        self.cmd_layout = data.StructLayout({
            "addr": addr_width, "beats": range(max_beats + 1), "dest": mem_addr_width})
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "done": Out(stream.Signature(data.StructLayout({"error": 1}))),
            "wr": Out(wiring.Signature({"en": Out(1), "addr": Out(mem_addr_width),
                                        "data": Out(data_width)})),
            "m_axi": Out(AxiReadSignature(addr_width=addr_width, data_width=data_width)),
            "busy": Out(1),
        })

    addr_width = property(lambda self: self._addr_width)
    data_width = property(lambda self: self._data_width)
    bus_bytes = property(lambda self: self._data_width // 8)
    max_burst = property(lambda self: self._max_burst)
    outstanding = property(lambda self: self._outstanding)
    max_beats = property(lambda self: self._max_beats)
    mem_addr_width = property(lambda self: self._mem_addr_width)

    def elaborate(self, platform):
        m = Module()
        axi = self.m_axi
        shift = exact_log2(self.bus_bytes)
        beats_shape = self.cmd_layout["beats"].shape

        # Fills whose bursts are issued but whose data has not all arrived.
        # ``bad``: a malformed fill, which issues no burst and only reports done.error=1.
        info_layout = data.StructLayout({"beats": beats_shape, "dest": self._mem_addr_width,
                                         "bad": 1})
        m.submodules.info = info = fifo.SyncFIFO(width=info_layout.size, depth=2)
        info_w = data.View(info_layout, info.w_data)
        info_r = data.View(info_layout, info.r_data)

        # -- AR side: split the current fill into bursts --------------------------------
        a_busy = Signal()
        a_addr = Signal(self._addr_width)
        a_beats = Signal(beats_shape)
        arvalid = Signal()
        pending = Signal(range(self._outstanding + 1))

        m.submodules.splitter = splitter = BurstSplitter(
            addr_width=self._addr_width, beats_width=len(a_beats), bus_bytes=self.bus_bytes,
            max_burst=self._max_burst)
        m.d.comb += [splitter.addr.eq(a_addr), splitter.beats.eq(a_beats)]
        blen = splitter.length

        r_fire = Signal()
        r_last_fire = Signal()
        m.d.comb += [
            r_fire.eq(axi.rvalid & axi.rready),
            r_last_fire.eq(r_fire & axi.rlast),
            axi.arvalid.eq(arvalid),
            axi.arid.eq(0),
            axi.arsize.eq(shift),
            axi.arburst.eq(1),
        ]
        issue = Signal()
        m.d.comb += issue.eq(a_busy & (~arvalid | axi.arready) & (pending < self._outstanding))
        m.d.sync += pending.eq(pending + issue - r_last_fire)
        with m.If(arvalid & axi.arready):
            m.d.sync += arvalid.eq(0)
        with m.If(issue):
            m.d.sync += [
                arvalid.eq(1),
                axi.araddr.eq(a_addr),
                axi.arlen.eq(blen - 1),
                a_addr.eq(a_addr + (blen << shift)),
                a_beats.eq(a_beats - blen),
            ]
            with m.If(a_beats == blen):
                m.d.sync += a_busy.eq(0)

        cmd_beats = self.cmd.payload.beats
        cmd_bad = Signal()
        m.d.comb += cmd_bad.eq(self.cmd.payload.addr[:shift].any() | (cmd_beats == 0)
                               | (cmd_beats > self._max_beats))
        m.d.comb += [
            self.cmd.ready.eq(~a_busy & info.w_rdy),
            info.w_en.eq(self.cmd.valid & self.cmd.ready),
            info_w.beats.eq(cmd_beats),
            info_w.dest.eq(self.cmd.payload.dest),
            info_w.bad.eq(cmd_bad),
        ]
        with m.If(self.cmd.valid & self.cmd.ready & ~cmd_bad):
            m.d.sync += [
                a_busy.eq(1),
                a_addr.eq(self.cmd.payload.addr),
                a_beats.eq(cmd_beats),
            ]

        # -- R side: write beats to memory, report each fill --------------------------
        r_active = Signal()
        r_dest = Signal(self._mem_addr_width)
        r_beats = Signal(beats_shape)
        r_error = Signal()
        r_bad = Signal()
        last_beat = Signal()
        m.d.comb += [
            r_bad.eq(axi.rresp[1]),
            last_beat.eq(r_beats == 1),
            axi.rready.eq(r_active & ~(self.done.valid & last_beat)),
            self.wr.en.eq(r_fire),
            self.wr.addr.eq(r_dest),
            self.wr.data.eq(axi.rdata),
        ]
        with m.If(self.done.valid & self.done.ready):
            m.d.sync += self.done.valid.eq(0)
        with m.If(r_fire):
            m.d.sync += [r_dest.eq(r_dest + 1), r_beats.eq(r_beats - 1),
                         r_error.eq(r_error | r_bad)]
            with m.If(last_beat):
                m.d.sync += [r_active.eq(0), self.done.valid.eq(1),
                             self.done.payload.error.eq(r_error | r_bad)]
        # The next fill: a good one starts receiving as the previous one's last beat
        # arrives; a malformed one reports done.error=1 once the R side is idle and the
        # done register is free (so its done beat follows the previous fill's).
        with m.If(info.r_rdy & ~info_r.bad & (~r_active | (r_fire & last_beat))):
            m.d.comb += info.r_en.eq(1)
            m.d.sync += [r_active.eq(1), r_dest.eq(info_r.dest), r_beats.eq(info_r.beats),
                         r_error.eq(0)]
        with m.If(info.r_rdy & info_r.bad & ~r_active & (~self.done.valid | self.done.ready)):
            m.d.comb += info.r_en.eq(1)
            m.d.sync += [self.done.valid.eq(1), self.done.payload.error.eq(1)]

        m.d.comb += self.busy.eq(a_busy | r_active | info.r_rdy | self.done.valid)
        return m
