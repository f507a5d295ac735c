"""PE array: weight-streaming, activation-broadcast, output-stationary (docs/architecture.md, PE and PE array).

``rows x cols`` :class:`hw.pe.ReconfigurablePE` s run in lockstep. Every accepted beat
carries one 16-bit word per PE (PE ``p`` at row ``p // cols``, column ``p % cols``) and
one activation beat of 4 FP16 values that every PE sees. A beat with ``last=1`` closes a
*tile*: each PE's four lanes hold finished binary32 dot products, which move into the PE's
result register while the lanes restart from +0.0 with the next tile. The results then
leave on ``results`` one PE per beat, PE 0 first, while the next tile accumulates (the
lanes and the result registers are the two buffers). What the words mean is set by the
configuration (see :mod:`golden.pe_array` for the mapping of a layer onto the array):

* **draft**: each word is a draft-plane word, 4 nibbles for 4 output rows; lane ``j``
  multiplies its nibble's ``lut`` value by activation 0 (the array gives every PE lane
  activation 0 in this mode, one multiplexer for all PEs).
* **verify**: each word is a full BSFP word of one output row; lane ``j`` multiplies it by
  activation ``j`` (token ``j``).
"""

from amaranth import *
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hw import REPLICA, refuse
from hw.fp import normalise_fp16
from hw.pe import (LANES, LUT_ENTRIES, NormLutWrite, PeMode, Pipelined, ReconfigurablePE,
                   depth_problem, pe_members, result_depth)

__all__ = ["ConfigBeat", "ResultBeat", "PEArray", "INPUT_STAGES", "array_result_depth", "array_pe"]


#: Register levels between the array's input handshake and the PEs: one near the
#: handshake, one beside each PE.
INPUT_STAGES = 2


def array_result_depth(mul_stages: int = 0, add_stages: int = 0) -> int:
    """Tiles outstanding (last beat accepted, results not yet all drained) at which a
    :class:`PEArray` of that pipeline depth accepts no beat, and the entries of its PEs'
    result queues: a lone PE's :func:`hw.pe.result_depth` plus the :data:`INPUT_STAGES`
    cycles by which the array's handshake precedes the PEs'."""
    return result_depth(mul_stages, add_stages) + INPUT_STAGES


def array_pe(mul_stages: int = 0, add_stages: int = 0) -> ReconfigurablePE:
    """The PE a :class:`PEArray` of that pipeline depth instantiates (normalised inputs, a
    result queue of :attr:`PEArray.result_depth` entries); the module to convert for an
    array built with ``pe_module``."""
    return ReconfigurablePE(mul_stages=mul_stages, add_stages=add_stages, normalised_inputs=True,
                            result_depth=array_result_depth(mul_stages, add_stages))


class ConfigBeat(data.Struct):
    """The array's configuration: mode and the per-tensor BSFP tables."""
    mode: PeMode
    base: data.ArrayLayout(5, 8)
    lut: data.ArrayLayout(15, 8)


class ResultBeat(data.Struct):
    """Four binary32 results of one PE; ``last`` marks the last PE of a tile."""
    data: data.ArrayLayout(32, LANES)
    last: 1


def weight_beat_layout(pes: int) -> data.StructLayout:
    """One 16-bit word per PE and the flag that closes a tile."""
    return data.StructLayout({"words": data.ArrayLayout(16, pes), "last": 1})


class PEArray(Pipelined, wiring.Component):
    """A ``rows x cols`` array of reconfigurable PEs with a draining result stream.

    Throughput: one weight beat and one activation beat per cycle, ``4 * rows * cols``
    MACs per cycle in both modes. Latency: a tile's first result beat is valid
    :attr:`latency` cycles (3 plus the PE's pipeline stages, plus the :data:`INPUT_STAGES`
    = 2 registers between the input handshake and the PEs, plus the :attr:`DRAIN_STAGES` = 2
    registers of the result drain) after its last beat is accepted; its ``rows * cols``
    result beats follow at one per cycle while ``results.ready`` is high. While it is low
    the output register holds its beat and the drain goes on into an output queue of
    :attr:`DRAIN_QUEUE` beats until it is full, so ``results.ready`` drives only that
    queue, never the PEs' handshake. The PEs' pipelines never hold; the array accepts no
    beat while :attr:`result_depth` tiles are outstanding (last beat accepted, results not
    yet all drained), so tiles of ``K >= rows * cols`` beats run back to back with no stall,
    and shorter ones at the drain's pace of one tile per ``rows * cols`` cycles. With
    ``add_stages > 0`` the beats interleave :attr:`interleave` tiles (:func:`golden.pe_array.weight_stream`).

    A configuration beat applies to every weight beat accepted after the cycle of its
    handshake; beats already accepted finish with the old configuration. Its ``mode`` and
    ``base`` take effect at once. The PEs hold ``lut`` in per-lane memories written one
    entry per cycle (:class:`hw.pe.ReconfigurablePE`), so a beat whose ``lut`` differs
    from the one loaded makes the array write the new table: for :attr:`LUT_LOAD_CYCLES`
    cycles after the handshake it accepts no weight beat and no configuration beat
    (``config.ready`` low; counted in ``lut_cycles``), while earlier tiles go on through
    the pipeline and drain. A beat with the loaded ``lut`` (the same tensor's tables, or a
    mode change) costs no cycle. After reset the loaded table is all +0.0.

    Parameters
    ----------
    rows, cols : int
        Array shape, each at least 1.
    mul_stages, add_stages : int
        The PEs' pipeline depth (:class:`hw.pe.ReconfigurablePE`).
    pe_module : str, optional
        If given, the PEs are instances of an external Verilog module of that name (the
        Verilog of :class:`hw.pe.ReconfigurablePE`, see :func:`sim.netlist.convert`) instead
        of elaborated submodules. The array then exists once per PE in the netlist as one
        module definition, which keeps Verilator builds of large arrays small; it cannot run
        in Amaranth's simulator.

    Members
    -------
    config : In(stream.Signature(ConfigBeat))
    weights : In(stream.Signature(StructLayout({"words": ArrayLayout(16, rows * cols), "last": 1})))
    acts : In(stream.Signature(ArrayLayout(16, 4)))
        Broadcast to every PE: verify mode one FP16 activation per token, draft mode element 0.
    results : Out(stream.Signature(ResultBeat))
    busy_cycles, starved_cycles, blocked_cycles, lut_cycles : Out(32)
        Cycles in which a beat was accepted; in which the array could accept one but none
        was offered (idle included); in which the array could not accept because
        :attr:`result_depth` tiles' results were not yet taken; in which it was writing a
        new ``lut``. Every cycle is counted in exactly one of them.
    macs : Out(48)
        MACs done, ``4 * rows * cols`` per accepted beat.
    stall_in, stall_out : Out(1)
        This cycle is one counted in ``starved_cycles`` (resp. ``blocked_cycles``).
    """

    #: Cycles after a configuration beat with a new ``lut`` in which the array accepts no
    #: beat: one to register each write, then one per entry.
    LUT_LOAD_CYCLES = LUT_ENTRIES + 1
    #: Register levels of the result drain, added to the PEs' latency.
    DRAIN_STAGES = 2
    #: PEs whose results share the drain's first multiplexer.
    DRAIN_GROUP = 4
    #: Beats the drain's output queue holds, the output register included: with fewer the
    #: drain, deciding its moves two cycles ahead, could not move every cycle.
    DRAIN_QUEUE = 4

    def __init__(self, rows: int, cols: int, *, pe_module: str | None = None,
                 mul_stages: int = 0, add_stages: int = 0):
        problem = None
        for name, value in (("rows", rows), ("cols", cols)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problem = problem or f"{name} must be a positive integer, not {value!r}"
        problem = problem or depth_problem(mul_stages, add_stages)
        if pe_module is not None and (not isinstance(pe_module, str)
                                      or not pe_module.isidentifier()):
            problem = problem or f"pe_module must be a Verilog module name, not {pe_module!r}"
        if problem:
            refuse(self, problem)
        self._rows = rows
        self._cols = cols
        self._pe_module = pe_module
        self._mul_stages = mul_stages
        self._add_stages = add_stages
        super().__init__({
            "config": In(stream.Signature(ConfigBeat)),
            "weights": In(stream.Signature(weight_beat_layout(rows * cols))),
            "acts": In(stream.Signature(data.ArrayLayout(16, LANES))),
            "results": Out(stream.Signature(ResultBeat)),
            "busy_cycles": Out(32),
            "starved_cycles": Out(32),
            "blocked_cycles": Out(32),
            "lut_cycles": Out(32),
            "macs": Out(48),
            "stall_in": Out(1),
            "stall_out": Out(1),
        })

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def cols(self) -> int:
        return self._cols

    @property
    def pes(self) -> int:
        return self._rows * self._cols

    @property
    def latency(self) -> int:
        """Cycles from accepting a tile's last beat to its first result beat being valid:
        the PE's latency plus the :data:`INPUT_STAGES` registers of the input and the
        :attr:`DRAIN_STAGES` registers of the result drain."""
        return super().latency + INPUT_STAGES + self.DRAIN_STAGES

    @property
    def result_depth(self) -> int:
        """Tiles outstanding at which the array accepts no beat (:func:`array_result_depth`)."""
        return array_result_depth(self._mul_stages, self._add_stages)

    def _drain(self, m, pes):
        """Send the PEs' results on ``results``, PE 0 first, through two register levels.

        The PEs of a group of :attr:`DRAIN_GROUP` share a first multiplexer, registered
        beside them and selected by the group's own copy of the drain counter's low bits
        (:data:`REPLICA`); the second picks a group's register into an output queue of
        :attr:`DRAIN_QUEUE` beats, whose head is the output register. So the drain counter's
        select and the PEs' 128-bit results never cross the array in one cycle, and
        ``results.ready`` reaches only the queue, never the PEs.

        The drain *moves* (reads the next PE's result, if PE 0 holds one) in the cycles for
        which it decided so two cycles before: when the queue then had room for every beat
        already moved and this one even if no beat left it meanwhile. With ``results.ready``
        high the queue holds at most one beat and the drain moves every cycle, as if there
        were no queue. Knowing each move two cycles ahead, the drain also knows two cycles
        ahead when it will read the last PE, the cycle in which every PE releases its result:
        from ``rows * cols >= 3`` PEs on, a release register computed then feeds, a cycle
        later, a register ``take_all`` per PE, so that the release broadcast across the array
        is a net from one flip-flop to flip-flops with no logic between them, which
        placement can put beside each PE's result queue. The copies carry the attribute
        :data:`REPLICA`, so that synthesis keeps them apart (:mod:`speqmoe.fpga` marks their
        flip-flops ``keep``; otherwise Yosys merges flip-flops with the same input into one).
        With one or two PEs the copies are set a cycle ahead from the drain's next state:
        whether PE 0 will then be read depends on its ``valid`` in the next cycle. Returns
        the copies, one per PE.
        """
        n = len(pes)
        size = self.DRAIN_GROUP
        outs = [pe.results.payload.as_value() for pe in pes]
        groups = [outs[i:i + size] for i in range(0, n, size)]
        drain = Signal(range(n))
        at_last = Signal(init=n == 1)            # drain == n - 1
        move = Signal(init=1)                    # decided two cycles ago
        move_next = Signal(init=1)               # decided in the previous cycle
        # move & at_last (PE 0's valid implied), registered, one copy per PE
        take_all = [Signal(init=n == 1, name=f"take_all{p}", attrs={REPLICA: 1})
                    for p in range(n)]
        valid = pes[0].results.valid
        step = move & valid                      # PE `drain`'s result is read
        s1_valid = Signal()
        s1_last = Signal()
        s1_group = Signal(range(len(groups)))
        s1_data = [Signal(len(outs[0]), name=f"drain_group{q}") for q in range(len(groups))]
        drain_next = Mux(step, Mux(at_last, 0, drain + 1), drain)
        at_last_next = Mux(step, drain == n - 2, at_last) if n > 1 else Const(1)
        m.d.sync += [drain.eq(drain_next), at_last.eq(at_last_next)]
        m.d.sync += [s1_valid.eq(step), s1_last.eq(at_last), s1_group.eq(drain // size)]
        for q, group in enumerate(groups):
            if len(group) == 1:
                m.d.sync += s1_data[q].eq(group[0])
                continue
            # drain % size, a copy per group (beside its multiplexer)
            select = Signal(range(len(group)), name=f"drain_select{q}", attrs={REPLICA: 1})
            m.d.sync += [select.eq(drain_next % size), s1_data[q].eq(Array(group)[select])]

        # The output queue: the output register (the stream's own valid and payload) and a
        # FIFO of DRAIN_QUEUE - 1 beats behind it. The moves decided below never let it
        # overflow (the drain-bound test checks every handshake against sim.array_flow).
        out = self.results
        m.submodules.drain_queue = queue = fifo.SyncFIFO(width=ResultBeat.as_shape().size,
                                                         depth=self.DRAIN_QUEUE - 1)
        s1_beat = Signal(ResultBeat)
        m.d.comb += [s1_beat.data.eq(Array(s1_data)[s1_group]), s1_beat.last.eq(s1_last)]
        out_free = ~out.valid | out.ready
        m.d.comb += [queue.r_en.eq(out_free), queue.w_data.eq(s1_beat),
                     queue.w_en.eq(s1_valid & ~(out_free & ~queue.r_rdy))]
        with m.If(out_free):
            m.d.sync += [out.valid.eq(queue.r_rdy | s1_valid),
                         out.payload.eq(Mux(queue.r_rdy, queue.r_data, s1_beat))]
        # The beats in the queue in the next cycle, plus those read in this cycle and the
        # next: the move decided now is safe if they and it fit when none leaves.
        level_next = Signal(range(self.DRAIN_QUEUE + 1))
        m.d.comb += level_next.eq(queue.level + out.valid + s1_valid - (out.valid & out.ready))
        decide = level_next + step + move_next + 1 <= self.DRAIN_QUEUE
        m.d.sync += [move_next.eq(decide), move.eq(move_next)]

        released = Signal()                      # a tile's results are released this cycle
        if n >= 3:
            # at_last two cycles ahead: from three PEs on, a step from drain == n - 2 needs
            # no valid (PE 0 was read, and nothing is released before the counter wraps).
            release = Signal()                   # take_all of the next cycle
            m.d.sync += release.eq(Mux(move_next, drain_next == n - 2, at_last_next) & decide)
            m.d.sync += [copy.eq(release) for copy in take_all]
            m.d.sync += released.eq(release)
        else:
            take = Signal(init=n == 1)
            m.d.sync += [copy.eq(at_last_next & move_next) for copy in take_all + [take]]
            m.d.comb += released.eq(take & valid)
        return take_all, released

    def elaborate(self, platform):
        m = Module()
        n = self.pes
        cfg = Signal(ConfigBeat)
        # A new lut is written into every PE's lane memories, one entry per cycle from
        # ``cfg.lut``; the write is registered so that its large net starts at flip-flops.
        loading = Signal()
        entry = Signal(range(LUT_ENTRIES))
        lut_write = Signal(NormLutWrite)
        busy = Signal()
        m.d.comb += [busy.eq(loading | lut_write.en), self.config.ready.eq(~busy)]
        # `entry` counts the 8 entries and wraps to 0 as a load ends, so it is 0 whenever
        # a load starts: the 120-bit comparison of the tables drives `loading` only.
        assert LUT_ENTRIES == 1 << (LUT_ENTRIES - 1).bit_length()
        # The PEs store the entries normalised (hw.fp.Fp16Norm): one normaliser here for all,
        # fed from a register that holds the entry being written (selected a cycle ahead),
        # so that the table's multiplexer and the normaliser are not in one cycle.
        raw = Signal(15)
        start = Signal()                         # a configuration beat with a new lut
        loading_next = Signal()
        m.d.comb += [
            start.eq(self.config.valid & ~busy
                     & (self.config.payload.lut.as_value() != cfg.lut.as_value())),
            loading_next.eq(start | (loading & (entry != LUT_ENTRIES - 1))),
        ]
        m.d.sync += loading.eq(loading_next)
        with m.If(self.config.valid & ~busy):
            m.d.sync += [cfg.eq(self.config.payload), raw.eq(self.config.payload.lut[0])]
        with m.If(loading):
            m.d.sync += [entry.eq(entry + 1), raw.eq(cfg.lut[(entry + 1)[0:3]])]
        m.d.sync += [lut_write.en.eq(loading), lut_write.addr.eq(entry),
                     lut_write.data.eq(normalise_fp16(m, Cat(raw, Const(0, 1)), "norm_lut")[0:16])]

        # Every PE sees the same beats and the same result handshake, so all PEs hold the
        # same pipeline state. They take their beats from the array's input registers, and
        # the array offers one only when they will accept it (below): their own `ready` is
        # not needed, so no path runs from one PE's state to the others or to the input.
        if self._pe_module is None:
            pes = [array_pe(self._mul_stages, self._add_stages) for _ in range(n)]
            for p, pe in enumerate(pes):
                m.submodules[f"pe{p}"] = pe
        else:
            sig = wiring.Signature(pe_members(normalised_inputs=True))
            pes = [sig.create(path=(f"pe{p}",)) for p in range(n)]
            for p, pe in enumerate(pes):
                m.submodules[f"pe{p}"] = Instance(
                    self._pe_module,
                    i_clk=ClockSignal(), i_rst=ResetSignal(),
                    i_weights__valid=pe.weights.valid,
                    i_weights__payload=pe.weights.payload.as_value(),
                    o_weights__ready=pe.weights.ready,
                    i_acts=pe.acts.as_value(),
                    o_results__valid=pe.results.valid,
                    o_results__payload=pe.results.payload.as_value(),
                    i_results__ready=pe.results.ready,
                    i_mode=pe.mode.as_value(), i_base=pe.base.as_value(),
                    i_lut_write=pe.lut_write.as_value())
        # The input registers: a beat accepted in cycle t reaches the PEs in t + 2, through
        # one register near the handshake and one per PE (its word, and REPLICA copies of
        # valid and last, kept apart by synthesis so that each can sit beside its PE). So
        # the handshake's logic and the broadcast across the array are not in one cycle,
        # and the broadcast starts at a flip-flop. The PEs' pipelines never hold, so the
        # array takes a beat only when the PEs will accept it: it counts outstanding tiles
        # itself, from its last beat's handshake here (INPUT_STAGES cycles before the PEs
        # see it) until its results are released, and takes no beat while `result_depth`
        # are. The PEs' result queues hold that many (`array_pe`), so a PE then holds at
        # most `result_depth - 1` when the beat reaches it, and accepts it. `can_take` is a
        # register (from the next cycle's count and lut load), so the handshake is one
        # LUT: only the input streams' valid reach it.
        depth = self.result_depth
        ready = Signal(init=1)                   # fewer than `depth` tiles outstanding
        can_take = Signal(init=1)                # ready and no lut being written
        outstanding = Signal(range(depth + 1))
        fire = Signal()
        m.d.comb += [
            fire.eq(can_take & self.weights.valid & self.acts.valid),
            self.weights.ready.eq(can_take & self.acts.valid),
            self.acts.ready.eq(can_take & self.weights.valid),
        ]
        take_all, released = self._drain(m, pes)
        outstanding_next = outstanding + (fire & self.weights.payload.last) - released
        ready_next = outstanding_next != depth
        # busy in the next cycle: loading_next | lut_write.en's next value, which is `loading`
        m.d.sync += [outstanding.eq(outstanding_next), ready.eq(ready_next),
                     can_take.eq(ready_next & ~loading_next & ~loading)]

        def delayed(value, stages, name):
            """*value* through *stages* registers that load every cycle."""
            for i in range(stages):
                reg = Signal.like(value, name=f"{name}_d{i}")
                m.d.sync += reg.eq(value)
                value = reg
            return value

        assert INPUT_STAGES >= 1
        near = INPUT_STAGES - 1                  # the registers before the per-PE ones
        valid_near = delayed(fire, near, "in_valid")
        last_near = delayed(self.weights.payload.last, near, "in_last")
        words_near = delayed(self.weights.payload.words, near, "in_words")
        in_valid = [Signal(name=f"in_valid{p}", attrs={REPLICA: 1}) for p in range(n)]
        in_last = [Signal(name=f"in_last{p}", attrs={REPLICA: 1}) for p in range(n)]
        in_word = [Signal(16, name=f"in_word{p}") for p in range(n)]
        for p in range(n):
            # Only valid depends on the handshake; the word and last load every cycle and
            # count only with it.
            m.d.sync += [in_valid[p].eq(valid_near), in_last[p].eq(last_near),
                         in_word[p].eq(words_near[p])]
        # The configuration the PEs see (mode and base, sampled as they accept a beat)
        # follows the array's by the input registers' cycles, one copy per row. A lut
        # write lands after every beat accepted up to its configuration's handshake has
        # reached the PEs (the first write is 2 cycles after it), and no beat is accepted
        # until the last write is done.
        assert INPUT_STAGES <= 2
        pe_cfg = Signal(data.StructLayout({"mode": PeMode, "base": data.ArrayLayout(5, 8)}))
        m.d.comb += pe_cfg.eq(Cat(cfg.mode, cfg.base))
        pe_cfg = delayed(pe_cfg, near, "cfg_pe")
        row_cfg = [Signal.like(pe_cfg, name=f"cfg_row{r}", attrs={REPLICA: 1})
                   for r in range(self._rows)]
        m.d.sync += [copy.eq(pe_cfg) for copy in row_cfg]
        # A draft pass multiplies every lane by the token's activation (element 0); the
        # PEs' lanes take element j in both modes, so the array repeats element 0 for them
        # as it takes the beat. The PEs take the activations a cycle after the beat, as
        # their stage 1 would (every cycle, the beat's values valid with it), from one
        # register per PE row (REPLICA, so that each row's copy can sit beside it),
        # normalised after it once per row (hw.fp.normalise_fp16): the broadcast across
        # the array is a path of its own, the normalisation one of the row's.
        acts = Signal(data.ArrayLayout(16, LANES))
        m.d.comb += acts.eq(Mux(cfg.mode == PeMode.DRAFT, self.acts.payload[0].replicate(LANES),
                                self.acts.payload))
        acts = delayed(acts, INPUT_STAGES, "acts")
        row_acts = [Signal(data.ArrayLayout(16, LANES), name=f"acts_row{r}",
                           attrs={REPLICA: 1}) for r in range(self._rows)]
        m.d.sync += [copy.eq(acts) for copy in row_acts]
        row_norm = [Cat(*(normalise_fp16(m, row_acts[r][j], f"norm_act{r}_{j}") for j in range(LANES)))
                    for r in range(self._rows)]
        for p, pe in enumerate(pes):
            row = p // self._cols
            m.d.comb += [
                pe.mode.eq(row_cfg[row].mode),
                pe.base.eq(row_cfg[row].base),
                pe.lut_write.eq(lut_write),
                pe.weights.valid.eq(in_valid[p]),
                pe.weights.payload.word.eq(in_word[p]),
                pe.weights.payload.last.eq(in_last[p]),
                pe.acts.eq(row_norm[row]),
                pe.results.ready.eq(take_all[p]),
            ]

        with m.If(fire):
            m.d.sync += [self.busy_cycles.eq(self.busy_cycles + 1),
                         self.macs.eq(self.macs + LANES * n)]
        m.d.comb += [self.stall_out.eq(~busy & ~ready),
                     self.stall_in.eq(can_take & ~(self.weights.valid & self.acts.valid))]
        with m.If(busy):
            m.d.sync += self.lut_cycles.eq(self.lut_cycles + 1)
        with m.If(self.stall_out):
            m.d.sync += self.blocked_cycles.eq(self.blocked_cycles + 1)
        with m.If(self.stall_in):
            m.d.sync += self.starved_cycles.eq(self.starved_cycles + 1)
        return m

