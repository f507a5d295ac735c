"""Processing elements: the reconfigurable BSFP draft/verify PE and the plain FP16 PE.

Both PEs have four lanes; each lane is an FP16 x FP16 -> binary32 multiplier feeding a
binary32 accumulator (docs/architecture.md, "Numbers" and "PE and PE array"). Every accepted
cycle a PE consumes one 16-bit weight word and one activation beat:

* :class:`ReconfigurablePE`, **verify** mode: the word is a full BSFP weight, decoded to
  FP16 (``e = base[D] + x``) and multiplied by the four activations of the beat (four
  tokens of one output row).
* :class:`ReconfigurablePE`, **draft** mode: the word holds four draft nibbles ``s|D``
  (lane ``j`` takes bits ``4j+3..4j``), each decoded through the 8-entry ``lut`` and
  multiplied by activation ``j`` of the beat. A draft pass is one token and four output
  rows, so its activation beat repeats the token's activation in all four elements; the
  PE array does that once for all its PEs, so that no lane needs a multiplexer between
  activation ``j`` and activation 0.
* :class:`Fp16PE`: the word is a plain FP16 weight, multiplied by the four activations;
  the baseline for area.

Each lane's multiplier takes normalised operands (:class:`hw.fp.Fp16Norm`), so that a
value the lanes share is normalised once: the verify weight once per PE, and in a
:class:`hw.array.PEArray` the activations once per PE row and the lut entries once for all
PEs (``normalised_inputs``).

A dot product is a run of beats whose last weight carries ``last=1``; its four binary32
sums leave on ``results``, and the lanes restart from +0.0 with the next beat, so dot
products follow each other with no gap.
"""

from amaranth import *
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw import refuse
from hw.fp import (ADD_MAX_STAGES, MUL_MAX_STAGES, Fp16Multiplier, Fp16Norm, Fp32Adder, normalise_fp16,
                   stages_problem)

__all__ = ["LANES", "BASE_LATENCY", "result_depth", "LUT_ENTRIES", "pe_members", "Pipelined", "depth_problem",
           "PeMode", "WeightBeat", "LutWrite", "NormLutWrite", "ReconfigurablePE", "Fp16PE"]

LANES = 4
BASE_LATENCY = 3          # operand, product and result registers
LUT_ENTRIES = 8           # draft codes D


class PeMode(enum.Enum, shape=1):
    VERIFY = 0
    DRAFT = 1


class WeightBeat(data.Struct):
    """One weight word and the flag that closes a dot product."""
    word: 16
    last: 1


class LutWrite(data.Struct):
    """A write of one ``lut`` entry: the 15-bit FP16 magnitude of draft code ``addr``."""
    en: 1
    addr: 3
    data: 15


class NormLutWrite(data.Struct):
    """A write of one ``lut`` entry in normalised form: the magnitude (``frac`` and ``exp``,
    the low 16 bits) of the :class:`hw.fp.Fp16Norm` of draft code ``addr``."""
    en: 1
    addr: 3
    data: 16


ActsBeat = data.ArrayLayout(16, LANES)
ResultBeat = data.ArrayLayout(32, LANES)
PE_MEMBERS = {
    "weights": In(stream.Signature(WeightBeat)),
    "acts": In(stream.Signature(ActsBeat)),
    "results": Out(stream.Signature(ResultBeat)),
}


def pe_members(normalised_inputs: bool = False) -> dict:
    """The members of a :class:`ReconfigurablePE` (see there for ``normalised_inputs``)."""
    members = dict(PE_MEMBERS, mode=In(PeMode), base=In(data.ArrayLayout(5, 8)), lut_write=In(LutWrite))
    if normalised_inputs:
        members.update(acts=In(data.ArrayLayout(Fp16Norm, LANES)), lut_write=In(NormLutWrite))
    return members


def depth_problem(mul_stages, add_stages) -> str | None:
    """What is wrong with a pipeline depth, or None."""
    return (stages_problem("mul_stages", mul_stages, MUL_MAX_STAGES)
            or stages_problem("add_stages", add_stages, ADD_MAX_STAGES))


class Pipelined:
    """Pipeline-depth properties shared by the PEs and the PE array."""

    _mul_stages = 0
    _add_stages = 0
    _result_depth = None

    @property
    def mul_stages(self) -> int:
        return self._mul_stages

    @property
    def add_stages(self) -> int:
        return self._add_stages

    @property
    def interleave(self) -> int:
        """Independent dot products (tiles, in an array) the beats interleave:
        ``add_stages + 1``."""
        return self._add_stages + 1

    @property
    def latency(self) -> int:
        """Cycles from accepting a dot product's (tile's) last beat to its result being valid."""
        return BASE_LATENCY + self._mul_stages + self._add_stages

    @property
    def result_depth(self) -> int:
        """Dot products (tiles, in an array) a PE holds from accepting their last beat until
        their results are taken; it accepts no beat while that many are outstanding.
        :func:`result_depth` of the pipeline depth unless given."""
        if self._result_depth is not None:
            return self._result_depth
        return result_depth(self._mul_stages, self._add_stages)


def result_depth(mul_stages: int, add_stages: int) -> int:
    """A PE's result queue: ``BASE_LATENCY + mul_stages + add_stages + 1`` entries, so that
    dot products of one beat each, with results taken as soon as they are valid, run at one
    per cycle (a result is taken ``latency`` cycles after its last beat, and the count
    that gates the input is a register: one cycle more)."""
    return BASE_LATENCY + mul_stages + add_stages + 1


def _pipeline(m, *, weights, acts, results, stage1, operands, mul_stages, add_stages,
              result_depth):
    """Build the lanes' shared datapath behind the operand decode.

    Stage 1 registers the values of *stage1* (a dict of name and value), from which
    ``operands`` (a function of the dict of registers) gives each lane's two
    :class:`hw.fp.Fp16Norm` operands, so that a value shared by the lanes is normalised
    once. ``mul_stages`` more registers are the multiplier's inside,
    the next the exact products; the adder (``add_stages`` registers inside) then adds
    each product to its dot product's partial sum. With ``add_stages = A`` the
    accumulation loop is ``A + 1`` cycles long, so the beats interleave ``A + 1``
    independent dot products: accepted beat ``n`` belongs to slot ``n mod (A + 1)``, each
    slot has its own partial sum per lane (a memory of one word per slot), read when its
    product is registered (a sum written back in that cycle is forwarded; the first beat of
    a dot product reads +0.0 instead) and written when the sum leaves the adder. The next
    beat of a slot enters the adder at least ``A + 1`` cycles later, after the write, so
    every slot accumulates sequentially in increasing k exactly as with a one-cycle adder.

    The pipeline never holds: every register loads every cycle, and a beat that was not
    accepted moves on as a bubble (``valid`` low). Flow control is at the input instead. A
    finished dot product's sums enter a queue of ``result_depth`` entries, and the PE
    accepts beats only while fewer than ``result_depth`` dot products are *outstanding*
    (their last beat accepted, their results not yet taken), so the queue never overflows.
    ``ready`` is a register (computed from the next cycle's count), so no net from the
    pipeline's state reaches its flip-flops' enables; on a placed 4x4 array the old
    pipeline-wide enable was the critical path.
    """
    slots = add_stages + 1
    depth = 2 + mul_stages + add_stages          # registers from the input to the adder's output
    valid = [Signal(name=f"valid{i}") for i in range(1, depth + 1)]
    last = [Signal(name=f"last{i}") for i in range(1, depth + 1)]
    slot = [Signal(range(slots), name=f"slot{i}") for i in range(1, depth + 1)]
    s2_p = Signal(data.ArrayLayout(32, LANES))
    acc = Signal(data.ArrayLayout(32, LANES)) if slots == 1 else None
    sums = Signal(data.ArrayLayout(32, LANES))
    in_slot = Signal(range(slots))

    ready = Signal(init=1)                       # fewer than result_depth outstanding
    outstanding = Signal(range(result_depth + 1))
    done = valid[-1] & last[-1]                  # a finished dot product leaves the adder
    accept = Signal()
    if acts is None:                             # activations come registered from outside
        m.d.comb += [weights.ready.eq(ready), accept.eq(ready & weights.valid)]
    else:
        m.d.comb += [
            weights.ready.eq(ready & acts.valid),
            acts.ready.eq(ready & weights.valid),
            accept.eq(ready & weights.valid & acts.valid),
        ]
    outstanding_next = Signal.like(outstanding)
    m.d.comb += outstanding_next.eq(outstanding + (accept & weights.payload.last)
                                    - (results.valid & results.ready))
    m.d.sync += [outstanding.eq(outstanding_next), ready.eq(outstanding_next != result_depth)]
    # first[i]: the beat in stage i starts its dot product (its slot's previous beat was a
    # last one), so it adds its product to +0.0 instead of the slot's partial sum.
    first = [Signal(name=f"first{i}") for i in range(1, depth + 1)] if slots > 1 else []
    in_first = Signal(slots, init=(1 << slots) - 1)
    if slots > 1:
        with m.If(accept):
            m.d.sync += [in_slot.eq(Mux(in_slot == slots - 1, 0, in_slot + 1)),
                         in_first.bit_select(in_slot, 1).eq(weights.payload.last)]

    s2 = 1 + mul_stages                          # index of the product stage
    partial = Signal(data.ArrayLayout(32, LANES))
    if slots == 1:
        m.d.comb += partial.eq(acc)
    else:
        # The slots' partial sums live in a small memory with an asynchronous read port
        # (distributed RAM on an FPGA: no slot multiplexer in logic). A partial sum is read
        # as the product is registered, so the read sits before a register, not before the
        # adder; a sum written back in that same cycle is forwarded.
        m.submodules.partials = partials = Memory(shape=len(sums.as_value()), depth=slots,
                                                  init=[])
        read = partials.read_port(domain="comb")
        write = partials.write_port()
        forward = valid[-1] & (slot[-1] == slot[s2 - 1])
        m.d.comb += [
            read.addr.eq(slot[s2 - 1]),
            write.addr.eq(slot[-1]),
            write.data.eq(sums),
            write.en.eq(valid[-1]),
        ]
        m.d.sync += partial.eq(Mux(first[s2 - 1], 0, Mux(forward, sums, read.data)))
    s1 = {}
    for name, value in stage1.items():
        value = Value.cast(value)
        s1[name] = Signal(value.shape(), name=f"s1_{name}")
        m.d.sync += s1[name].eq(value)
    for lane, (lane_w, lane_a) in enumerate(operands(s1)):
        mul = Fp16Multiplier(stages=mul_stages, normalised=True)
        add = Fp32Adder(stages=add_stages, subnormals=False)
        m.submodules[f"mul{lane}"] = mul
        m.submodules[f"add{lane}"] = add
        if mul_stages:
            m.d.comb += mul.en.eq(1)
        if add_stages:
            m.d.comb += add.en.eq(1)
        m.d.comb += [
            mul.a.eq(lane_w),
            mul.b.eq(lane_a),
            add.a.eq(partial[lane]),
            add.b.eq(s2_p[lane]),
            sums[lane].eq(add.s),
        ]
        m.d.sync += s2_p[lane].eq(mul.p)

    m.d.sync += [valid[0].eq(accept), last[0].eq(weights.payload.last), slot[0].eq(in_slot)]
    for i in range(1, depth):
        m.d.sync += [valid[i].eq(valid[i - 1]), last[i].eq(last[i - 1]),
                     slot[i].eq(slot[i - 1])]
    if first:
        m.d.sync += first[0].eq(in_first.bit_select(in_slot, 1))
        m.d.sync += [first[i].eq(first[i - 1]) for i in range(1, depth)]
    if slots == 1:
        with m.If(valid[-1]):
            m.d.sync += acc.eq(Mux(last[-1], 0, sums))
    # The dot products finish on consecutive beats at most: the queue lets them wait while
    # earlier results drain. It cannot be full when one arrives (``outstanding`` counts it).
    m.submodules.results_queue = q = _ResultQueue(len(sums.as_value()), result_depth)
    m.d.comb += [
        q.w_en.eq(done),
        q.w_data.eq(sums),
        results.valid.eq(q.r_rdy),
        results.payload.eq(q.r_data),
        q.r_en.eq(results.ready),
    ]


class _ResultQueue(wiring.Component):
    """A first-in first-out queue of ``depth`` results whose memory is written from a register.

    Outside it behaves as :class:`amaranth.lib.fifo.SyncFIFO` (same ``level``, an entry
    written in cycle ``t`` is readable in cycle ``t + 1``), but ``w_data`` is registered
    before the memory's write port, so the adder's last stage ends at flip-flops beside it
    rather than at the queue's distributed RAM (on the 4x4 array at c76ede7 that path,
    11.9 ns with 8.4 ns of routing, was the critical one). The entry written in the
    previous cycle is read from that register until the memory holds it.
    """

    def __init__(self, width: int, depth: int):
        self._width, self._depth = width, depth
        super().__init__({"w_en": In(1), "w_data": In(width), "r_en": In(1), "r_rdy": Out(1),
                          "r_data": Out(width), "level": Out(range(depth + 1))})

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        m.submodules.storage = storage = Memory(shape=self._width, depth=depth, init=[])
        write = storage.write_port()
        read = storage.read_port(domain="comb")
        produce = Signal(range(depth))
        consume = Signal(range(depth))
        pending = Signal()                       # the register holds the entry at `write.addr`
        do_read = self.r_rdy & self.r_en
        do_write = self.w_en & (self.level != depth)

        def incr(v):
            return Mux(v == depth - 1, 0, v + 1)

        # The write register loads every cycle and only `pending` says whether it holds an
        # entry: an enable on its flip-flops would be a net from the pipeline's last stage
        # to every one of them (on the 4x4 array at bfb820f, that net to a register placed
        # across the die was the critical path).
        m.d.sync += [pending.eq(do_write), write.addr.eq(produce), write.data.eq(self.w_data)]
        with m.If(do_write):
            m.d.sync += produce.eq(incr(produce))
        m.d.comb += [
            write.en.eq(pending),
            read.addr.eq(consume),
            self.r_rdy.eq(self.level != 0),
            self.r_data.eq(Mux(pending & (write.addr == consume), write.data, read.data)),
        ]
        with m.If(do_read):
            m.d.sync += consume.eq(incr(consume))
        with m.If(do_write & ~do_read):
            m.d.sync += self.level.eq(self.level + 1)
        with m.If(do_read & ~do_write):
            m.d.sync += self.level.eq(self.level - 1)
        return m


class _PE(Pipelined, wiring.Component):
    """Parameters and latency shared by both PEs."""

    def __init__(self, members, mul_stages, add_stages, queue=None):
        problem = depth_problem(mul_stages, add_stages)
        if queue is not None and (isinstance(queue, bool) or not isinstance(queue, int)
                                  or queue < 1):
            problem = problem or f"result_depth must be a positive integer, not {queue!r}"
        if problem:
            refuse(self, problem)
        self._mul_stages = mul_stages
        self._add_stages = add_stages
        self._result_depth = queue
        super().__init__(members)


class ReconfigurablePE(_PE):
    """Four-lane PE that runs the BSFP draft pass and the FP16 verify pass.

    Latency: a dot product's results are valid ``3 + mul_stages + add_stages`` cycles after
    its last beat is accepted. Throughput: one weight word and one activation beat per
    cycle (4 MACs per cycle in both modes). The pipeline never holds; the PE accepts no
    beat while :attr:`result_depth` (``latency + 1`` by default) dot products are outstanding, their
    last beat accepted and their results not yet taken on ``results``. With
    ``add_stages = A`` the beats interleave ``A + 1`` dot products round robin (accepted
    beat ``n`` belongs to slot ``n mod (A + 1)``, counted from reset); each slot's dot
    products are accumulated sequentially in increasing k, and results leave in the order
    their last beats were accepted.

    ``mode`` and ``base`` are sampled when a beat is accepted, so they may change between
    dot products without draining the pipeline. ``base[d]`` is the 5-bit first biased
    exponent of window ``d``. The exponent add ``base[D] + x`` wraps modulo 32; a valid
    BSFP encoding never wraps (docs/bsfp.md).

    ``lut[d]``, the FP16 magnitude of draft code ``d``, is held in normalised form
    (:class:`hw.fp.Fp16Norm`, 16 bits) in a small memory in each lane (distributed RAM on
    an FPGA: a runtime-written lookup table in place of an 8:1 multiplexer per lane),
    written one entry per cycle through ``lut_write``. A write in cycle ``t`` is seen by
    the beats accepted after ``t``; beats accepted earlier have decoded their weights
    already, so a new table may be written while earlier dot products finish. The entries
    are +0.0 after reset.

    Members
    -------
    weights : In(stream.Signature(WeightBeat))
    acts : In(stream.Signature(ArrayLayout(16, 4)))
        Lane ``j`` multiplies element ``j`` in both modes. Verify mode: one FP16 activation
        per token. Draft mode: the token's activation in every element (:class:`hw.array.PEArray`
        repeats element 0). With ``normalised_inputs``, ``In(ArrayLayout(Fp16Norm, 4))``
        instead, no stream: the normalised activations of the beat accepted in the previous
        cycle (the PE's stage-1 register for them is outside, shared by a row of an array's
        PEs).
    results : Out(stream.Signature(ArrayLayout(32, 4)))
        binary32 dot products, lane ``j`` in element ``j``.
    mode : In(PeMode)
    base : In(ArrayLayout(5, 8))
    lut_write : In(LutWrite), or In(NormLutWrite) with ``normalised_inputs``

    Parameters
    ----------
    mul_stages : int
        Register stages inside each lane's multiplier, 0..4.
    add_stages : int
        Register stages inside each lane's binary32 adder, 0..3.
    normalised_inputs : bool
        The variant a :class:`hw.array.PEArray` instantiates: activations and ``lut``
        entries arrive normalised (:func:`hw.fp.normalise_fp16`), so that the array
        normalises the activations once per PE row and the lut entries once. Otherwise (the default, FP16
        at the ports) the PE normalises them itself. Either way every lane's multiplier
        takes normalised operands and its product needs at most a one-bit shift.
    result_depth : int, optional
        Entries of the result queue, the dot products the PE holds (:attr:`result_depth`);
        :func:`result_depth` of the pipeline depth by default, the fewest with which
        one-beat dot products run at one per cycle. A :class:`hw.array.PEArray`, whose input
        register adds a cycle between its handshake and the PEs', asks for one more.
    """

    def __init__(self, *, mul_stages: int = 0, add_stages: int = 0,
                 normalised_inputs: bool = False, result_depth: int | None = None):
        if not isinstance(normalised_inputs, bool):
            refuse(self, f"normalised_inputs must be True or False, not {normalised_inputs!r}")
        self._normalised_inputs = normalised_inputs
        super().__init__(pe_members(normalised_inputs), mul_stages, add_stages, result_depth)

    @property
    def normalised_inputs(self) -> bool:
        return self._normalised_inputs

    def elaborate(self, platform):
        m = Module()
        word = self.weights.payload.word
        sign, code, x, mant = word[15], word[12:15], word[10:12], word[0:10]
        verify_w = Signal(16)
        m.d.comb += verify_w.eq(Cat(mant, (self.base[code] + x)[:5], sign))
        # One lut memory of normalised magnitudes, one asynchronous read port per lane
        # (synthesis gives each read port its own copy of the 8 x 16 bits).
        m.submodules.lut = lut = Memory(shape=16, depth=LUT_ENTRIES, init=[])
        write = lut.write_port()
        data_in = self.lut_write.data
        if not self._normalised_inputs:
            data_in = normalise_fp16(m, Cat(data_in, Const(0, 1)), "norm_lut")[0:16]
        m.d.comb += [write.en.eq(self.lut_write.en), write.addr.eq(self.lut_write.addr),
                     write.data.eq(data_in)]
        # Stage 1 holds the verify weight once for the four lanes and each lane's draft
        # weight, already normalised from the lut; the verify weight is normalised after
        # it, once, and each lane picks by the mode registered with the beat.
        stage1 = {"verify": verify_w, "mode": self.mode}
        for lane in range(LANES):
            nibble = word[4 * lane:4 * lane + 4]
            read = lut.read_port(domain="comb")
            m.d.comb += read.addr.eq(nibble[:3])
            stage1[f"draft{lane}"] = Cat(read.data, nibble[3])
        if not self._normalised_inputs:
            stage1["acts"] = self.acts.payload

        def operands(s1):
            verify = normalise_fp16(m, s1["verify"], "norm_w")
            lanes = []
            for lane in range(LANES):
                w = Mux(s1["mode"] == PeMode.DRAFT.value, s1[f"draft{lane}"], verify)
                if self._normalised_inputs:
                    a = self.acts[lane]
                else:
                    a = normalise_fp16(m, s1["acts"][16 * lane:16 * lane + 16], f"norm_a{lane}")
                lanes.append((w, a))
            return lanes

        _pipeline(m, weights=self.weights, results=self.results,
                  acts=None if self._normalised_inputs else self.acts,
                  stage1=stage1, operands=operands,
                  mul_stages=self._mul_stages, add_stages=self._add_stages,
                  result_depth=self.result_depth)
        return m


class Fp16PE(_PE):
    """Four-lane FP16 PE without the draft path: the area baseline.

    Same pipeline, parameters, latency, interleave and throughput (one beat per cycle) as
    :class:`ReconfigurablePE` in verify mode; ``weights.payload.word`` is a plain FP16
    weight, multiplied by each of the four activations of the beat.
    """

    def __init__(self, *, mul_stages: int = 0, add_stages: int = 0):
        super().__init__(dict(PE_MEMBERS), mul_stages, add_stages)

    def elaborate(self, platform):
        m = Module()

        def operands(s1):
            w = normalise_fp16(m, s1["word"], "norm_w")
            return [(w, normalise_fp16(m, s1["acts"][16 * lane:16 * lane + 16], f"norm_a{lane}"))
                    for lane in range(LANES)]

        _pipeline(m, weights=self.weights, acts=self.acts, results=self.results,
                  stage1={"word": self.weights.payload.word, "acts": self.acts.payload},
                  operands=operands, mul_stages=self._mul_stages, add_stages=self._add_stages,
                  result_depth=self.result_depth)
        return m
