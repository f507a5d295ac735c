"""Processing elements: the reconfigurable BSFP draft/verify PE and the plain FP16 PE.

Both PEs have four lanes; each lane is an FP16 x FP16 -> binary32 multiplier feeding a
binary32 accumulator (docs/architecture.md, "Numbers" and "PE and PE array"). Every accepted
cycle a PE consumes one 16-bit weight word and one activation beat:

* :class:`ReconfigurablePE`, **verify** mode: the word is a full BSFP weight, decoded to
  FP16 (``e = base[D] + x``) and multiplied by the four activations of the beat (four
  tokens of one output row).
* :class:`ReconfigurablePE`, **draft** mode: the word holds four draft nibbles ``s|D``
  (lane ``j`` takes bits ``4j+3..4j``), each decoded through the 8-entry ``lut`` and
  multiplied by activation 0 of the beat (one token, four output rows).
* :class:`Fp16PE`: the word is a plain FP16 weight, multiplied by the four activations;
  the baseline for area.

A dot product is a run of beats whose last weight carries ``last=1``; its four binary32
sums leave on ``results``, and the lanes restart from +0.0 with the next beat, so dot
products follow each other with no gap.
"""

from amaranth import *
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.fp import Fp16Multiplier, Fp32Adder

__all__ = ["LANES", "PeMode", "WeightBeat", "ReconfigurablePE", "Fp16PE"]

LANES = 4


class PeMode(enum.Enum, shape=1):
    VERIFY = 0
    DRAFT = 1


class WeightBeat(data.Struct):
    """One weight word and the flag that closes a dot product."""
    word: 16
    last: 1


ActsBeat = data.ArrayLayout(16, LANES)
ResultBeat = data.ArrayLayout(32, LANES)


def _pipeline(m, *, weights, acts, results, lane_weights, lane_acts):
    """Build the lanes' shared datapath behind the operand decode.

    Stage 1 registers the decoded operands, stage 2 the exact products, and the
    accumulators add each product in the cycle after. The whole pipeline advances
    together; it holds only when a finished dot product meets a result that has not
    been taken yet, so results drain while the next dot product accumulates.
    """
    s1_valid = Signal()
    s1_last = Signal()
    s1_w = Signal(data.ArrayLayout(16, LANES))
    s1_a = Signal(data.ArrayLayout(16, LANES))
    s2_valid = Signal()
    s2_last = Signal()
    s2_p = Signal(data.ArrayLayout(32, LANES))
    acc = Signal(data.ArrayLayout(32, LANES))
    sums = Signal(data.ArrayLayout(32, LANES))
    out_valid = Signal()
    out_data = Signal(ResultBeat)

    advance = Signal()
    m.d.comb += advance.eq(~(s2_valid & s2_last & out_valid & ~results.ready))
    accept = Signal()
    m.d.comb += [
        weights.ready.eq(advance & acts.valid),
        acts.ready.eq(advance & weights.valid),
        accept.eq(advance & weights.valid & acts.valid),
    ]

    for lane in range(LANES):
        mul = Fp16Multiplier()
        add = Fp32Adder()
        m.submodules[f"mul{lane}"] = mul
        m.submodules[f"add{lane}"] = add
        m.d.comb += [
            mul.a.eq(s1_w[lane]),
            mul.b.eq(s1_a[lane]),
            add.a.eq(acc[lane]),
            add.b.eq(s2_p[lane]),
            sums[lane].eq(add.s),
        ]
        with m.If(advance):
            m.d.sync += [
                s1_w[lane].eq(lane_weights[lane]),
                s1_a[lane].eq(lane_acts[lane]),
                s2_p[lane].eq(mul.p),
            ]

    with m.If(results.ready):
        m.d.sync += out_valid.eq(0)
    with m.If(advance):
        m.d.sync += [
            s1_valid.eq(accept),
            s1_last.eq(weights.payload.last),
            s2_valid.eq(s1_valid),
            s2_last.eq(s1_last),
        ]
        with m.If(s2_valid):
            with m.If(s2_last):
                m.d.sync += [acc.eq(0), out_data.eq(sums), out_valid.eq(1)]
            with m.Else():
                m.d.sync += acc.eq(sums)
    m.d.comb += [results.valid.eq(out_valid), results.payload.eq(out_data)]


class ReconfigurablePE(wiring.Component):
    """Four-lane PE that runs the BSFP draft pass and the FP16 verify pass.

    Latency: a dot product's results are valid 3 cycles after its last beat is accepted.
    Throughput: one weight word and one activation beat per cycle (4 MACs per cycle in
    both modes); it stalls only while a finished result waits on ``results``.

    ``mode``, ``base`` and ``lut`` are sampled when a beat is accepted, so they may change
    between dot products without draining the pipeline. ``base[d]`` is the 5-bit first
    biased exponent of window ``d``; ``lut[d]`` the 15-bit FP16 magnitude of draft code
    ``d``. The exponent add ``base[D] + x`` wraps modulo 32; a valid BSFP encoding never
    wraps (docs/bsfp.md).

    Members
    -------
    weights : In(stream.Signature(WeightBeat))
    acts : In(stream.Signature(ArrayLayout(16, 4)))
        Verify mode: one FP16 activation per token. Draft mode: element 0 only.
    results : Out(stream.Signature(ArrayLayout(32, 4)))
        binary32 dot products, lane ``j`` in element ``j``.
    mode : In(PeMode)
    base : In(ArrayLayout(5, 8))
    lut : In(ArrayLayout(15, 8))
    """

    weights: In(stream.Signature(WeightBeat))
    acts: In(stream.Signature(ActsBeat))
    results: Out(stream.Signature(ResultBeat))
    mode: In(PeMode)
    base: In(data.ArrayLayout(5, 8))
    lut: In(data.ArrayLayout(15, 8))

    latency = 3

    def elaborate(self, platform):
        m = Module()
        word = self.weights.payload.word
        sign, code, x, mant = word[15], word[12:15], word[10:12], word[0:10]
        verify_w = Signal(16)
        m.d.comb += verify_w.eq(Cat(mant, (self.base[code] + x)[:5], sign))
        lane_weights = []
        lane_acts = []
        for lane in range(LANES):
            nibble = word[4 * lane:4 * lane + 4]
            draft_w = Cat(self.lut[nibble[:3]], nibble[3])
            w = Signal(16, name=f"w{lane}")
            a = Signal(16, name=f"a{lane}")
            with m.If(self.mode == PeMode.DRAFT):
                m.d.comb += [w.eq(draft_w), a.eq(self.acts.payload[0])]
            with m.Else():
                m.d.comb += [w.eq(verify_w), a.eq(self.acts.payload[lane])]
            lane_weights.append(w)
            lane_acts.append(a)
        _pipeline(m, weights=self.weights, acts=self.acts, results=self.results,
                  lane_weights=lane_weights, lane_acts=lane_acts)
        return m


class Fp16PE(wiring.Component):
    """Four-lane FP16 PE without the draft path: the area baseline.

    Same pipeline, latency (3 cycles) and throughput (one beat per cycle) as
    :class:`ReconfigurablePE` in verify mode; ``weights.payload.word`` is a plain FP16
    weight, multiplied by each of the four activations of the beat.
    """

    weights: In(stream.Signature(WeightBeat))
    acts: In(stream.Signature(ActsBeat))
    results: Out(stream.Signature(ResultBeat))

    latency = 3

    def elaborate(self, platform):
        m = Module()
        word = self.weights.payload.word
        _pipeline(m, weights=self.weights, acts=self.acts, results=self.results,
                  lane_weights=[word] * LANES,
                  lane_acts=[self.acts.payload[lane] for lane in range(LANES)])
        return m
