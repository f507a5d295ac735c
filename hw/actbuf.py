"""Activation buffer: 4 tokens x ``k_max`` FP16 activations, loaded over AXI, streamed to the array.

The buffer holds one memory per token, ``ceil(k_max / P)`` lines of ``16 P`` bits (one bus
word, ``W = 2 P`` bytes): line ``i`` of token ``t`` holds ``k = i P .. i P + P - 1`` as
little-endian 16-bit lanes, exactly the bytes of host memory at ``addr + t * stride + i W``.

- A *load* (``LOAD_ACTS``) reads ``ceil(K / P)`` lines per token from host memory straight
  into the token memories (:class:`ActLoader`).
- A *read* (one per ``MATMUL``) streams ``tiles * K`` activation beats, ``tiles`` repeats of
  ``k = 0 .. K-1``, each beat the four tokens' values at one ``k`` (:class:`ActStreamer`);
  with an interleave ``G`` the tiles run in groups of ``G`` and each ``k``'s beat repeats
  ``G`` times in a row.

Loads and reads never overlap: each waits until the other has finished, a pending load
going first.
"""

from amaranth import *
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from hw import refuse
from hw.dma import AxiReadSignature, BurstSplitter

__all__ = ["TOKENS", "ActLoader", "ActStreamer", "ActBuffer", "check_pes"]

TOKENS = 4


def _check_int(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        span = f">= {low}" if high is None else f"in {low}..{high}"
        return f"{name} must be an integer {span}, not {value!r}"
    return None


def check_pes(rows, cols):
    """``P = rows * cols`` if the shape gives an AXI bus of ``16 P`` bits (``P`` in 4, 8 .. 64),
    else a ``ValueError`` message (returned as a string)."""
    problem = _check_int("rows", rows, 1) or _check_int("cols", cols, 1)
    if problem:
        return None, problem
    p = rows * cols
    if p not in (4, 8, 16, 32, 64):
        return None, (f"rows * cols must be 4, 8, 16, 32 or 64 (a bus of 16 * P = 64..1024 "
                      f"bits, a power of two), not {p}")
    return p, None


def _check_interleave(interleave):
    if isinstance(interleave, bool) or interleave not in (1, 2, 4):
        return f"interleave must be 1, 2 or 4, not {interleave!r}"
    return None


def load_layout(k_max: int, addr_width: int) -> data.StructLayout:
    return data.StructLayout({"tokens": 3, "k": range(k_max + 1), "addr": addr_width,
                              "stride": addr_width})


def read_layout(k_max: int, tiles_width: int) -> data.StructLayout:
    return data.StructLayout({"k": range(k_max + 1), "tiles": tiles_width})


DONE_LAYOUT = data.StructLayout({"error": 1})


class ActLoader(wiring.Component):
    """Load engine: one ``load`` command -> AXI INCR read bursts -> token-memory writes.

    Token ``t < tokens`` reads ``ceil(K / P)`` lines from ``addr + t * stride`` (both multiples
    of ``W``; the low address bits are ignored) in bursts of at most ``max_burst`` beats that
    never cross a 4 KiB boundary, up to ``outstanding`` bursts in flight. ``rready`` is
    always high: each R beat is written to its token memory in the cycle it arrives.

    Throughput: one R beat per cycle while the slave delivers, one AR burst per cycle.
    Latency: the first AR is offered 2 cycles after ``load`` is accepted; ``done`` is valid
    the cycle after the last R beat.

    Parameters
    ----------
    pes : int
        ``P``; the bus carries ``16 P`` bits.
    k_max : int
        Largest ``K``.
    addr_width : int
        AXI address width, 13..64.
    max_burst : int
        Longest burst in beats, 1..256.
    outstanding : int
        Bursts in flight (AR offered or accepted, last R beat not yet arrived), >= 1.

    Members
    -------
    load : In(stream.Signature(StructLayout({"tokens": 3, "k": range(k_max + 1),
            "addr": addr_width, "stride": addr_width})))
        Accepted when idle and ``hold`` is low. ``tokens`` above 4 count as 4; ``tokens`` or
        ``K`` of 0 complete at once without a transfer.
    done : Out(stream.Signature(StructLayout({"error": 1})))
        One per load after its last R beat; ``error`` if any ``RRESP`` was not 0 (every burst
        is still read). The loader stays busy until it is taken.
    m_axi : Out(AxiReadSignature(addr_width, 16 P, id_width=1))
    wr : Out(Signature({"en", "token": 2, "line", "data": 16 P}))
        Token-memory write port.
    hold : In(1)
        Refuse new loads.
    busy : Out(1)
    """

    def __init__(self, *, pes: int, k_max: int, addr_width: int = 32, max_burst: int = 16,
                 outstanding: int = 4):
        problem = (_check_int("pes", pes, 4) or _check_int("k_max", k_max, 1)
                   or _check_int("addr_width", addr_width, 13, 64)
                   or _check_int("max_burst", max_burst, 1, 256)
                   or _check_int("outstanding", outstanding, 1))
        if not problem and pes not in (4, 8, 16, 32, 64):
            problem = f"pes must be 4, 8, 16, 32 or 64, not {pes}"
        if problem:
            refuse(self, problem)
        self._pes, self._k_max, self._addr_width = pes, k_max, addr_width
        self._max_burst, self._outstanding = max_burst, outstanding
        super().__init__({
            "load": In(stream.Signature(load_layout(k_max, addr_width))),
            "done": Out(stream.Signature(DONE_LAYOUT)),
            "m_axi": Out(AxiReadSignature(addr_width=addr_width, data_width=16 * pes)),
            "wr": Out(wiring.Signature({"en": Out(1), "token": Out(2),
                                        "line": Out(range(self.depth)),
                                        "data": Out(16 * pes)})),
            "hold": In(1),
            "busy": Out(1),
        })

    pes = property(lambda self: self._pes)
    k_max = property(lambda self: self._k_max)
    depth = property(lambda self: -(-self._k_max // self._pes))
    bus_bytes = property(lambda self: 2 * self._pes)
    max_burst = property(lambda self: self._max_burst)
    outstanding = property(lambda self: self._outstanding)

    def elaborate(self, platform):
        m = Module()
        axi, cmd = self.m_axi, self.load.payload
        shift = exact_log2(self.bus_bytes)
        aw = self._addr_width
        lines_shape = range(self.depth + 1)

        n_tok = Signal(range(TOKENS + 1))
        n_lines = Signal(lines_shape)
        stride = Signal(aw)
        a_busy = Signal()
        a_tok = Signal(2)
        a_base = Signal(aw)
        a_addr = Signal(aw)
        a_left = Signal(lines_shape)
        arvalid = Signal()
        pending = Signal(range(self._outstanding + 1))
        r_busy = Signal()
        r_tok = Signal(2)
        r_line = Signal(range(self.depth))
        r_err = Signal()

        tokens = Signal(range(TOKENS + 1))
        lines = Signal(lines_shape)
        m.d.comb += [
            tokens.eq(Mux(cmd.tokens > TOKENS, TOKENS, cmd.tokens)),
            lines.eq((cmd.k + self._pes - 1) >> exact_log2(self._pes)),
            self.load.ready.eq(~a_busy & ~r_busy & ~self.done.valid & ~self.hold),
        ]
        align = ~Const(self.bus_bytes - 1, aw)
        with m.If(self.load.valid & self.load.ready):
            with m.If((tokens == 0) | (lines == 0)):
                m.d.sync += [self.done.valid.eq(1), self.done.payload.error.eq(0)]
            with m.Else():
                m.d.sync += [
                    n_tok.eq(tokens), n_lines.eq(lines), stride.eq(cmd.stride & align),
                    a_busy.eq(1), a_tok.eq(0), a_base.eq(cmd.addr & align),
                    a_addr.eq(cmd.addr & align), a_left.eq(lines),
                    r_busy.eq(1), r_tok.eq(0), r_line.eq(0), r_err.eq(0),
                ]

        m.submodules.splitter = splitter = BurstSplitter(
            addr_width=aw, beats_width=len(a_left), bus_bytes=self.bus_bytes,
            max_burst=self._max_burst)
        m.d.comb += [splitter.addr.eq(a_addr), splitter.beats.eq(a_left)]
        blen = splitter.length

        r_fire = Signal()
        issue = Signal()
        m.d.comb += [
            r_fire.eq(axi.rvalid & r_busy),
            axi.rready.eq(1),
            axi.arvalid.eq(arvalid),
            axi.arid.eq(0),
            axi.arsize.eq(shift),
            axi.arburst.eq(1),
            issue.eq(a_busy & (~arvalid | axi.arready) & (pending < self._outstanding)),
        ]
        m.d.sync += pending.eq(pending + issue - (r_fire & axi.rlast))
        with m.If(arvalid & axi.arready):
            m.d.sync += arvalid.eq(0)
        with m.If(issue):
            m.d.sync += [arvalid.eq(1), axi.araddr.eq(a_addr), axi.arlen.eq(blen - 1),
                         a_addr.eq(a_addr + (blen << shift)), a_left.eq(a_left - blen)]
            with m.If(a_left == blen):
                with m.If(a_tok == n_tok - 1):
                    m.d.sync += a_busy.eq(0)
                with m.Else():
                    m.d.sync += [a_tok.eq(a_tok + 1), a_base.eq(a_base + stride),
                                 a_addr.eq(a_base + stride), a_left.eq(n_lines)]

        bad = axi.rresp.any()
        m.d.comb += [self.wr.en.eq(r_fire), self.wr.token.eq(r_tok),
                     self.wr.line.eq(r_line), self.wr.data.eq(axi.rdata)]
        with m.If(r_fire):
            m.d.sync += [r_err.eq(r_err | bad), r_line.eq(r_line + 1)]
            with m.If(r_line == n_lines - 1):
                m.d.sync += [r_line.eq(0), r_tok.eq(r_tok + 1)]
                with m.If(r_tok == n_tok - 1):
                    m.d.sync += [r_busy.eq(0), self.done.valid.eq(1),
                                 self.done.payload.error.eq(r_err | bad)]
        with m.If(self.done.valid & self.done.ready):
            m.d.sync += self.done.valid.eq(0)

        m.d.comb += self.busy.eq(a_busy | r_busy | self.done.valid)
        return m


class ActStreamer(wiring.Component):
    """Read engine: one ``read`` command -> ``tiles * K`` activation beats.

    Beat ``(tile, k)`` is the ``k``-th 16-bit lane group of line ``k // P`` of each token
    memory. With ``interleave = G`` the tiles run in groups of ``G``, k-major: each ``k``'s
    beat is given ``G`` times in a row (once per tile of the group), ``tiles`` (a multiple of
    ``G``) counts every tile. The memories have a synchronous read port (one cycle); a 3-entry FIFO after the
    lane select hides that latency, so beats leave at one per cycle sustained, tile
    boundaries included, while ``acts.ready`` is high, and backpressure never loses a beat.

    Latency: the first beat is valid 3 cycles after ``read`` is accepted; with no
    backpressure the last one is valid ``tiles * K + 2`` cycles after it.

    Parameters
    ----------
    pes : int
        ``P``, activations per memory line (a power of two).
    k_max : int
        Largest ``K``.
    tiles_width : int
        Width of ``read.tiles``.
    interleave : int
        ``G``, 1, 2 or 4.

    Members
    -------
    read : In(stream.Signature(StructLayout({"k": range(k_max + 1), "tiles": tiles_width})))
        Accepted when the previous read's last beat has been taken and ``hold`` is low;
        ``K`` or ``tiles`` of 0 give no beat.
    acts : Out(stream.Signature(ArrayLayout(16, 4)))
    rd : Out(Signature({"en": 1, "addr": range(depth)}))
        Read port control shared by the four token memories.
    rd_data : In(ArrayLayout(16 P, 4))
        The four memories' read data, one cycle after ``rd.en``.
    hold : In(1)
        Refuse new reads.
    busy : Out(1)
    """

    FIFO_DEPTH = 3

    def __init__(self, *, pes: int, k_max: int, tiles_width: int = 16, interleave: int = 1):
        problem = (_check_int("pes", pes, 1) or _check_int("k_max", k_max, 1)
                   or _check_int("tiles_width", tiles_width, 1) or _check_interleave(interleave))
        if not problem and pes & (pes - 1):
            problem = f"pes must be a power of two, not {pes}"
        if problem:
            refuse(self, problem)
        self._pes, self._k_max, self._tiles_width = pes, k_max, tiles_width
        self._interleave = interleave
        super().__init__({
            "read": In(stream.Signature(read_layout(k_max, tiles_width))),
            "acts": Out(stream.Signature(data.ArrayLayout(16, TOKENS))),
            "rd": Out(wiring.Signature({"en": Out(1), "addr": Out(range(self.depth))})),
            "rd_data": In(data.ArrayLayout(16 * pes, TOKENS)),
            "hold": In(1),
            "busy": Out(1),
        })

    pes = property(lambda self: self._pes)
    k_max = property(lambda self: self._k_max)
    depth = property(lambda self: -(-self._k_max // self._pes))
    tiles_width = property(lambda self: self._tiles_width)
    interleave = property(lambda self: self._interleave)

    def elaborate(self, platform):
        m = Module()
        g = self._interleave
        lane_bits = exact_log2(self._pes)
        m.submodules.fifo = q = fifo.SyncFIFO(width=16 * TOKENS, depth=self.FIFO_DEPTH)

        s_busy = Signal()
        k_cnt = Signal(range(self._k_max))
        k_last = Signal(range(self._k_max))
        tiles_left = Signal(self._tiles_width)
        inflight = Signal()
        lane = Signal(max(lane_bits, 1))
        issue = Signal()

        cmd = self.read.payload
        m.d.comb += self.read.ready.eq(~self.busy & ~self.hold)
        rep = Signal(range(g))
        with m.If(self.read.valid & self.read.ready & (cmd.k != 0) & (cmd.tiles != 0)):
            m.d.sync += [s_busy.eq(1), k_cnt.eq(0), k_last.eq(cmd.k - 1), rep.eq(0),
                         tiles_left.eq(cmd.tiles >> exact_log2(g))]

        m.d.comb += [
            issue.eq(s_busy & (q.level + inflight < self.FIFO_DEPTH)),
            self.rd.en.eq(issue),
            self.rd.addr.eq(k_cnt >> lane_bits),
        ]
        m.d.sync += inflight.eq(issue)
        with m.If(issue):
            m.d.sync += lane.eq(k_cnt[:lane_bits] if lane_bits else 0)
            if g > 1:
                m.d.sync += rep.eq(rep + 1)
            with m.If(rep == g - 1):
                m.d.sync += [rep.eq(0), k_cnt.eq(k_cnt + 1)]
                with m.If(k_cnt == k_last):
                    m.d.sync += [k_cnt.eq(0), tiles_left.eq(tiles_left - 1)]
                    with m.If(tiles_left == 1):
                        m.d.sync += s_busy.eq(0)

        m.d.comb += [
            q.w_en.eq(inflight),
            q.w_data.eq(Cat(self.rd_data[t].word_select(lane, 16) for t in range(TOKENS))),
            self.acts.valid.eq(q.r_rdy),
            self.acts.payload.eq(q.r_data),
            q.r_en.eq(self.acts.ready),
            self.busy.eq(s_busy | inflight | q.r_rdy),
        ]
        return m


class ActBuffer(wiring.Component):
    """The activation buffer: 4 token memories, an AXI load engine and a beat streamer.

    Storage: four :class:`amaranth.lib.memory.Memory` s (one per token) of ``ceil(k_max / P)``
    lines of ``16 P`` bits, each with one synchronous write port (loads) and one synchronous
    read port (reads): block-RAM inferable.

    Throughput: loads take one R beat per cycle; reads give one ``acts`` beat per cycle
    (see :class:`ActLoader`, :class:`ActStreamer` for latencies).

    Parameters
    ----------
    rows, cols : int
        PE array shape; ``P = rows * cols`` must be 4, 8, 16, 32 or 64.
    k_max : int
        Largest ``K`` (activations per token), >= 1.
    addr_width : int
        AXI address width, 13..64.
    max_burst : int
        Longest AXI burst in beats, 1..256.
    outstanding : int
        Read bursts in flight, >= 1.
    tiles_width : int
        Width of ``read.tiles``, >= 1.
    interleave : int
        ``G``, 1, 2 or 4: reads give each ``k``'s beat ``G`` times (:class:`ActStreamer`).

    Members
    -------
    load : In(stream.Signature(StructLayout({"tokens": 3, "k": range(k_max + 1),
            "addr": addr_width, "stride": addr_width})))
        Read tokens ``0 .. tokens-1`` (``K`` FP16 each) from ``addr + t * stride``; ``addr`` and
        ``stride`` multiples of ``W = 2 P`` bytes (the caller checks). Tokens not loaded keep
        their values. Accepted when no load or read is in progress.
    load_done : Out(stream.Signature(StructLayout({"error": 1})))
        One per load after its last beat; ``error`` if any ``RRESP`` was not 0.
    read : In(stream.Signature(StructLayout({"k": range(k_max + 1), "tiles": tiles_width})))
        Accepted when the previous read has finished, no load is in progress and none is
        offered.
    acts : Out(stream.Signature(ArrayLayout(16, 4)))
        ``tiles * K`` beats, beat ``(tile, k)`` = ``(token0[k], .., token3[k])`` (with
        ``interleave = G``, each ``k`` given ``G`` times in a row; ``tiles`` a multiple of G).
    m_axi : Out(AxiReadSignature(addr_width, 16 P, id_width=1))
    busy : Out(1)
        A load or a read is in progress.
    """

    def __init__(self, *, rows: int, cols: int, k_max: int = 1024, addr_width: int = 32,
                 max_burst: int = 16, outstanding: int = 4, tiles_width: int = 16,
                 interleave: int = 1):
        p, problem = check_pes(rows, cols)
        problem = (problem or _check_interleave(interleave) or _check_int("k_max", k_max, 1)
                   or _check_int("addr_width", addr_width, 13, 64)
                   or _check_int("max_burst", max_burst, 1, 256)
                   or _check_int("outstanding", outstanding, 1)
                   or _check_int("tiles_width", tiles_width, 1))
        if problem:
            refuse(self, problem)
        self._rows, self._cols, self._k_max = rows, cols, k_max
        self._addr_width, self._max_burst = addr_width, max_burst
        self._outstanding, self._tiles_width = outstanding, tiles_width
        self._interleave = interleave
        super().__init__({
            "load": In(stream.Signature(load_layout(k_max, addr_width))),
            "load_done": Out(stream.Signature(DONE_LAYOUT)),
            "read": In(stream.Signature(read_layout(k_max, tiles_width))),
            "acts": Out(stream.Signature(data.ArrayLayout(16, TOKENS))),
            "m_axi": Out(AxiReadSignature(addr_width=addr_width, data_width=16 * p)),
            "busy": Out(1),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    pes = property(lambda self: self._rows * self._cols)
    k_max = property(lambda self: self._k_max)
    depth = property(lambda self: -(-self._k_max // self.pes))
    bus_bytes = property(lambda self: 2 * self.pes)
    addr_width = property(lambda self: self._addr_width)
    max_burst = property(lambda self: self._max_burst)
    outstanding = property(lambda self: self._outstanding)
    tiles_width = property(lambda self: self._tiles_width)
    interleave = property(lambda self: self._interleave)

    def elaborate(self, platform):
        m = Module()
        m.submodules.loader = loader = ActLoader(
            pes=self.pes, k_max=self._k_max, addr_width=self._addr_width,
            max_burst=self._max_burst, outstanding=self._outstanding)
        m.submodules.streamer = streamer = ActStreamer(
            pes=self.pes, k_max=self._k_max, tiles_width=self._tiles_width,
            interleave=self._interleave)
        wiring.connect(m, wiring.flipped(self.load), loader.load)
        wiring.connect(m, loader.done, wiring.flipped(self.load_done))
        wiring.connect(m, loader.m_axi, wiring.flipped(self.m_axi))
        wiring.connect(m, wiring.flipped(self.read), streamer.read)
        wiring.connect(m, streamer.acts, wiring.flipped(self.acts))
        m.d.comb += [
            loader.hold.eq(streamer.busy),
            streamer.hold.eq(loader.busy | self.load.valid),
            self.busy.eq(loader.busy | streamer.busy),
        ]
        for t in range(TOKENS):
            mem = Memory(shape=16 * self.pes, depth=self.depth, init=[])
            m.submodules[f"token{t}"] = mem
            wp = mem.write_port()
            rp = mem.read_port()
            m.d.comb += [
                wp.en.eq(loader.wr.en & (loader.wr.token == t)),
                wp.addr.eq(loader.wr.line),
                wp.data.eq(loader.wr.data),
                rp.en.eq(streamer.rd.en),
                rp.addr.eq(streamer.rd.addr),
                streamer.rd_data[t].eq(rp.data),
            ]
        return m
