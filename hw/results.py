"""Result writer: the PE array's result beats -> token-major rows in host memory over AXI4.

The array emits ``P`` result beats per tile, PE 0 first (:class:`hw.array.ResultBeat`, four
binary32 lanes). Per command ``{draft, fp16, n, tokens, out_addr, out_stride}``:

- **verify**: ``ceil(N / P)`` tiles; beat ``p`` of tile ``tv``, lane ``t`` is row
  ``tv P + p`` of token ``t``;
- **draft**: ``ceil(N / 4P)`` tiles; beat ``p`` of tile ``td``, lane ``j`` is row
  ``4 P td + 4 p + j`` of token 0.

Row ``n`` of token ``t`` goes to ``out_addr + t * out_stride + n e`` with ``e = 4`` (binary32
bit pattern) or ``e = 2`` (``fp16``: rounded by :class:`hw.fp.Fp32ToFp16`). Rows ``>= N``
(padding) and lanes of tokens ``>= tokens`` (all but token 0 in draft) are never written.

A tile gives every written token one *run* of consecutive rows starting on a line boundary
(``W = 2 P`` bytes): ``P`` rows (2 lines binary32, 1 line FP16) in verify, ``4 P`` rows
(8 or 4 lines) in draft. The writer collects a tile in a :class:`TileBuffer`, then writes
the runs of the tile as INCR bursts (never past ``N``, a partial last line with its
``wstrb``), then takes the next tile.
"""

from amaranth import *
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from hw import refuse
from hw.actbuf import check_pes
from hw.array import ResultBeat
from hw.axi import AxiWriteSignature
from hw.dma import BurstSplitter
from hw.fp import Fp32ToFp16

__all__ = ["TileBuffer", "ResultWriter", "cmd_layout"]

LANES = 4
MAX_LINES = 8          # lines of one tile: 4 tokens x 2 (verify binary32), 8 (draft binary32)


def cmd_layout(n_max: int, addr_width: int) -> data.StructLayout:
    return data.StructLayout({"draft": 1, "fp16": 1, "n": range(n_max + 1), "tokens": 3,
                              "out_addr": addr_width, "out_stride": addr_width})


class TileBuffer(wiring.Component):
    """One tile of results (``4 P`` values), arranged as the lines to be written.

    Each ``shift`` takes one result beat (lanes rounded to FP16 first when ``fp16`` is set)
    into a shift register of ``4 P`` value slots; after the ``P`` beats of a tile, value
    slot ``s`` holds

    - verify: row ``s % P`` of token ``s // P`` (each lane shifts through its own ``P``
      slots);
    - draft: row ``s`` of the tile (the whole register shifts by four slots per beat).

    ``data`` is line ``line`` of the slots read as bytes: binary32 line ``l`` is slots
    ``l P / 2 ..`` (8 lines); FP16 line ``l`` is the low halves of slots ``l P ..``
    (4 lines). Token ``t``'s run therefore starts at line ``2 t`` (verify binary32) or
    ``t`` (verify FP16), the draft run at line 0.

    Latency: a beat is visible on ``data`` the cycle after its ``shift``; ``data`` is
    combinational in ``line``. Throughput: one beat per cycle.

    Parameters
    ----------
    pes : int
        ``P``, a power of two >= 2.

    Members
    -------
    shift : In(1)
    beat : In(ArrayLayout(32, 4))
    draft, fp16 : In(1)
        Mode and format; must be constant over a tile and its read-out.
    line : In(range(8))
    data : Out(16 P)
    """

    def __init__(self, *, pes: int):
        if isinstance(pes, bool) or not isinstance(pes, int) or pes < 2 or pes & (pes - 1):
            refuse(self, f"pes must be a power of two >= 2, not {pes!r}")
        self._pes = pes
        super().__init__({
            "shift": In(1),
            "beat": In(data.ArrayLayout(32, LANES)),
            "draft": In(1),
            "fp16": In(1),
            "line": In(range(MAX_LINES)),
            "data": Out(16 * pes),
        })

    pes = property(lambda self: self._pes)

    def elaborate(self, platform):
        m = Module()
        p = self._pes
        slots = [Signal(32, name=f"slot{s}") for s in range(LANES * p)]
        value = []
        for j in range(LANES):
            conv = m.submodules[f"to_fp16_{j}"] = Fp32ToFp16()
            v = Signal(32, name=f"in{j}")
            m.d.comb += [conv.a.eq(self.beat[j]),
                         v.eq(Mux(self.fp16, Cat(conv.o, Const(0, 16)), self.beat[j]))]
            value.append(v)
        with m.If(self.shift):
            for s in range(LANES * p):
                lane, i = divmod(s, p)
                verify = value[lane] if i == p - 1 else slots[s + 1]
                top = LANES * p - LANES
                draft = value[s - top] if s >= top else slots[s + LANES]
                m.d.sync += slots[s].eq(Mux(self.draft, draft, verify))
        b32 = Array(Cat(slots[l * p // 2:(l + 1) * p // 2]) for l in range(MAX_LINES))
        h16 = Array(Cat(s[:16] for s in slots[l * p:(l + 1) * p]) for l in range(LANES))
        m.d.comb += self.data.eq(Mux(self.fp16, h16[self.line[:2]], b32[self.line]))
        return m


class ResultWriter(wiring.Component):
    """Writes the PE array's result tiles to host memory, token-major, over AXI4.

    Per tile: the ``P`` result beats are taken at one per cycle, through one register
    stage, into a :class:`TileBuffer` (``results.ready`` high while that register is empty
    or its beat moves on), then the tile's runs are written, one W beat per cycle while
    ``wready`` is high, and the next tile is taken. The AW bursts of a tile (INCR, at most
    ``max_burst`` beats, never crossing 4 KiB, ``awid`` 0) are issued while its beats are
    still being collected, so with a slave that never pauses a tile occupies the writer for
    exactly ``P`` + (lines written) <= ``P + 8`` cycles, and every result beat is taken in
    the cycle it is offered when tiles come ``K >= P + 8`` cycles apart: the array never
    waits for the writer (with :class:`hw.array.PEArray`'s 3-cycle pipeline it already
    never waits for ``K >= P + 6``). B responses are counted, not waited for, until the
    command's last tile.

    Parameters
    ----------
    rows, cols : int
        PE array shape; ``P = rows * cols`` must be 4, 8, 16, 32 or 64 (bus of ``16 P`` bits).
    n_max : int
        Largest ``N``, >= 1.
    addr_width : int
        AXI address width, 13..64.
    max_burst : int
        Longest AXI burst in beats, 1..256.
    interleave : int
        ``G``, 1, 2 or 4: the array runs tiles in groups of ``G``, so after a command's last
        real tile come the padding tiles up to a multiple of ``G`` (``ceil(N / P)`` verify or
        ``ceil(N / 4P)`` draft tiles, rounded up); their beats are taken and dropped.

    Members
    -------
    cmd : In(stream.Signature(StructLayout({"draft": 1, "fp16": 1, "n": range(n_max + 1),
            "tokens": 3, "out_addr", "out_stride"})))
        Accepted when idle. ``out_addr`` and ``out_stride`` must be multiples of ``W``
        (the caller checks; the low bits are ignored). ``tokens`` (1..4, above 4 counts as 4)
        is ignored in draft mode. ``N = 0`` completes at once.
    results : In(stream.Signature(ResultBeat))
        ``last`` is not used: every tile is ``P`` beats.
    done : Out(stream.Signature(StructLayout({"error": 1})))
        One per command, once every B response of the command has arrived; ``error`` if any
        ``BRESP`` was not 0 (every write is still made). Valid 2 cycles after the last B
        response; the writer stays busy until it is taken, and takes the next command the
        cycle after.
    m_axi : Out(AxiWriteSignature(addr_width, 16 P, id_width=1))
        ``bready`` is always high.
    bytes_written : Out(32)
        Bytes written with their strobe set, since reset (wraps).
    busy : Out(1)
        A command is in progress.
    """

    def __init__(self, *, rows: int, cols: int, n_max: int = 1024, addr_width: int = 32,
                 max_burst: int = 16, interleave: int = 1):
        p, problem = check_pes(rows, cols)
        if not problem and (isinstance(interleave, bool) or interleave not in (1, 2, 4)):
            problem = f"interleave must be 1, 2 or 4, not {interleave!r}"
        for name, value, low, high in (("n_max", n_max, 1, None),
                                       ("addr_width", addr_width, 13, 64),
                                       ("max_burst", max_burst, 1, 256)):
            if not problem and (isinstance(value, bool) or not isinstance(value, int)
                                or value < low or (high is not None and value > high)):
                span = f">= {low}" if high is None else f"in {low}..{high}"
                problem = f"{name} must be an integer {span}, not {value!r}"
        if problem:
            refuse(self, problem)
        self._rows, self._cols, self._n_max = rows, cols, n_max
        self._addr_width, self._max_burst = addr_width, max_burst
        self._interleave = interleave
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout(n_max, addr_width))),
            "results": In(stream.Signature(ResultBeat)),
            "done": Out(stream.Signature(data.StructLayout({"error": 1}))),
            "m_axi": Out(AxiWriteSignature(addr_width=addr_width, data_width=16 * p)),
            "bytes_written": Out(32),
            "busy": Out(1),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    pes = property(lambda self: self._rows * self._cols)
    n_max = property(lambda self: self._n_max)
    bus_bytes = property(lambda self: 2 * self.pes)
    addr_width = property(lambda self: self._addr_width)
    max_burst = property(lambda self: self._max_burst)
    interleave = property(lambda self: self._interleave)

    def elaborate(self, platform):
        m = Module()
        p, w = self.pes, self.bus_bytes
        aw = self._addr_width
        shift = exact_log2(w)
        axi, cmd = self.m_axi, self.cmd.payload
        align = ~Const(w - 1, aw)
        # Bursts a command can leave without a B response: <= 8 per tile.
        max_bursts = MAX_LINES * -(-self._n_max // p) + 1

        active = Signal()
        filling = Signal()          # taking the tile's result beats
        draining = Signal()         # writing the tile's W beats
        finishing = Signal()        # last tile written, waiting for B responses
        c_draft = Signal()
        c_fp16 = Signal()
        n_tok = Signal(range(LANES + 1))
        stride = Signal(aw)
        tile_base = Signal(aw)
        rows_left = Signal(range(self._n_max + 1))
        beat_cnt = Signal(range(p))
        err = Signal()
        b_pending = Signal(range(max_bursts + 1))

        # Geometry of the current tile (stable while it is collected and written).
        tile_rows = Signal(range(4 * p + 1))
        run_lines = Signal(range(MAX_LINES + 1))
        full_lines = Signal(range(MAX_LINES + 1))
        rem = Signal(range(w))
        m.d.comb += [
            tile_rows.eq(Mux(c_draft, 4 * p, p)),
            full_lines.eq(Mux(c_draft, Mux(c_fp16, 4, 8), Mux(c_fp16, 1, 2))),
        ]

        def geometry(rows, draft, fp16):
            """Registers loaded with a tile's lines per token run and the bytes of its
            partial last line, from the rows it starts with (registered so that the AW
            path starts at flip-flops, not at this arithmetic)."""
            tile = Mux(draft, 4 * p, p)
            valid_rows = Mux(rows < tile, rows, tile)
            valid_bytes = Mux(fp16, valid_rows << 1, valid_rows << 2)
            return [run_lines.eq((valid_bytes + w - 1) >> shift), rem.eq(valid_bytes[:shift])]
        next_base = tile_base + (full_lines << shift)

        # -- AW: the bursts of each run of the tile ------------------------------------
        entry = data.StructLayout({"start": range(MAX_LINES), "run_line": range(MAX_LINES),
                                   "len": range(MAX_LINES + 1), "last": 1})
        m.submodules.bursts = bq = fifo.SyncFIFO(width=entry.size, depth=4)
        bq_w = data.View(entry, bq.w_data)
        bq_r = data.View(entry, bq.r_data)
        m.submodules.splitter = splitter = BurstSplitter(
            addr_width=aw, beats_width=len(run_lines), bus_bytes=w, max_burst=self._max_burst)

        aw_active = Signal()
        aw_tok = Signal(2)
        aw_line = Signal(range(MAX_LINES))
        tok_base = Signal(aw)
        aw_addr = Signal(aw)
        awvalid = Signal()
        issue = Signal()
        blen = splitter.length
        run_end = Signal()
        tile_end = Signal()
        m.d.comb += [
            splitter.addr.eq(aw_addr),
            splitter.beats.eq(run_lines - aw_line),
            run_end.eq(aw_line + blen == run_lines),
            tile_end.eq(run_end & (aw_tok == n_tok - 1)),
            issue.eq(aw_active & (~awvalid | axi.awready) & bq.w_rdy),
            bq.w_en.eq(issue),
            # aw_tok * full_lines, full_lines being 1, 2, 4 or 8: a shift, not a multiplier
            # (it mapped to a MULT18X18D on the top's critical path).
            bq_w.start.eq(Mux(c_draft, Mux(c_fp16, aw_tok << 2, aw_tok << 3),
                              Mux(c_fp16, aw_tok, aw_tok << 1)) + aw_line),
            bq_w.run_line.eq(aw_line),
            bq_w.len.eq(blen),
            bq_w.last.eq(tile_end),
            axi.awvalid.eq(awvalid),
            axi.awid.eq(0),
            axi.awsize.eq(shift),
            axi.awburst.eq(1),
        ]
        with m.If(awvalid & axi.awready):
            m.d.sync += awvalid.eq(0)
        with m.If(issue):
            m.d.sync += [awvalid.eq(1), axi.awaddr.eq(aw_addr), axi.awlen.eq(blen - 1),
                         aw_addr.eq(aw_addr + (blen << shift)), aw_line.eq(aw_line + blen)]
            with m.If(run_end):
                m.d.sync += [aw_line.eq(0), aw_tok.eq(aw_tok + 1),
                             tok_base.eq(tok_base + stride), aw_addr.eq(tok_base + stride)]
                with m.If(tile_end):
                    m.d.sync += aw_active.eq(0)

        # -- results -> tile buffer ----------------------------------------------------
        # A result beat first enters one register (a pipeline slice, loaded whenever it is
        # empty or its beat moves on), so that the array's drain multiplexer and the FP16
        # rounding in front of the tile buffer are in different cycles.
        r_valid = Signal()
        r_data = Signal(data.ArrayLayout(32, LANES))
        r_ready = Signal()
        m.d.comb += self.results.ready.eq(~r_valid | r_ready)
        with m.If(self.results.ready):
            m.d.sync += [r_valid.eq(self.results.valid), r_data.eq(self.results.payload.data)]
        m.submodules.buffer = buf = TileBuffer(pes=p)
        take = Signal()
        # Padding tiles after the last real one: their beats are taken and dropped.
        lg = exact_log2(self._interleave)
        drop_left = Signal(range(max(1, self._interleave - 1) * p + 1))
        real_done = Signal()            # every real tile's beats taken
        dropping = Signal()
        m.d.comb += dropping.eq(real_done & (drop_left != 0))
        with m.If(dropping & r_valid):
            m.d.sync += drop_left.eq(drop_left - 1)
        with m.If(r_valid & filling & (beat_cnt == p - 1) & (rows_left <= tile_rows)):
            m.d.sync += real_done.eq(1)
        m.d.comb += [
            r_ready.eq(filling | dropping),
            take.eq(r_valid & filling),
            buf.shift.eq(take),
            buf.beat.eq(r_data),
            buf.draft.eq(c_draft),
            buf.fp16.eq(c_fp16),
        ]
        with m.If(take):
            m.d.sync += beat_cnt.eq(beat_cnt + 1)
            with m.If(beat_cnt == p - 1):
                m.d.sync += [beat_cnt.eq(0), filling.eq(0), draining.eq(1)]

        # -- W: the queued bursts' lines from the tile buffer -------------------------
        w_cnt = Signal(range(MAX_LINES))
        w_fire = Signal()
        partial = Signal()
        m.d.comb += [
            buf.line.eq(bq_r.start + w_cnt),
            partial.eq((bq_r.run_line + w_cnt == run_lines - 1) & (rem != 0)),
            axi.wvalid.eq(draining & bq.r_rdy),
            axi.wdata.eq(buf.data),
            axi.wstrb.eq(Mux(partial, (Const(1, w + 1) << rem) - 1, (1 << w) - 1)),
            axi.wlast.eq(w_cnt == bq_r.len - 1),
            w_fire.eq(axi.wvalid & axi.wready),
            bq.r_en.eq(w_fire & axi.wlast),
        ]
        with m.If(w_fire):
            m.d.sync += [w_cnt.eq(w_cnt + 1),
                         self.bytes_written.eq(self.bytes_written + Mux(partial, rem, w))]
            with m.If(axi.wlast):
                m.d.sync += w_cnt.eq(0)
                with m.If(bq_r.last):
                    m.d.sync += draining.eq(0)
                    with m.If(rows_left > tile_rows):
                        rows_next = rows_left - tile_rows
                        m.d.sync += geometry(rows_next, c_draft, c_fp16)
                        m.d.sync += [
                            rows_left.eq(rows_next), filling.eq(1),
                            tile_base.eq(next_base), tok_base.eq(next_base),
                            aw_addr.eq(next_base), aw_active.eq(1), aw_tok.eq(0), aw_line.eq(0),
                        ]
                    with m.Else():
                        m.d.sync += [rows_left.eq(0), finishing.eq(1)]

        # -- B, command, done ----------------------------------------------------------
        b_fire = Signal()
        m.d.comb += [axi.bready.eq(1), b_fire.eq(axi.bvalid)]
        m.d.sync += b_pending.eq(b_pending + (awvalid & axi.awready) - b_fire)
        with m.If(b_fire & axi.bresp.any()):
            m.d.sync += err.eq(1)

        m.d.comb += [self.cmd.ready.eq(~active), self.busy.eq(active),
                     self.done.payload.error.eq(err)]
        tokens = Mux(cmd.draft, 1, Mux(cmd.tokens > LANES, LANES, Mux(cmd.tokens == 0, 1,
                                                                        cmd.tokens)))
        with m.If(self.cmd.valid & self.cmd.ready):
            base = cmd.out_addr & align
            if lg:
                lg_p = exact_log2(p)
                real = Mux(cmd.draft, (cmd.n + 4 * p - 1) >> (lg_p + 2),
                           (cmd.n + p - 1) >> lg_p)
                m.d.sync += drop_left.eq((-real)[:lg] << lg_p)
            m.d.sync += [real_done.eq(0)]
            m.d.sync += geometry(cmd.n, cmd.draft, cmd.fp16)
            m.d.sync += [
                active.eq(1), c_draft.eq(cmd.draft), c_fp16.eq(cmd.fp16), n_tok.eq(tokens),
                stride.eq(cmd.out_stride & align), rows_left.eq(cmd.n), err.eq(0),
                tile_base.eq(base), tok_base.eq(base), aw_addr.eq(base),
                aw_tok.eq(0), aw_line.eq(0), beat_cnt.eq(0),
            ]
            with m.If(cmd.n == 0):
                m.d.sync += finishing.eq(1)
            with m.Else():
                m.d.sync += [filling.eq(1), aw_active.eq(1)]

        with m.If(finishing & ~awvalid & (b_pending == 0) & (drop_left == 0)):
            m.d.sync += [finishing.eq(0), self.done.valid.eq(1)]
        with m.If(self.done.valid & self.done.ready):
            m.d.sync += [self.done.valid.eq(0), active.eq(0)]
        return m
