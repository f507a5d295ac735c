"""Weight streamer: reads a weight matrix's two regions and feeds the PE array's weight beats.

A matrix is stored as a draft region and a residual region (docs/accel.md, "Tensor layout in
memory"): groups of ``G`` verify tiles (``G`` the array's interleave), k-major. A *verify*
pass reads both regions linearly and merges them into full BSFP words; a *draft* pass reads
only the draft region, as four streams of whole verify groups whose chunks of ``G`` quarters
are gathered side by side. Padding tiles (up to a multiple of ``G``) are made here as zeros. Lines come from host memory (AXI4 ``m_axi``) or from the on-chip
slot memory (a synchronous read port ``mem``); either way each line is read exactly once.

Dataflow (``P = rows * cols``, a line is ``16 P`` bits)::

    StreamFetcher x4 ──> least-covered ──> AR register ──> m_axi AR    (dense source)
      (bursts, credit)     arbiter                      └> SlotReader ──> mem  (slot source)
    m_axi R / mem data ──(arid / stream id)──> line FIFO x4
    verify: FIFO 0 ─ QuarterPacker (1 quarter) ─┐
            FIFO 1 ─ ResidualGearbox ───────────┴ PlaneMerge ─┐  (or a zero padding beat)
    draft:  FIFO q ─ QuarterPacker q (G quarters) ─ DraftGather ┴─> beat register ──> beats

Every FIFO has a credit counter (lines requested but not yet taken out of the FIFO), and a
burst is requested only when the whole burst fits: ``rready`` is constantly high and the
shared R channel never stalls, whatever the order in which the slave interleaves ids.
The arbiter gives the AR channel to the stream whose reserved lines cover the fewest beats,
so that lines come back in the proportion the beats use them.
"""

from amaranth import *
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from hw import refuse
from hw.array import weight_beat_layout
from hw.dma import AxiReadSignature, BurstSplitter

__all__ = ["QuarterSplitter", "QuarterPacker", "ResidualGearbox", "PlaneMerge", "DraftGather",
           "StreamFetcher",
           "SlotReader", "WeightStreamer", "STREAMS", "burst_request_layout"]

STREAMS = 4


def _positive_int(name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        return f"{name} must be an integer >= {low}, not {value!r}"
    return None


def _check_pes(pes):
    problem = _positive_int("pes", pes, 4)
    if problem is None and pes % 4:
        problem = f"pes must be a multiple of 4, not {pes!r}"
    return problem


class _Checked(wiring.Component):
    """Raises the first problem found as ValueError without a "never elaborated" warning."""

    def _reject(self, problems):
        problem = next((p for p in problems if p), None)
        if problem:
            refuse(self, problem)


class QuarterSplitter(_Checked):
    """Splits each line into its four quarters, lowest bits first.

    Combinational (latency 0): one quarter per cycle; the line is taken with its last quarter.

    Parameters
    ----------
    pes : int
        ``P``, a multiple of 4: lines are ``16 P`` bits, quarters ``4 P`` bits.

    Members
    -------
    i : In(stream.Signature(16 * pes))
    o : Out(stream.Signature(4 * pes))
    """

    def __init__(self, *, pes: int):
        self._reject([_check_pes(pes)])
        self._pes = pes
        super().__init__({
            "i": In(stream.Signature(16 * pes)),
            "o": Out(stream.Signature(4 * pes)),
        })

    pes = property(lambda self: self._pes)

    def elaborate(self, platform):
        m = Module()
        q = 4 * self._pes
        idx = Signal(2)
        m.d.comb += [
            self.o.valid.eq(self.i.valid),
            self.o.payload.eq(self.i.payload.word_select(idx, q)),
            self.i.ready.eq(self.o.ready & (idx == 3)),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += idx.eq(idx + 1)
        return m


class ResidualGearbox(_Checked):
    """Turns residual lines (``16 P`` bits) into beat chunks of ``P`` 12-bit fields.

    The residual region is one little-endian bit stream; chunk ``b`` is its bits
    ``12 P b .. 12 P (b + 1) - 1``, so 3 lines give 4 chunks. The gearbox keeps the unused
    upper quarters of the last line taken (``phase`` of them, 0..3): a chunk is those quarters
    followed by the low ``3 - phase`` quarters of the next line, or, at phase 3, the three
    kept quarters alone (no line taken).

    Combinational (latency 0): one chunk per cycle while lines arrive at 3 per 4 cycles. The
    phase returns to 0 after every multiple of 4 chunks.

    Parameters
    ----------
    pes : int
        ``P``, a multiple of 4.

    Members
    -------
    i : In(stream.Signature(16 * pes))
    o : Out(stream.Signature(data.ArrayLayout(12, pes)))
    """

    def __init__(self, *, pes: int):
        self._reject([_check_pes(pes)])
        self._pes = pes
        super().__init__({
            "i": In(stream.Signature(16 * pes)),
            "o": Out(stream.Signature(data.ArrayLayout(12, pes))),
        })

    pes = property(lambda self: self._pes)

    def elaborate(self, platform):
        m = Module()
        q = 4 * self._pes
        phase = Signal(2)
        kept = Signal(3 * q)
        line = self.i.payload
        m.d.comb += self.o.valid.eq((phase == 3) | self.i.valid)
        m.d.comb += self.i.ready.eq(self.o.ready & (phase != 3))
        with m.Switch(phase):
            for ph in range(3):
                with m.Case(ph):
                    m.d.comb += self.o.payload.eq(Cat(kept[:ph * q], line[:(3 - ph) * q]))
            with m.Case(3):
                m.d.comb += self.o.payload.eq(kept)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += phase.eq(phase + 1)
            with m.Switch(phase):
                for ph in range(3):
                    with m.Case(ph):
                        m.d.sync += kept.eq(line[(3 - ph) * q:])
        return m


class PlaneMerge(_Checked):
    """Joins a draft quarter and a residual chunk into one verify beat of ``P`` BSFP words.

    Word ``p`` is nibble ``p`` of the quarter (bits ``4p .. 4p+3``: group ``p // 4``,
    row ``p % 4``) above the 12-bit field ``p`` of the chunk.

    Combinational (latency 0), one beat per cycle when both inputs are valid.

    Parameters
    ----------
    pes : int
        ``P``, a multiple of 4.

    Members
    -------
    draft : In(stream.Signature(4 * pes))
    resid : In(stream.Signature(data.ArrayLayout(12, pes)))
    o : Out(stream.Signature(data.ArrayLayout(16, pes)))
    """

    def __init__(self, *, pes: int):
        self._reject([_check_pes(pes)])
        self._pes = pes
        super().__init__({
            "draft": In(stream.Signature(4 * pes)),
            "resid": In(stream.Signature(data.ArrayLayout(12, pes))),
            "o": Out(stream.Signature(data.ArrayLayout(16, pes))),
        })

    pes = property(lambda self: self._pes)

    def elaborate(self, platform):
        m = Module()
        for p in range(self._pes):
            m.d.comb += self.o.payload[p].eq(
                Cat(self.resid.payload[p], self.draft.payload[4 * p:4 * p + 4]))
        m.d.comb += [
            self.o.valid.eq(self.draft.valid & self.resid.valid),
            self.draft.ready.eq(self.o.ready & self.resid.valid),
            self.resid.ready.eq(self.o.ready & self.draft.valid),
        ]
        return m


class QuarterPacker(_Checked):
    """Cuts lines (``16 P`` bits, four quarters of ``4 P`` bits) into chunks of ``r`` quarters.

    The lines are one stream of quarters, lowest bits first; each chunk takes the next ``r``
    of them (``r`` in ``1 .. max_r``, an input), low quarters first, zero above. Up to three
    quarters of the last line taken are kept for the next chunks, so a chunk is kept quarters
    alone or kept quarters followed by the low quarters of the next line. ``r = 1`` is a
    quarter splitter, ``r = 4`` passes whole lines through.

    Combinational (latency 0): one chunk per cycle while lines arrive at ``r`` per 4 cycles.
    After ``4 L / r`` chunks of ``L`` lines nothing is kept, so ``r`` may change there.

    Parameters
    ----------
    pes : int
        ``P``, a multiple of 4.
    max_r : int
        Largest chunk, 1, 2 or 4 quarters.

    Members
    -------
    i : In(stream.Signature(16 * pes))
    r : In(range(1, max_r + 1))
        Quarters per chunk; must not change while quarters are kept.
    o : Out(stream.Signature(4 * pes * max_r))
    """

    def __init__(self, *, pes: int, max_r: int):
        self._reject([_check_pes(pes),
                      None if max_r in (1, 2, 4) and not isinstance(max_r, bool)
                      else f"max_r must be 1, 2 or 4, not {max_r!r}"])
        self._pes = pes
        self._max_r = max_r
        super().__init__({
            "i": In(stream.Signature(16 * pes)),
            "r": In(range(1, max_r + 1)),
            "o": Out(stream.Signature(4 * pes * max_r)),
        })

    pes = property(lambda self: self._pes)
    max_r = property(lambda self: self._max_r)

    def elaborate(self, platform):
        m = Module()
        q = 4 * self._pes
        have = Signal(2)
        kept = Signal(3 * q)
        line = self.i.payload
        fire = self.o.valid & self.o.ready
        enough = Signal()
        m.d.comb += [
            enough.eq(have >= self.r),
            self.o.valid.eq(enough | self.i.valid),
            self.i.ready.eq(self.o.ready & ~enough),
        ]
        with m.Switch(self.r):
            for r in range(1, self._max_r + 1):
                with m.Case(r):
                    with m.Switch(have):
                        for h in range(4):
                            with m.Case(h):
                                if h >= r:
                                    m.d.comb += self.o.payload.eq(kept[:r * q])
                                    with m.If(fire):
                                        m.d.sync += [kept.eq(kept[r * q:]), have.eq(h - r)]
                                else:
                                    both = Cat(kept[:h * q], line)
                                    m.d.comb += self.o.payload.eq(both[:r * q])
                                    with m.If(fire):
                                        m.d.sync += [kept.eq(both[r * q:]), have.eq(h + 4 - r)]
        return m


class DraftGather(_Checked):
    """Puts the chunks of the draft streams of one draft tile side by side: one draft beat.

    With interleave ``G`` a draft beat of slot ``j`` (``j < G``, an input) is the chunks of
    streams ``s = (4/G) j + b``, ``b < 4/G``, each ``G`` quarters, stream ``(4/G) j`` lowest.
    A stream whose ``present`` bit is low (its verify tiles are past the matrix's end)
    contributes zeros and is neither waited for nor taken from; a beat with no present stream
    (a padding tile) is all zeros and always valid.

    Combinational (latency 0), one beat per cycle when every present stream of the slot is
    valid.

    Parameters
    ----------
    pes : int
        ``P``, a multiple of 4.
    interleave : int
        ``G``, 1, 2 or 4.

    Members
    -------
    q0, q1, q2, q3 : In(stream.Signature(4 * pes * interleave))
    present : In(4)
    slot : In(range(interleave))
        ``present`` and ``slot`` must not change while ``o.valid`` is high and ``o.ready`` low.
    o : Out(stream.Signature(data.ArrayLayout(16, pes)))
    """

    def __init__(self, *, pes: int, interleave: int = 1):
        self._reject([_check_pes(pes),
                      None if interleave in (1, 2, 4) and not isinstance(interleave, bool)
                      else f"interleave must be 1, 2 or 4, not {interleave!r}"])
        self._pes = pes
        self._interleave = interleave
        members = {f"q{q}": In(stream.Signature(4 * pes * interleave)) for q in range(STREAMS)}
        members["present"] = In(STREAMS)
        members["slot"] = In(range(interleave))
        members["o"] = Out(stream.Signature(data.ArrayLayout(16, pes)))
        super().__init__(members)

    pes = property(lambda self: self._pes)
    interleave = property(lambda self: self._interleave)

    def elaborate(self, platform):
        m = Module()
        g = self._interleave
        per = STREAMS // g
        ins = [getattr(self, f"q{q}") for q in range(STREAMS)]
        pres = self.present
        with m.Switch(self.slot):
            for j in range(g):
                with m.Case(j):
                    sel = [j * per + b for b in range(per)]
                    m.d.comb += [
                        self.o.payload.eq(Cat(Mux(pres[s], ins[s].payload, 0) for s in sel)),
                        self.o.valid.eq(Cat(ins[s].valid | ~pres[s] for s in sel).all()),
                    ]
                    for s in sel:
                        m.d.comb += ins[s].ready.eq(self.o.ready & self.o.valid & pres[s])
        return m


def burst_request_layout(addr_width: int, max_burst: int) -> data.StructLayout:
    """A burst request of a :class:`StreamFetcher`: byte address and length in lines."""
    return data.StructLayout({"addr": addr_width, "len": range(max_burst + 1)})


class StreamFetcher(_Checked):
    """Burst requests of one line stream, paced by the room left in the stream's FIFO.

    A stream is ``segs`` segments of ``seg_lines`` lines, the last of ``last_lines`` lines;
    segment ``s`` starts at byte address ``base + s * stride``. Each segment is split into INCR bursts of at most
    ``max_burst`` lines that do not cross a 4 KiB boundary (:class:`hw.dma.BurstSplitter`).
    A burst is requested only when ``reserved + len <= credit``, where ``reserved`` counts
    the lines requested whose FIFO entry has not been popped yet (``pop``).

    Throughput: one burst request per cycle. ``req.valid`` depends only on registers.

    Parameters
    ----------
    addr_width : int
        Byte address width, 13..64.
    line_bytes : int
        Bytes per line, a power of two from 8 to 128.
    max_burst : int
        Longest burst, 1..256 lines.
    max_lines, max_segs : int
        Largest ``seg_lines`` and ``segs``.
    credit : int
        FIFO lines of the stream, ``>= max_burst``.

    Members
    -------
    load : In(1)
        Starts a new stream from ``base``, ``seg_lines``, ``segs`` and ``stride`` (the
        previous one must be finished: every request issued).
    base, stride : In(addr_width)
    seg_lines, last_lines : In(range(max_lines + 1))
        At least 1 when ``segs`` is not 0.
    segs : In(range(max_segs + 1))
        0 leaves the stream empty.
    req : Out(stream.Signature(burst_request_layout(addr_width, max_burst)))
    pop : In(1)
        A line leaves the stream's FIFO.
    idle : Out(1)
        Every burst of the stream has been requested.
    reserved : Out(range(credit + 1))
        Lines requested and not yet popped (in flight or in the FIFO).
    """

    def __init__(self, *, addr_width: int, line_bytes: int, max_burst: int, max_lines: int,
                 max_segs: int, credit: int):
        problems = [
            None if isinstance(addr_width, int) and 13 <= addr_width <= 64
            else f"addr_width must be an integer in 13..64, not {addr_width!r}",
            None if line_bytes in (8, 16, 32, 64, 128)
            else f"line_bytes must be a power of two from 8 to 128, not {line_bytes!r}",
            None if isinstance(max_burst, int) and 1 <= max_burst <= 256
            else f"max_burst must be an integer in 1..256, not {max_burst!r}",
            _positive_int("max_lines", max_lines),
            _positive_int("max_segs", max_segs),
            _positive_int("credit", credit),
        ]
        if not any(problems) and credit < max_burst:
            problems.append(f"credit ({credit}) must be at least max_burst ({max_burst})")
        self._reject(problems)
        self._addr_width = addr_width
        self._line_bytes = line_bytes
        self._max_burst = max_burst
        self._max_lines = max_lines
        self._max_segs = max_segs
        self._credit = credit
        super().__init__({
            "load": In(1),
            "base": In(addr_width),
            "stride": In(addr_width),
            "seg_lines": In(range(max_lines + 1)),
            "last_lines": In(range(max_lines + 1)),
            "segs": In(range(max_segs + 1)),
            "req": Out(stream.Signature(burst_request_layout(addr_width, max_burst))),
            "pop": In(1),
            "idle": Out(1),
            "reserved": Out(range(credit + 1)),
        })

    addr_width = property(lambda self: self._addr_width)
    line_bytes = property(lambda self: self._line_bytes)
    max_burst = property(lambda self: self._max_burst)
    max_lines = property(lambda self: self._max_lines)
    max_segs = property(lambda self: self._max_segs)
    credit = property(lambda self: self._credit)

    def elaborate(self, platform):
        m = Module()
        shift = exact_log2(self._line_bytes)
        addr = Signal(self._addr_width)
        seg_start = Signal(self._addr_width)
        stride = Signal(self._addr_width)
        left = Signal(range(self._max_lines + 1))
        seg_lines = Signal(range(self._max_lines + 1))
        last_lines = Signal(range(self._max_lines + 1))
        segs_left = Signal(range(self._max_segs + 1))
        reserved = self.reserved

        # The burst length is a register, always the split of the current ``addr`` and
        # ``left``: it is computed a cycle ahead from the state a request or a load leads
        # to, so the 4 KiB split is not in front of ``req.valid``.
        def splitter(name):
            m.submodules[name] = split = BurstSplitter(
                addr_width=self._addr_width, beats_width=len(left), bus_bytes=self._line_bytes,
                max_burst=self._max_burst)
            return split
        blen = Signal(range(self._max_burst + 1))
        m.d.comb += [
            self.req.payload.addr.eq(addr),
            self.req.payload.len.eq(blen),
            self.req.valid.eq((segs_left != 0) & (reserved + blen <= self._credit)),
            self.idle.eq(segs_left == 0),
        ]
        fire = self.req.valid & self.req.ready
        m.d.sync += reserved.eq(reserved + Mux(fire, blen, 0) - self.pop)
        # The state after this request: the next segment's start, or the rest of this one.
        seg_done = left == blen
        after_addr = Mux(seg_done, seg_start + stride, addr + (blen << shift))
        after_left = Mux(seg_done, Mux(segs_left == 2, last_lines, seg_lines), left - blen)
        after = splitter("splitter")
        m.d.comb += [after.addr.eq(after_addr), after.beats.eq(after_left)]
        with m.If(fire):
            m.d.sync += [addr.eq(after_addr), left.eq(after_left), blen.eq(after.length)]
            with m.If(seg_done):
                m.d.sync += [segs_left.eq(segs_left - 1), seg_start.eq(seg_start + stride)]
        load_left = Mux(self.segs == 1, self.last_lines, self.seg_lines)
        first = splitter("first_splitter")
        m.d.comb += [first.addr.eq(self.base), first.beats.eq(load_left)]
        with m.If(self.load):
            m.d.sync += [
                addr.eq(self.base), seg_start.eq(self.base), stride.eq(self.stride),
                left.eq(load_left), blen.eq(first.length),
                seg_lines.eq(self.seg_lines), last_lines.eq(self.last_lines),
                segs_left.eq(self.segs),
            ]
        return m


class SlotReader(_Checked):
    """Plays burst requests on a synchronous memory read port, one line per cycle.

    A burst ``{addr, len, id}`` (word address) reads ``len`` consecutive words; the next
    burst is taken in the cycle of the current burst's last read, so back-to-back bursts
    read one word every cycle. ``wr_en`` / ``wr_id`` are registered: they go with
    ``mem.data`` (valid the cycle after ``mem.en``).

    Parameters
    ----------
    addr_width : int
        Word address width of the memory.
    width : int
        Bits per word.
    max_burst : int
        Longest burst in words.

    Members
    -------
    req : In(stream.Signature({"addr": addr_width, "len": range(max_burst + 1), "id": 2}))
        ``len`` at least 1.
    mem : In(memory.ReadPort.Signature(addr_width=addr_width, shape=width))
        The reading side of a memory read port (drives ``en`` and ``addr``).
    wr_en : Out(1)
    wr_id : Out(2)
    busy : Out(1)
    """

    def __init__(self, *, addr_width: int, width: int, max_burst: int):
        self._reject([_positive_int("addr_width", addr_width),
                           _positive_int("width", width),
                           _positive_int("max_burst", max_burst)])
        self._addr_width = addr_width
        self._width = width
        self._max_burst = max_burst
        self.req_layout = data.StructLayout({
            "addr": addr_width, "len": range(max_burst + 1), "id": ceil_log2(STREAMS)})
        super().__init__({
            "req": In(stream.Signature(self.req_layout)),
            "mem": In(memory.ReadPort.Signature(addr_width=addr_width, shape=width)),
            "wr_en": Out(1),
            "wr_id": Out(ceil_log2(STREAMS)),
            "busy": Out(1),
        })

    addr_width = property(lambda self: self._addr_width)
    width = property(lambda self: self._width)
    max_burst = property(lambda self: self._max_burst)

    def elaborate(self, platform):
        m = Module()
        active = Signal()
        addr = Signal(self._addr_width)
        left = Signal(range(self._max_burst + 1))
        sid = Signal(ceil_log2(STREAMS))
        m.d.comb += [
            self.req.ready.eq(~active | (left == 1)),
            self.mem.en.eq(active),
            self.mem.addr.eq(addr),
            self.busy.eq(active | self.wr_en),
        ]
        m.d.sync += [self.wr_en.eq(active), self.wr_id.eq(sid)]
        with m.If(active):
            m.d.sync += [addr.eq(addr + 1), left.eq(left - 1)]
            with m.If(left == 1):
                m.d.sync += active.eq(0)
        with m.If(self.req.valid & self.req.ready):
            m.d.sync += [active.eq(1), addr.eq(self.req.payload.addr),
                         left.eq(self.req.payload.len), sid.eq(self.req.payload.id)]
        return m


class WeightStreamer(_Checked):
    """Reads a matrix's draft and residual regions and emits the PE array's weight beats.

    One command runs one pass, its tiles in groups of ``G`` (``interleave``), k-major: beat
    ``(group, k, j)`` is tile ``G group + j`` at ``k``. Verify (``draft`` = 0): ``ceil(T/G) G
    K`` beats, each word a full BSFP word merged from the draft region (``P/2`` bytes per beat)
    and the residual region (``3P/2`` bytes per beat); tiles ``>= T`` give zero beats and read
    nothing. Draft (``draft`` = 1): ``ceil(ceil(T/4)/G) G K`` beats; draft tile ``td`` at
    ``k`` is ``G`` quarters from each of verify groups ``(4/G) td + b``, ``b < 4/G``, side by
    side, zeros past ``T``. ``last`` marks ``k = K - 1``. The beats equal
    ``golden.accel.stream_words``.

    Reads: verify reads the draft region (stream 0) and the residual region (stream 1) front
    to back; draft reads verify groups ``q, q+4, ..`` on stream ``q``. Every line is read once, in
    INCR bursts of at most ``max_burst`` lines that never cross 4 KiB, ``arid`` = stream.
    A stream's burst is issued only when its FIFO (``fifo_lines`` lines, block RAM) has
    room for it counting the lines in flight, so ``rready`` is always high. With the slot
    source the same bursts are read from ``mem`` at one line per cycle.

    Throughput: one beat per cycle in steady state whenever the source delivers one line per
    cycle (each stream keeps up to ``fifo_lines`` lines in flight or buffered, which hides a
    read latency of up to about ``fifo_lines - max_burst`` cycles). Latency: the first beat
    leaves about 6 cycles after the first line of every stream it needs has arrived: with
    AXI read latency ``L`` and the regions aligned to ``max_burst`` lines, about ``L + 8 +
    max_burst`` cycles after the command (verify) or ``L + 8 + 3 max_burst`` (draft: the
    four block streams share the R channel); the first burst is asked for 3 cycles after the
    command is accepted (the region sizes are computed in registered steps). Regions that start just before a 4 KiB boundary
    get short first bursts, which can stall the first beats of a draft pass for up to about
    ``2 max_burst`` cycles. A new command is accepted the cycle after the last beat leaves.

    Parameters
    ----------
    rows, cols : int
        Array shape; ``P = rows * cols`` must be a power of two from 4 to 64 (the bus is
        ``16 P`` bits, an AXI width).
    addr_width : int
        AXI byte address width, 13..64.
    max_burst : int
        Longest AXI burst, 1..256 lines.
    fifo_lines : int
        Lines of each of the 4 stream FIFOs, ``>= max_burst``.
    k_max, n_max : int
        Largest ``K`` (a multiple of 4) and ``N`` of a command.
    slot_addr_width : int
        Word address width of the slot memory read port.
    interleave : int
        ``G``, 1, 2 or 4: the tiles the PE array interleaves (``add_stages + 1``).

    Members
    -------
    cmd : In(stream.Signature(cmd_layout))
        ``{draft, slot_src, tiles, k, draft_addr, resid_addr}``: ``tiles`` = ``T`` in
        ``1 .. ceil(n_max / P)``, ``k`` = ``K`` a multiple of 4 in ``4 .. k_max``, byte
        addresses multiples of ``2P`` (slot source: byte addresses in the slot memory, word
        address ``addr // 2P``). Not checked here. Accepted when ``busy`` is low.
    m_axi : Out(AxiReadSignature(addr_width=addr_width, data_width=16 * P, id_width=2))
    mem : In(memory.ReadPort.Signature(addr_width=slot_addr_width, shape=16 * P))
        The reading side of a synchronous read port of the slot memory: the streamer drives
        ``en`` and ``addr``, ``data`` is valid the cycle after ``en`` (connect it to a
        component's ``Out(memory.ReadPort.Signature(..))`` member with ``wiring.connect``).
    beats : Out(stream.Signature(weight_beat_layout(P)))
    error : Out(1)
        High from the first R beat of the current command with ``RRESP != 0`` until the next
        command is accepted. The pass still runs to its end (those words are undefined).
    busy : Out(1)
        A command is running (not every beat has left ``beats``).
    """

    def __init__(self, *, rows: int, cols: int, addr_width: int = 32, max_burst: int = 16,
                 fifo_lines: int = 64, k_max: int = 1024, n_max: int = 1024,
                 slot_addr_width: int = 10, interleave: int = 1):
        problems = [_positive_int("rows", rows), _positive_int("cols", cols),
                    None if interleave in (1, 2, 4) and not isinstance(interleave, bool)
                    else f"interleave must be 1, 2 or 4, not {interleave!r}"]
        if not any(problems):
            pes = rows * cols
            if pes not in (4, 8, 16, 32, 64):
                problems.append(f"rows * cols must be a power of two from 4 to 64 (a 16 P-bit "
                                f"AXI bus), not {pes}")
        problems += [
            None if isinstance(addr_width, int) and not isinstance(addr_width, bool)
            and 13 <= addr_width <= 64
            else f"addr_width must be an integer in 13..64, not {addr_width!r}",
            None if isinstance(max_burst, int) and not isinstance(max_burst, bool)
            and 1 <= max_burst <= 256
            else f"max_burst must be an integer in 1..256, not {max_burst!r}",
            _positive_int("fifo_lines", fifo_lines, 2),
            _positive_int("k_max", k_max, 4),
            _positive_int("n_max", n_max),
            _positive_int("slot_addr_width", slot_addr_width),
        ]
        if not any(problems):
            if k_max % 4:
                problems.append(f"k_max must be a multiple of 4, not {k_max}")
            elif fifo_lines < max_burst:
                problems.append(f"fifo_lines ({fifo_lines}) must be at least max_burst "
                                f"({max_burst})")
        self._reject(problems)
        self._rows, self._cols = rows, cols
        self._addr_width = addr_width
        self._max_burst = max_burst
        self._fifo_lines = fifo_lines
        self._k_max = k_max
        self._n_max = n_max
        self._slot_addr_width = slot_addr_width
        self._interleave = interleave
        p = rows * cols
        self._tiles_max = -(-n_max // p)
        self.cmd_layout = data.StructLayout({
            "draft": 1, "slot_src": 1, "tiles": range(self._tiles_max + 1),
            "k": range(k_max + 1), "draft_addr": addr_width, "resid_addr": addr_width})
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "m_axi": Out(AxiReadSignature(addr_width=addr_width, data_width=16 * p,
                                          id_width=2)),
            "mem": In(memory.ReadPort.Signature(addr_width=slot_addr_width, shape=16 * p)),
            "beats": Out(stream.Signature(weight_beat_layout(p))),
            "error": Out(1),
            "busy": Out(1),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    pes = property(lambda self: self._rows * self._cols)
    line_bytes = property(lambda self: 2 * self.pes)
    addr_width = property(lambda self: self._addr_width)
    max_burst = property(lambda self: self._max_burst)
    fifo_lines = property(lambda self: self._fifo_lines)
    k_max = property(lambda self: self._k_max)
    n_max = property(lambda self: self._n_max)
    slot_addr_width = property(lambda self: self._slot_addr_width)
    tiles_max = property(lambda self: self._tiles_max)
    interleave = property(lambda self: self._interleave)

    def elaborate(self, platform):
        m = Module()
        p = self.pes
        line_bits = 16 * p
        shift = exact_log2(self.line_bytes)
        aw = self._addr_width
        cmd = self.cmd.payload
        axi = self.m_axi

        # -- command state -------------------------------------------------------------
        # Beats run group by group (G tiles), k-major, slot j < G innermost. ``groups_left``
        # counts the groups of beats still to come; ``vg_left`` the verify-tile groups not yet
        # covered (verify: the current one and the next; draft: from the current draft group,
        # which covers 4 of them).
        g = self._interleave
        lg = exact_log2(g)
        active = Signal()
        draft = Signal()
        slot_src = Signal()
        k_reg = Signal.like(cmd.k)
        k_cnt = Signal.like(cmd.k)
        j_cnt = Signal(range(g))
        r_last = Signal(range(g + 1))             # verify tiles of the last verify group
        groups_left = Signal.like(cmd.tiles)
        vg_left = Signal.like(cmd.tiles)
        accept = Signal()
        m.d.comb += [
            self.busy.eq(active | self.beats.valid),
            self.cmd.ready.eq(~self.busy),
            accept.eq(self.cmd.valid & self.cmd.ready),
        ]
        groups = Signal.like(cmd.tiles)            # verify groups ceil(T / G)
        dgroups = Signal.like(cmd.tiles)           # draft groups ceil(ceil(T / 4) / G)
        cmd_r_last = Signal(range(g + 1))
        m.d.comb += [
            groups.eq((cmd.tiles + g - 1) >> lg),
            dgroups.eq((((cmd.tiles + 3) >> 2) + g - 1) >> lg),
            cmd_r_last.eq((cmd.tiles - 1)[:lg] + 1 if lg else 1),
        ]

        # -- stream fetchers -------------------------------------------------------------
        # The fetchers load two cycles after a command is accepted: the command is registered
        # in the first, the region sizes (products of T and K) in the second, so that no
        # multiplier sits between the command handshake and the fetchers' registers. The
        # beats wait for the first burst anyway, which takes longer than these two cycles.
        max_lines = self._tiles_max * 3 * self._k_max // 4
        fetchers = []
        cmd_q = Signal(self.cmd.payload.shape())
        groups_q = Signal.like(groups)
        setup = Signal(2)                                  # cycles 1 and 2 after accept
        m.d.sync += setup.eq(Cat(accept, setup[0]))
        with m.If(accept):
            m.d.sync += [cmd_q.eq(cmd), groups_q.eq(groups)]
        quarter_lines = Signal(range(max_lines + 1))       # T * K/4
        group_lines = Signal(range(max_lines + 1))         # G K/4: the lines of a group
        last_group_lines = Signal(range(max_lines + 1))    # r_last K/4
        group_bytes = Signal(aw)
        r_last_q = Signal(range(g + 1))
        m.d.comb += r_last_q.eq((cmd_q.tiles - 1)[:lg] + 1 if lg else 1)
        with m.If(setup[0]):
            m.d.sync += [
                quarter_lines.eq(cmd_q.tiles * cmd_q.k[2:]),
                group_lines.eq(cmd_q.k[2:] << lg),
                last_group_lines.eq(r_last_q * cmd_q.k[2:]),
                group_bytes.eq(cmd_q.k << (shift - 2 + lg)),
            ]
        for q in range(STREAMS):
            f = StreamFetcher(addr_width=aw, line_bytes=self.line_bytes,
                              max_burst=self._max_burst, max_lines=max_lines,
                              max_segs=max(1, -(-self._tiles_max // 4)),
                              credit=self._fifo_lines)
            m.submodules[f"fetch{q}"] = f
            fetchers.append(f)
            m.d.comb += f.load.eq(setup[1])
            with m.If(cmd_q.draft):
                # Stream q reads verify groups q, q + 4, ..; the last group may be short.
                m.d.comb += [
                    f.base.eq(cmd_q.draft_addr + group_bytes * q),
                    f.stride.eq(group_bytes << 2),
                    f.seg_lines.eq(group_lines),
                    f.last_lines.eq(Mux((groups_q - 1)[:2] == q, last_group_lines,
                                        group_lines)),
                    f.segs.eq(Mux(groups_q > q, (groups_q + (3 - q)) >> 2, 0)),
                ]
            with m.Else():
                if q == 0:
                    m.d.comb += [f.base.eq(cmd_q.draft_addr), f.seg_lines.eq(quarter_lines),
                                 f.last_lines.eq(quarter_lines), f.segs.eq(1)]
                elif q == 1:
                    m.d.comb += [f.base.eq(cmd_q.resid_addr),
                                 f.seg_lines.eq(quarter_lines * 3),
                                 f.last_lines.eq(quarter_lines * 3), f.segs.eq(1)]

        # -- AR register: least-covered stream first ------------------------------------------
        # The next burst belongs to the stream, among those with bursts left, whose reserved
        # lines cover the fewest beats (a draft-plane line covers 4 beats, a residual line
        # 4/3: the verify draft stream counts 3 per line). If that stream has no credit, no
        # burst is issued: it has more than fifo_lines - max_burst lines reserved and every
        # other stream covers at least as many beats, so nobody starves, and the R channel
        # delivers lines in the ratio the beats consume them from the first burst on.
        ar_valid = Signal()
        ar_addr = Signal(aw)
        ar_len = Signal(range(self._max_burst + 1))
        ar_id = Signal(2)
        m.submodules.slot = slot = SlotReader(addr_width=self._slot_addr_width,
                                              width=line_bits, max_burst=self._max_burst)
        sink_ready = Mux(slot_src, slot.req.ready, axi.arready)
        take = ~ar_valid | sink_ready
        key_width = len(fetchers[0].reserved) + 3
        keys = []
        for q, f in enumerate(fetchers):
            key = Signal(key_width, name=f"key{q}")
            # x3 as a shift and an add: a multiplier here was the top's critical path.
            r = f.reserved
            cover = Mux(draft, r, r + (r << 1)) if q == 0 else r
            m.d.comb += key.eq(Mux(f.idle, (1 << key_width) - 1, cover))
            keys.append(key)
        pair = []
        for a, b in ((0, 1), (2, 3)):
            pick = Signal(2, name=f"pick{a}{b}")
            key = Signal(key_width, name=f"key{a}{b}")
            m.d.comb += [pick.eq(Mux(keys[b] < keys[a], b, a)),
                         key.eq(Mux(keys[b] < keys[a], keys[b], keys[a]))]
            pair.append((pick, key))
        grant = Signal(2)
        any_req = Signal()
        m.d.comb += [
            grant.eq(Mux(pair[1][1] < pair[0][1], pair[1][0], pair[0][0])),
            any_req.eq(Array(f.req.valid for f in fetchers)[grant]),
        ]
        for q, f in enumerate(fetchers):
            m.d.comb += f.req.ready.eq(take & (grant == q))
        with m.If(take):
            m.d.sync += ar_valid.eq(any_req)
            with m.If(any_req):
                m.d.sync += [ar_addr.eq(Array(f.req.payload.addr for f in fetchers)[grant]),
                             ar_len.eq(Array(f.req.payload.len for f in fetchers)[grant]),
                             ar_id.eq(grant)]
        m.d.comb += [
            axi.arvalid.eq(ar_valid & ~slot_src),
            axi.araddr.eq(ar_addr),
            axi.arlen.eq(ar_len - 1),
            axi.arid.eq(ar_id),
            axi.arsize.eq(shift),
            axi.arburst.eq(1),
            axi.rready.eq(1),
            slot.req.valid.eq(ar_valid & slot_src),
            slot.req.payload.addr.eq(ar_addr[shift:]),
            slot.req.payload.len.eq(ar_len),
            slot.req.payload.id.eq(ar_id),
        ]
        wiring.connect(m, wiring.flipped(self.mem), slot.mem)

        # -- line FIFOs ----------------------------------------------------------------------
        r_fire = axi.rvalid & axi.rready
        with m.If(accept):
            m.d.sync += self.error.eq(0)
        with m.Elif(r_fire & (axi.rresp != 0)):
            m.d.sync += self.error.eq(1)
        fifos = []
        for q in range(STREAMS):
            # One spare entry: SyncFIFOBuffered keeps depth-1 lines in its memory.
            ff = fifo.SyncFIFOBuffered(width=line_bits, depth=self._fifo_lines + 1)
            m.submodules[f"fifo{q}"] = ff
            fifos.append(ff)
            m.d.comb += [
                ff.w_en.eq(Mux(slot_src, slot.wr_en & (slot.wr_id == q),
                               r_fire & (axi.rid == q))),
                ff.w_data.eq(Mux(slot_src, self.mem.data, axi.rdata)),
                fetchers[q].pop.eq(ff.r_en & ff.r_rdy),
            ]

        # -- beat assembly -------------------------------------------------------------------
        # Verify: stream 0's quarters (a packer of 1 quarter) and stream 1's residual chunks
        # merge into a beat; a padding tile's beat (slot j >= r_last of the last group) is
        # zeros and takes nothing. Draft: stream s gives chunks of G quarters (r_last for the
        # last verify group), gathered per slot.
        packers = []
        for q in range(STREAMS):
            pk = QuarterPacker(pes=p, max_r=g)
            m.submodules[f"pack{q}"] = pk
            packers.append(pk)
        m.submodules.gearbox = gear = ResidualGearbox(pes=p)
        m.submodules.merge = merge = PlaneMerge(pes=p)
        m.submodules.gather = gather = DraftGather(pes=p, interleave=g)
        for q in (0, 2, 3):
            m.d.comb += [packers[q].i.valid.eq(fifos[q].r_rdy),
                         packers[q].i.payload.eq(fifos[q].r_data),
                         fifos[q].r_en.eq(packers[q].i.ready)]
        m.d.comb += [
            packers[1].i.valid.eq(fifos[1].r_rdy & draft),
            packers[1].i.payload.eq(fifos[1].r_data),
            gear.i.valid.eq(fifos[1].r_rdy & ~draft),
            gear.i.payload.eq(fifos[1].r_data),
            fifos[1].r_en.eq(Mux(draft, packers[1].i.ready, gear.i.ready)),
        ]
        for q in range(STREAMS):
            gq = getattr(gather, f"q{q}")
            # Stream q holds verify group 4 gd + q of draft group gd: present if that group
            # exists, short if it is the last one.
            m.d.comb += [
                packers[q].r.eq(Mux(~draft, 1, Mux(vg_left == q + 1, r_last, g))),
                gq.valid.eq(packers[q].o.valid & draft),
                gq.payload.eq(packers[q].o.payload),
            ]
        m.d.comb += [
            merge.draft.valid.eq(packers[0].o.valid & ~draft),
            merge.draft.payload.eq(packers[0].o.payload[:4 * p]),
            packers[0].o.ready.eq(Mux(draft, gather.q0.ready, merge.draft.ready)),
            merge.resid.valid.eq(gear.o.valid),
            merge.resid.payload.eq(gear.o.payload),
            gear.o.ready.eq(merge.resid.ready),
            gather.present.eq(Cat(vg_left > q for q in range(STREAMS))),
            gather.slot.eq(j_cnt),
        ]
        for q in (1, 2, 3):
            m.d.comb += packers[q].o.ready.eq(getattr(gather, f"q{q}").ready)

        # -- beat register and counters -------------------------------------------------------
        src_valid = Signal()
        src_ready = Signal()
        src_fire = Signal()
        last = Signal()
        pad = Signal()
        m.d.comb += [
            pad.eq(~draft & (groups_left == 1) & (j_cnt >= r_last)),
            src_valid.eq(active & Mux(draft, gather.o.valid, merge.o.valid | pad)),
            src_ready.eq(active & (~self.beats.valid | self.beats.ready)),
            gather.o.ready.eq(src_ready & draft),
            merge.o.ready.eq(src_ready & ~draft & ~pad),
            src_fire.eq(src_valid & src_ready),
            last.eq(k_cnt == k_reg - 1),
        ]
        with m.If(self.beats.valid & self.beats.ready):
            m.d.sync += self.beats.valid.eq(0)
        with m.If(src_fire):
            m.d.sync += [
                self.beats.valid.eq(1),
                self.beats.payload.words.eq(Mux(draft, gather.o.payload,
                                                Mux(pad, 0, merge.o.payload))),
                self.beats.payload.last.eq(last),
                j_cnt.eq(j_cnt + 1 if g > 1 else 0),
            ]
            with m.If(j_cnt == g - 1):
                m.d.sync += [j_cnt.eq(0), k_cnt.eq(Mux(last, 0, k_cnt + 1))]
                with m.If(last):
                    m.d.sync += [groups_left.eq(groups_left - 1),
                                 vg_left.eq(Mux(draft, Mux(vg_left > 4, vg_left - 4, 0),
                                                vg_left - 1))]
                    with m.If(groups_left == 1):
                        m.d.sync += active.eq(0)
        with m.If(accept):
            m.d.sync += [
                active.eq(1), draft.eq(cmd.draft), slot_src.eq(cmd.slot_src),
                k_reg.eq(cmd.k), k_cnt.eq(0), j_cnt.eq(0), vg_left.eq(groups),
                r_last.eq(cmd_r_last),
                groups_left.eq(Mux(cmd.draft, dgroups, groups)),
            ]
        return m
