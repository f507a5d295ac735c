"""Host memory for co-simulation: an AXI4 slave RAM in Amaranth, and its Python back door.

:class:`AxiMemory` lives inside the simulated Verilog, so Verilator runs the accelerator and its
memory for many cycles without waking Python (cocotbext-axi's ``AxiRam`` wakes it every clock).
:class:`Backdoor` reads and writes the memory array directly through the simulator's VPI while
the bus is idle: loading weights, writing a prompt, reading results back.

The memory is a flat little-endian byte array, like ``AxiRam``: line ``i`` of the array holds
bytes ``i*W .. i*W+W-1`` (``W = data_width // 8``), byte ``j`` of a line in bits ``8*j+7 .. 8*j``.
"""

from __future__ import annotations

from amaranth import *
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from hw.axi import AxiReadLatency, AxiReadSignature, AxiSignature, AxiWriteSignature

__all__ = ["AxiMemory", "Backdoor", "OKAY", "SLVERR", "DECERR", "STORAGE", "STORAGE_MODULE",
           "storage_verilog"]

OKAY, SLVERR, DECERR = 0, 2, 3
INCR = 1
#: Name of the array in the generated Verilog (in the module of :class:`AxiMemory`), which
#: :meth:`Backdoor.find` looks for.
STORAGE = "storage"
_AR_QUEUE = 16
#: Verilog module of the array when ``AxiMemory(..., verilog_storage=True)``.
STORAGE_MODULE = "speqmoe_hostmem_storage"


def storage_verilog() -> str:
    """The Verilog of :data:`STORAGE_MODULE`: one array ``storage``, a synchronous read port
    (``ren`` loads ``rdata``; a read of a line written in the same cycle gives the old data, as
    Amaranth's non-transparent read port does) and a write port with byte enables ``wen``.

    Written by hand because Amaranth zeroes a memory with one ``initial`` statement per line,
    which makes a host memory of megabytes take many minutes to convert; this array has no
    ``initial`` block (Verilator starts it at zero, Icarus at X).
    """
    return f"""
module {STORAGE_MODULE} #(parameter WIDTH = 256, parameter DEPTH = 1024, parameter ABITS = 10) (
  input  wire                 clk,
  input  wire [ABITS-1:0]     raddr,
  input  wire                 ren,
  output reg  [WIDTH-1:0]     rdata,
  input  wire [ABITS-1:0]     waddr,
  input  wire [WIDTH/8-1:0]   wen,
  input  wire [WIDTH-1:0]     wdata
);
  reg [WIDTH-1:0] storage [0:DEPTH-1];
  integer i;
  always @(posedge clk) begin
    if (ren) rdata <= storage[raddr];
    for (i = 0; i < WIDTH / 8; i = i + 1)
      if (wen[i]) storage[waddr][8 * i +: 8] <= wdata[8 * i +: 8];
  end
endmodule
"""


class _VerilogStorage(wiring.Component):
    """The array as an instance of :data:`STORAGE_MODULE` (see :func:`storage_verilog`)."""

    def __init__(self, *, depth: int, width: int):
        self._depth, self._width = depth, width
        abits = ceil_log2(depth)
        super().__init__({
            "rd": Out(memory.ReadPort.Signature(addr_width=abits, shape=width)),
            "wr": Out(memory.WritePort.Signature(addr_width=abits, shape=width, granularity=8)),
        })

    def elaborate(self, platform):
        m = Module()
        abits = ceil_log2(self._depth)
        m.submodules.ram = Instance(
            STORAGE_MODULE, p_WIDTH=self._width, p_DEPTH=self._depth, p_ABITS=abits,
            i_clk=ClockSignal(), i_raddr=self.rd.addr, i_ren=self.rd.en, o_rdata=self.rd.data,
            i_waddr=self.wr.addr, i_wen=self.wr.en, i_wdata=self.wr.data)
        return m


def _check_int(name, value, low, high=None):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, not {value}")


def _forward(m, outer, inner, signature):
    """Join the slave port ``inner`` to the members of the slave port ``outer`` that
    ``signature`` (an AXI signature seen from the master) names."""
    for name, member in signature.members.items():
        if member.flow == Out:
            m.d.comb += getattr(inner, name).eq(getattr(outer, name))
        else:
            m.d.comb += getattr(outer, name).eq(getattr(inner, name))


def _burst_resp(m, *, addr, length, size, burst, shift, depth):
    """Response of a whole burst: SLVERR unless INCR of the full width, else DECERR if it
    reaches past ``depth`` lines, else OKAY. Returns (resp, first line)."""
    line = addr[shift:]
    resp = Signal(2, name="burst_resp")
    with m.If((burst != INCR) | (size != shift)):
        m.d.comb += resp.eq(SLVERR)
    with m.Elif(line + length + 1 > depth):
        m.d.comb += resp.eq(DECERR)
    with m.Else():
        m.d.comb += resp.eq(OKAY)
    return resp, line


class _BurstReader(wiring.Component):
    """Serves AXI4 read bursts from a memory read port, one burst at a time.

    Parameters
    ----------
    depth : int
        Lines of the memory.
    addr_width, data_width, id_width : int
        AXI widths.
    bandwidth : int
        Read bytes per cycle, 1..``data_width // 8``.

    Attributes
    ----------
    s : In(AxiReadSignature(addr_width, data_width, id_width))
        The read channels.
    rd : In(memory.ReadPort.Signature(addr_width=ceil_log2(depth), shape=data_width))
        A synchronous read port of the storage.

    ``arready`` is high when no beat of an accepted burst is left to issue; an AR taken in
    cycle ``c`` issues its first beat in the same cycle (read port address straight from
    ``araddr``), so the beat is offered from ``c + 1``. A beat is issued when the R register
    is empty or being emptied (``~rvalid | rready``) and the bandwidth credit allows it;
    with full bandwidth that is one beat per cycle, across bursts without a bubble. A beat
    is held, payload unchanged, while ``rready`` is low. Error beats return zero data.
    """

    def __init__(self, *, depth, addr_width, data_width, id_width, bandwidth):
        self._depth, self._bandwidth = depth, bandwidth
        self._shift = exact_log2(data_width // 8)
        super().__init__({
            "s": In(AxiReadSignature(addr_width=addr_width, data_width=data_width,
                                     id_width=id_width)),
            "rd": In(memory.ReadPort.Signature(addr_width=ceil_log2(depth), shape=data_width)),
        })

    def elaborate(self, platform):
        m = Module()
        s, rd = self.s, self.rd
        bus = len(s.rdata) // 8
        ar_resp, ar_line = _burst_resp(m, addr=s.araddr, length=s.arlen, size=s.arsize,
                                       burst=s.arburst, shift=self._shift, depth=self._depth)

        line = Signal.like(ar_line)        # the burst being issued
        left = Signal(range(257))
        rid = Signal.like(s.arid)
        resp = Signal(2)
        pending = Signal()
        m.d.comb += [pending.eq(left != 0), s.arready.eq(~pending)]

        # The beat issued this cycle comes from the burst in progress, or else straight from
        # the AR channel, so a new burst costs no cycle of its own.
        src_line = Signal.like(ar_line)
        src_left = Signal(range(257))
        src_id = Signal.like(s.arid)
        src_resp = Signal(2)
        with m.If(pending):
            m.d.comb += [src_line.eq(line), src_left.eq(left), src_id.eq(rid),
                         src_resp.eq(resp)]
        with m.Else():
            m.d.comb += [src_line.eq(ar_line), src_left.eq(s.arlen + 1), src_id.eq(s.arid),
                         src_resp.eq(ar_resp)]

        credit_ok = Signal()
        issue = Signal()
        m.d.comb += issue.eq((pending | s.arvalid) & (~s.rvalid | s.rready) & credit_ok)
        if self._bandwidth == bus:
            m.d.comb += credit_ok.eq(1)
        else:
            # Bandwidth limit: earn `bandwidth` bytes of credit a cycle, spend one line per beat.
            # Credit stops at one line + bandwidth - 1, so the long-run rate is exact and an
            # idle memory answers with at most one extra early beat.
            cap = bus + self._bandwidth - 1
            credit = Signal(range(cap + 1), init=cap)
            m.d.comb += credit_ok.eq(credit >= bus)
            with m.If(issue):
                m.d.sync += credit.eq(credit + self._bandwidth - bus)
            with m.Elif(credit + self._bandwidth > cap):
                m.d.sync += credit.eq(cap)
            with m.Else():
                m.d.sync += credit.eq(credit + self._bandwidth)

        m.d.comb += [rd.addr.eq(src_line), rd.en.eq(issue)]
        out_ok = Signal()
        m.d.comb += s.rdata.eq(Mux(out_ok, rd.data, 0))
        with m.If(issue):
            m.d.sync += [s.rvalid.eq(1), s.rid.eq(src_id), s.rresp.eq(src_resp),
                         s.rlast.eq(src_left == 1), out_ok.eq(src_resp == OKAY),
                         line.eq(src_line + 1), left.eq(src_left - 1), rid.eq(src_id),
                         resp.eq(src_resp)]
        with m.Else():
            with m.If(s.rready):
                m.d.sync += s.rvalid.eq(0)
            with m.If(~pending & s.arvalid):
                m.d.sync += [line.eq(ar_line), left.eq(s.arlen + 1), rid.eq(s.arid),
                             resp.eq(ar_resp)]
        return m


class _BurstWriter(wiring.Component):
    """Takes AXI4 write bursts into a memory write port, one burst at a time.

    Parameters
    ----------
    depth : int
        Lines of the memory.
    addr_width, data_width, id_width : int
        AXI widths.

    Attributes
    ----------
    s : In(AxiWriteSignature(addr_width, data_width, id_width))
        The write channels.
    wr : In(memory.WritePort.Signature(addr_width, shape=data_width, granularity=8))
        A write port of the storage (``addr_width = ceil_log2(depth)``) with one enable bit
        per byte.

    ``awready`` is high while no burst is in progress; from the cycle after the AW handshake
    ``wready`` is high until the burst's ``awlen + 1`` beats are taken (one a cycle, written
    under ``wstrb``; ``wlast`` is not looked at), then the B response is offered until
    ``bready``, and ``awready`` rises in the cycle after. A burst answered with an error
    writes nothing.
    """

    def __init__(self, *, depth, addr_width, data_width, id_width):
        self._depth = depth
        self._shift = exact_log2(data_width // 8)
        super().__init__({
            "s": In(AxiWriteSignature(addr_width=addr_width, data_width=data_width,
                                      id_width=id_width)),
            "wr": In(memory.WritePort.Signature(addr_width=ceil_log2(depth), shape=data_width,
                                                granularity=8)),
        })

    def elaborate(self, platform):
        m = Module()
        s, wr = self.s, self.wr
        aw_resp, aw_line = _burst_resp(m, addr=s.awaddr, length=s.awlen, size=s.awsize,
                                       burst=s.awburst, shift=self._shift, depth=self._depth)
        line = Signal.like(aw_line)
        left = Signal(range(257))
        m.d.comb += [wr.addr.eq(line), wr.data.eq(s.wdata)]
        with m.FSM():
            with m.State("ADDRESS"):
                m.d.comb += s.awready.eq(1)
                with m.If(s.awvalid):
                    m.d.sync += [line.eq(aw_line), left.eq(s.awlen + 1), s.bid.eq(s.awid),
                                 s.bresp.eq(aw_resp)]
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += s.wready.eq(1)
                with m.If(s.wvalid):
                    with m.If(s.bresp == OKAY):
                        m.d.comb += wr.en.eq(s.wstrb)
                    m.d.sync += [line.eq(line + 1), left.eq(left - 1)]
                    with m.If(left == 1):
                        m.next = "RESPONSE"
            with m.State("RESPONSE"):
                m.d.comb += s.bvalid.eq(1)
                with m.If(s.bready):
                    m.next = "ADDRESS"
        return m


class AxiMemory(wiring.Component):
    """AXI4 slave RAM for simulation, bit-compatible with cocotbext-axi's ``AxiRam``.

    Parameters
    ----------
    size : int
        Bytes, a positive multiple of ``data_width // 8`` (``W``), at most ``2**addr_width``;
        the array has ``size // W`` lines, all zero at the start of a simulation.
    data_width, addr_width, id_width : int
        AXI widths, as :class:`hw.axi.AxiSignature` accepts them.
    latency : int
        Extra cycles of read latency, >= 0.
    bandwidth : int or None
        Read bytes per cycle, 1..``W``; ``None`` is ``W`` (one beat per cycle).
    verilog_storage : bool
        Make the array an instance of the hand-written :data:`STORAGE_MODULE` (its Verilog is
        :func:`storage_verilog`, to be added to the design's sources) instead of an Amaranth
        ``Memory``: needed for memories of megabytes, which Amaranth converts in minutes. Only
        for Verilog simulation; cocotb reaches the array as ``<memory>.array.ram.storage``.

    Attributes
    ----------
    s : In(AxiSignature(addr_width, data_width, id_width))
        The slave port (``wiring.connect(m, accel.m_axi, mem.s)``); its Verilog ports are
        ``s__arvalid`` etc.

    The Verilog array is ``reg [data_width-1:0] storage [size/W-1:0]`` in this component's
    module: with the memory as the top, cocotb reaches it as ``dut.storage``; as submodule
    ``mem`` of a top, as ``dut.mem.storage`` (see :meth:`Backdoor.find`). Amaranth zeroes it
    in an ``initial`` block of one statement per line, which makes large memories slow to
    convert: 8k lines of 256 bits take about 5 s in ``amaranth.back.verilog``, 32k lines
    (1 MiB) about 40 s and 3 MB of Verilog.

    Reads take INCR bursts of full-width beats (``arsize = log2(W)``), ``arlen`` 0..255,
    answered in order with ``rid = arid``. The read path holds one burst being issued; with
    ``latency`` >= 1 an :class:`hw.axi.AxiReadLatency` in front of it lets up to
    ``max(16, latency + 2)`` more ARs wait, so bursts stay pipelined; with ``latency`` 0 the
    AR goes straight to the read path and ``arready`` is low while a burst has beats left to
    issue (it rises in the cycle after the last one is issued, as the last beat is offered).

    Latency: when the read path is idle and has credit, the first beat of an AR accepted in
    cycle ``c`` is offered (``rvalid``) in cycle ``c + latency + 1`` exactly. Throughput: a
    beat every ``W / bandwidth`` cycles on average (credit of ``bandwidth`` bytes a cycle,
    ``W`` spent per beat, capped at ``W + bandwidth - 1``); with full bandwidth one beat per
    cycle, back to back across bursts when the next AR is waiting. A beat is held unchanged
    while ``rready`` is low.

    Writes: one burst at a time. ``awready`` is high when idle; ``wready`` is high from the
    cycle after the AW handshake for ``awlen + 1`` beats, one per cycle, each written under
    its ``wstrb`` (``wlast`` is not checked); then B (``bid = awid``) is offered until
    ``bready`` and the next AW is taken from the following cycle. When the master never
    stalls, the B handshake of an ``n``-beat burst comes ``n + 1`` cycles after its AW
    handshake, and bursts follow each other every ``n + 2`` cycles.

    Errors, never a hang: a burst other than INCR or of a size other than the full width
    answers SLVERR on every beat (or in B); otherwise a burst that reaches past ``size``
    answers DECERR. Such read beats return zero data; such write bursts write nothing.
    Unaligned addresses are taken as the aligned line below. Bursts crossing a 4 KiB
    boundary are served as plain INCR bursts.

    In a four-state simulator (Icarus) the master must drive the AXI inputs from reset on:
    an ``arvalid`` left floating (Z) puts an X into the read path's registers (with
    ``latency`` >= 1, into the AR delay's counter) that no later cycle clears.
    """

    def __init__(self, *, size: int, data_width: int, addr_width: int, id_width: int = 4,
                 latency: int = 0, bandwidth: int | None = None,
                 verilog_storage: bool = False):
        _check_int("data_width", data_width, 32)
        _check_int("addr_width", addr_width, 13, 64)
        _check_int("id_width", id_width, 1)
        if data_width not in (32, 64, 128, 256, 512, 1024):
            raise ValueError(f"data_width must be 32..1024 bits, a power of two, not {data_width}")
        bus = data_width // 8
        _check_int("size", size, 1)
        if size % bus:
            raise ValueError(f"size must be a multiple of the {bus}-byte bus width, not {size}")
        if size > 1 << addr_width:
            raise ValueError(f"size {size} does not fit the {addr_width}-bit address space")
        _check_int("latency", latency, 0)
        if bandwidth is None:
            bandwidth = bus
        _check_int("bandwidth", bandwidth, 1, bus)
        self._size, self._data_width, self._addr_width = size, data_width, addr_width
        self._id_width, self._latency, self._bandwidth = id_width, latency, bandwidth
        self._verilog_storage = bool(verilog_storage)
        super().__init__({
            "s": In(AxiSignature(addr_width=addr_width, data_width=data_width,
                                 id_width=id_width)),
        })

    size = property(lambda self: self._size)
    data_width = property(lambda self: self._data_width)
    addr_width = property(lambda self: self._addr_width)
    id_width = property(lambda self: self._id_width)
    latency = property(lambda self: self._latency)
    bandwidth = property(lambda self: self._bandwidth)

    @property
    def line_bytes(self) -> int:
        """Bytes of one line (one beat): ``data_width // 8``."""
        return self._data_width // 8

    @property
    def depth(self) -> int:
        """Lines of the array."""
        return self._size // self.line_bytes

    @property
    def first_beat_cycles(self) -> int:
        """Cycles from an AR handshake to its first beat when the read path is idle."""
        return self._latency + 1

    def elaborate(self, platform):
        m = Module()
        widths = dict(addr_width=self._addr_width, data_width=self._data_width,
                      id_width=self._id_width)
        m.submodules.reader = reader = _BurstReader(depth=self.depth, bandwidth=self._bandwidth,
                                                    **widths)
        m.submodules.writer = writer = _BurstWriter(depth=self.depth, **widths)
        if self._verilog_storage:
            m.submodules.array = storage = _VerilogStorage(depth=self.depth,
                                                           width=self._data_width)
            wiring.connect(m, reader.rd, storage.rd)
            wiring.connect(m, writer.wr, storage.wr)
        else:
            m.submodules[STORAGE] = storage = memory.Memory(
                shape=self._data_width, depth=self.depth, init=[])
            wiring.connect(m, reader.rd, storage.read_port())
            wiring.connect(m, writer.wr, storage.write_port(granularity=8))

        if self._latency == 0:
            _forward(m, self.s, reader.s, AxiReadSignature(**widths))
        else:
            m.submodules.read_delay = delay = AxiReadLatency(
                latency=self._latency, depth=max(_AR_QUEUE, self._latency + 2), **widths)
            _forward(m, self.s, delay.s, AxiReadSignature(**widths))
            wiring.connect(m, delay.m, reader.s)
        _forward(m, self.s, writer.s, AxiWriteSignature(**widths))
        return m


class Backdoor:
    """Direct access from a cocotb test to the array of an :class:`AxiMemory`.

    Parameters
    ----------
    handle : cocotb.handle.ArrayObject
        The storage array, e.g. ``dut.storage`` or ``dut.mem.storage`` (see :meth:`find`).
    line_bytes : int
        Bytes of one line, ``data_width // 8`` of the memory.

    Addresses are byte addresses of the AXI port. Writes are immediate deposits
    (``handle[i].value = cocotb.handle.Immediate(x)``): a line reads back its new value at
    once, so two partial writes to one line in the same time step merge correctly. (A plain
    ``handle[i].value = x`` is applied only at the next ReadWrite phase, and a read before
    then returns the old value.) Both sides of the memory see one array: the clocked read
    port sees a back-door write from the next clock edge, and the back door sees an AXI
    write once its beat's clock edge has passed. Use it while the bus is idle; a line
    written through both in the same cycle ends with either value. :meth:`write` and
    :meth:`load` are not allowed in the ReadOnly phase (cocotb forbids writes there).

    The array starts at zero: Amaranth writes an ``initial`` block that zeroes every line
    (for Verilator and Icarus alike), so :meth:`load` may skip zero lines of a fresh memory.

    Measured speed (cocotb 2.1 on a shared 2-core machine; 256-bit lines on Verilator
    5.048, 128-bit lines on Icarus): whole-line writes and :meth:`load` about 250k lines/s
    on Verilator (8 MB/s; 170k lines/s on the first touch of a line, when cocotb makes its
    handle), 180k on Icarus; reads about 250k lines/s on Verilator, 330k on Icarus;
    partial-line writes about 90k/s; :meth:`load` with ``known_zero`` skips zero lines at
    about 3M lines/s.
    """

    def __init__(self, handle, line_bytes: int):
        _check_int("line_bytes", line_bytes, 1)
        try:
            depth, width = len(handle), len(handle[0])
        except (TypeError, IndexError, KeyError):
            raise TypeError(f"handle must be a cocotb handle of a memory array, "
                            f"not {handle!r}") from None
        if width != 8 * line_bytes:
            raise ValueError(f"{getattr(handle, '_path', handle)} has {width}-bit lines, "
                             f"not {8 * line_bytes} ({line_bytes} bytes)")
        from cocotb.handle import Immediate  # noqa: PLC0415 - only inside a simulation

        self._handle, self._line, self._depth = handle, line_bytes, depth
        self._immediate = Immediate

    @classmethod
    def find(cls, dut, line_bytes: int, *, name: str = STORAGE, max_depth: int = 3) -> Backdoor:
        """The back door of the array called ``name`` in ``dut`` or in the instances below it,
        nearest first (``dut.storage``, then ``dut.<instance>.storage``, ...), that has
        ``line_bytes``-byte lines. For a top holding the memory as submodule ``mem`` that is
        ``<top>.mem.storage``, on Verilator and on Icarus.

        Raises :class:`LookupError` naming the scopes searched when there is none.
        """
        scopes, searched = [dut], []
        for _ in range(max_depth + 1):
            below = []
            for scope in scopes:
                searched.append(scope._path)
                try:
                    handle = scope[name]
                    if len(handle[0]) == 8 * line_bytes:
                        return cls(handle, line_bytes)
                except (KeyError, TypeError, IndexError):
                    pass
                below += [c for c in scope if _is_scope(c)]
            scopes = below
            if not scopes:
                break
        raise LookupError(f"no memory array {name!r} with {8 * line_bytes}-bit lines in "
                          f"{', '.join(searched)}")

    @property
    def handle(self):
        """The cocotb handle of the array."""
        return self._handle

    @property
    def line_bytes(self) -> int:
        """Bytes of one line."""
        return self._line

    @property
    def depth(self) -> int:
        """Lines of the array."""
        return self._depth

    @property
    def size(self) -> int:
        """Bytes of the memory."""
        return self._depth * self._line

    def _check_range(self, addr, n):
        _check_int("addr", addr, 0)
        if addr + n > self.size:
            raise ValueError(f"{n} bytes at {addr:#x} reach past the end of the "
                             f"{self.size}-byte memory")

    def _get(self, i):
        return int(self._handle[i].value)

    def _set(self, i, value):
        self._handle[i].value = self._immediate(value)

    def read(self, addr: int, n: int) -> bytes:
        """``n`` bytes from byte address ``addr``."""
        _check_int("n", n, 0)
        self._check_range(addr, n)
        if n == 0:
            return b""
        first, last = addr // self._line, (addr + n - 1) // self._line
        out = bytearray()
        for i in range(first, last + 1):
            out += self._get(i).to_bytes(self._line, "little")
        skip = addr - first * self._line
        return bytes(out[skip:skip + n])

    def write(self, addr: int, data: bytes) -> None:
        """Write ``data`` at byte address ``addr``; the bytes of partly covered lines around
        it are kept (read-modify-write)."""
        data = memoryview(bytes(data))
        self._check_range(addr, len(data))
        w, pos, end = self._line, 0, len(data)
        while pos < end:
            i, off = divmod(addr + pos, w)
            take = min(w - off, end - pos)
            chunk = data[pos:pos + take]
            if take == w:
                self._set(i, int.from_bytes(chunk, "little"))
            else:
                line = bytearray(self._get(i).to_bytes(w, "little"))
                line[off:off + take] = chunk
                self._set(i, int.from_bytes(line, "little"))
            pos += take

    def load(self, image: bytes, base: int = 0, *, known_zero: bool = False) -> None:
        """Write a whole image at byte address ``base``, as :meth:`write` does.

        With ``known_zero`` the lines of ``image`` that are all zero are skipped, which is
        right only while the memory still holds zero there (a fresh memory does; see the
        class notes).
        """
        image = memoryview(bytes(image))
        self._check_range(base, len(image))
        w = self._line
        head = min(-base % w, len(image))
        if head:
            self.write(base, image[:head])
        body = (len(image) - head) // w * w
        i = (base + head) // w
        for pos in range(head, head + body, w):
            value = int.from_bytes(image[pos:pos + w], "little")
            if value or not known_zero:
                self._set(i, value)
            i += 1
        if head + body < len(image):
            self.write(base + head + body, image[head + body:])


def _is_scope(handle) -> bool:
    from cocotb.handle import HierarchyObject  # noqa: PLC0415 - only inside a simulation

    return isinstance(handle, HierarchyObject)
