"""AXI4 and AXI4-Lite interface signatures, seen from the master.

Members carry the AXI signal names, so the flattened Verilog ports of a component member
``m_axi`` are ``m_axi__awvalid`` etc. (cocotbext-axi finds them with
``AxiBus.from_prefix(dut, "m_axi", bus_separator="__")``). The read half is
:class:`hw.dma.AxiReadSignature`.
"""

from amaranth import *
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hw import refusing
from hw.dma import AxiReadSignature

__all__ = ["AxiReadSignature", "AxiWriteSignature", "AxiSignature", "AxiLiteSignature",
           "AxiReadArbiter", "AxiReadLatency"]


def _check_widths(addr_width, data_width, id_width):
    if not isinstance(addr_width, int) or not 13 <= addr_width <= 64:
        raise ValueError(f"addr_width must be an integer in 13..64, not {addr_width!r}")
    if data_width not in (32, 64, 128, 256, 512, 1024):
        raise ValueError(f"data_width must be 32..1024 bits, a power of two, not {data_width!r}")
    if not isinstance(id_width, int) or id_width < 1:
        raise ValueError(f"id_width must be a positive integer, not {id_width!r}")


def _write_members(addr_width, data_width, id_width):
    return {
        "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3),
        "awburst": Out(2), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
    }


class AxiWriteSignature(wiring.Signature):
    """AXI4 write channels (AW, W, B) seen from the master."""

    def __init__(self, *, addr_width: int, data_width: int, id_width: int = 1):
        _check_widths(addr_width, data_width, id_width)
        self._addr_width, self._data_width, self._id_width = addr_width, data_width, id_width
        super().__init__(_write_members(addr_width, data_width, id_width))

    addr_width = property(lambda self: self._addr_width)
    data_width = property(lambda self: self._data_width)
    id_width = property(lambda self: self._id_width)

    def __eq__(self, other):
        return (isinstance(other, AxiWriteSignature) and other.addr_width == self.addr_width
                and other.data_width == self.data_width and other.id_width == self.id_width)

    def __repr__(self):
        return (f"AxiWriteSignature(addr_width={self._addr_width}, "
                f"data_width={self._data_width}, id_width={self._id_width})")


class AxiSignature(wiring.Signature):
    """A full AXI4 master: the read channels of :class:`AxiReadSignature` and the write
    channels of :class:`AxiWriteSignature` under one prefix."""

    def __init__(self, *, addr_width: int, data_width: int, id_width: int = 1):
        _check_widths(addr_width, data_width, id_width)
        self._addr_width, self._data_width, self._id_width = addr_width, data_width, id_width
        members = dict(AxiReadSignature(addr_width=addr_width, data_width=data_width,
                                        id_width=id_width).members.items())
        members.update(_write_members(addr_width, data_width, id_width))
        super().__init__(members)

    addr_width = property(lambda self: self._addr_width)
    data_width = property(lambda self: self._data_width)
    id_width = property(lambda self: self._id_width)

    def __eq__(self, other):
        return (isinstance(other, AxiSignature) and other.addr_width == self.addr_width
                and other.data_width == self.data_width and other.id_width == self.id_width)

    def __repr__(self):
        return (f"AxiSignature(addr_width={self._addr_width}, "
                f"data_width={self._data_width}, id_width={self._id_width})")


class AxiLiteSignature(wiring.Signature):
    """AXI4-Lite (32-bit data) seen from the master; a slave uses ``In(AxiLiteSignature(..))``."""

    def __init__(self, *, addr_width: int = 12):
        if not isinstance(addr_width, int) or not 2 < addr_width <= 32:
            raise ValueError(f"addr_width must be an integer in 3..32, not {addr_width!r}")
        self._addr_width = addr_width
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })

    addr_width = property(lambda self: self._addr_width)

    def __eq__(self, other):
        return isinstance(other, AxiLiteSignature) and other.addr_width == self.addr_width

    def __repr__(self):
        return f"AxiLiteSignature(addr_width={self._addr_width})"


_AR_FIELDS = ("arid", "araddr", "arlen", "arsize", "arburst")
_R_FIELDS = ("rdata", "rresp", "rlast")


def _check_positive(name, value, low=1):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, not {value}")


class AxiReadArbiter(wiring.Component):
    """Shares one AXI4 read master among ``sources`` read masters.

    Parameters
    ----------
    sources : int
        Read masters, >= 1.
    addr_width, data_width, id_width : int
        The AXI widths of every source port; ``m`` has ``id_width + ceil_log2(sources)``
        ID bits.

    Attributes
    ----------
    s0, s1, ... : In(AxiReadSignature(addr_width, data_width, id_width))
        One slave port per source (connect the source's master port with
        ``wiring.connect``).
    m : Out(AxiReadSignature(addr_width, data_width, id_width + ceil_log2(sources)))
        The shared master port. ``m.arid = Cat(source arid, source index)``.
    low : In(sources)
        Bit ``i`` demotes source ``i`` below every source whose bit is clear.

    AR: fixed priority among the sources offering an AR: the lowest index among those
    whose ``low`` bit is clear, else the lowest index among the others. One register
    stage: an AR accepted from a source in cycle ``c`` (``s{i}.arready``, which is
    ``grant & (~m.arvalid | m.arready)``, combinational) is offered on ``m`` from cycle
    ``c + 1``, held unchanged until ``m.arready``; the next grant loads the register in
    the same cycle, so one AR per cycle passes without bubbles. ``m.ar*`` come from
    registers.

    R: combinational. The high ID bits of ``m.rid`` select the source, which sees the
    beat with ``rid`` the low bits; ``m.rready`` is that source's ``rready``.
    """

    @refusing
    def __init__(self, *, sources: int, addr_width: int, data_width: int, id_width: int):
        _check_positive("sources", sources)
        for name, v in (("addr_width", addr_width), ("data_width", data_width),
                        ("id_width", id_width)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{name} must be an integer, not {type(v).__name__}")
        _check_widths(addr_width, data_width, id_width)
        self._sources = sources
        self._addr_width, self._data_width, self._id_width = addr_width, data_width, id_width
        self._index_width = ceil_log2(sources)
        sig = AxiReadSignature(addr_width=addr_width, data_width=data_width, id_width=id_width)
        members = {f"s{i}": In(sig) for i in range(sources)}
        members["m"] = Out(AxiReadSignature(addr_width=addr_width, data_width=data_width,
                                            id_width=id_width + self._index_width))
        members["low"] = In(sources)
        super().__init__(members)

    sources = property(lambda self: self._sources)
    addr_width = property(lambda self: self._addr_width)
    data_width = property(lambda self: self._data_width)
    id_width = property(lambda self: self._id_width)
    index_width = property(lambda self: self._index_width)

    def source(self, i: int):
        """The slave port of source ``i``."""
        return getattr(self, f"s{i}")

    def elaborate(self, platform):
        m = Module()
        n = self._sources
        ports = [self.source(i) for i in range(n)]
        mp = self.m

        valid = Cat(p.arvalid for p in ports)
        req_hi = Signal(n)
        req_lo = Signal(n)
        m.d.comb += [req_hi.eq(valid & ~self.low), req_lo.eq(valid & self.low)]
        grant = Signal(range(max(n, 2)))
        for req in (req_lo, req_hi):
            for i in reversed(range(n)):
                with m.If(req[i]):
                    m.d.comb += grant.eq(i)

        load = Signal()
        m.d.comb += load.eq(~mp.arvalid | mp.arready)
        for i, p in enumerate(ports):
            m.d.comb += p.arready.eq(load & (grant == i))
        with m.If(load):
            m.d.sync += mp.arvalid.eq(valid.any())
            with m.Switch(grant):
                for i, p in enumerate(ports):
                    with m.Case(i):
                        m.d.sync += [mp.araddr.eq(p.araddr), mp.arlen.eq(p.arlen),
                                     mp.arsize.eq(p.arsize), mp.arburst.eq(p.arburst),
                                     mp.arid.eq(Cat(p.arid, C(i, self._index_width)))]

        source = mp.rid[self._id_width:]
        for i, p in enumerate(ports):
            m.d.comb += [p.rvalid.eq(mp.rvalid & (source == i) if n > 1 else mp.rvalid),
                         p.rid.eq(mp.rid[:self._id_width])]
            m.d.comb += [getattr(p, f).eq(getattr(mp, f)) for f in _R_FIELDS]
        if n > 1:
            with m.Switch(source):
                for i, p in enumerate(ports):
                    with m.Case(i):
                        m.d.comb += mp.rready.eq(p.rready)
        else:
            m.d.comb += mp.rready.eq(ports[0].rready)
        return m


class AxiReadLatency(wiring.Component):
    """Test-harness delay of AXI4 read requests: makes a slave that answers at once (and
    serves one burst at a time, like cocotbext-axi's ``AxiRam``) look like a memory with
    ``latency`` cycles of read latency whose bursts stay pipelined.

    Parameters
    ----------
    latency : int
        Cycles, >= 0, an AR waits between its acceptance on ``s`` and its offer on ``m``.
    addr_width, data_width, id_width : int
        AXI widths of both ports.
    depth : int
        ARs that may wait, >= 1.

    Attributes
    ----------
    s : In(AxiReadSignature(addr_width, data_width, id_width))
        Slave port, for the master under test.
    m : Out(AxiReadSignature(addr_width, data_width, id_width))
        Master port, to the memory model.

    An AR accepted on ``s`` in cycle ``c`` is offered on ``m`` from cycle
    ``c + max(latency, 1)`` (later if earlier ARs wait for ``m.arready``), in order,
    held until ``m.arready``. ``s.arready`` is high while fewer than ``depth`` ARs wait.
    With ``latency`` 0 the AR path is a plain pass-through with one register stage (a
    FIFO), one AR per cycle. R passes through combinationally.
    """

    @refusing
    def __init__(self, *, latency: int, addr_width: int, data_width: int, id_width: int,
                 depth: int = 16):
        _check_positive("latency", latency, 0)
        _check_positive("depth", depth)
        for name, v in (("addr_width", addr_width), ("data_width", data_width),
                        ("id_width", id_width)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{name} must be an integer, not {type(v).__name__}")
        _check_widths(addr_width, data_width, id_width)
        self._latency, self._depth = latency, depth
        self._addr_width, self._data_width, self._id_width = addr_width, data_width, id_width
        sig = AxiReadSignature(addr_width=addr_width, data_width=data_width, id_width=id_width)
        super().__init__({"s": In(sig), "m": Out(sig)})

    latency = property(lambda self: self._latency)
    depth = property(lambda self: self._depth)
    addr_width = property(lambda self: self._addr_width)
    data_width = property(lambda self: self._data_width)
    id_width = property(lambda self: self._id_width)

    def elaborate(self, platform):
        m = Module()
        s, mp = self.s, self.m
        layout = data.StructLayout({f: len(getattr(s, f)) for f in _AR_FIELDS})
        m.submodules.queue = q = fifo.SyncFIFO(width=layout.size, depth=self._depth)
        w, r = data.View(layout, q.w_data), data.View(layout, q.r_data)
        accept = Signal()
        m.d.comb += [
            s.arready.eq(q.w_rdy),
            accept.eq(s.arvalid & q.w_rdy),
            q.w_en.eq(s.arvalid),
        ]
        m.d.comb += [getattr(w, f).eq(getattr(s, f)) for f in _AR_FIELDS]
        m.d.comb += [getattr(mp, f).eq(getattr(r, f)) for f in _AR_FIELDS]

        ripe = Signal()
        if self._latency == 0:
            m.d.comb += ripe.eq(1)
        else:
            delay = Signal(self._latency)
            m.d.sync += delay.eq(Cat(accept, delay[:-1]))
            ripe_count = Signal(range(self._depth + 1))
            pop = Signal()
            m.d.comb += [pop.eq(mp.arvalid & mp.arready),
                         ripe.eq((ripe_count != 0) | delay[-1])]
            m.d.sync += ripe_count.eq(ripe_count + delay[-1] - pop)
        m.d.comb += [mp.arvalid.eq(q.r_rdy & ripe), q.r_en.eq(mp.arvalid & mp.arready)]

        m.d.comb += [getattr(s, f).eq(getattr(mp, f)) for f in ("rid", "rvalid") + _R_FIELDS]
        m.d.comb += mp.rready.eq(s.rready)
        return m
