"""Self-checking harness: a PE array runs a program from ROM and checks every result.

The harness for a bitstream a user can load (docs/fpga.md): the weight beats, activation
beats, tables and expected binary32 results of a few passes are constants in the design.
The harness configures the array for each pass, streams the beats in (with idle cycles),
takes the results (with backpressure) and compares each one, bit for bit, with the
expected value. ``done`` rises when every result has arrived; ``passed`` is then high if
none differed. The stream pauses come from a 16-bit LFSR, so the same run happens in a
simulator and on the board.
"""


from dataclasses import dataclass

from amaranth import *
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import Out

from hw import refuse
from hw.array import PEArray
from hw.pe import LANES, PeMode

__all__ = ["Pass", "SelfCheck"]


@dataclass(frozen=True)
class Pass:
    """One pass of the program: its configuration, its beats and the expected results.

    ``words`` has one row of ``rows * cols`` 16-bit words per beat, ``last`` one flag per
    beat, ``acts`` one row of 4 FP16 patterns per beat, ``expected`` one row of 4 binary32
    patterns per result beat (``(tiles * P, 4)``).
    """
    mode: str
    base: tuple
    lut: tuple
    words: tuple
    last: tuple
    acts: tuple
    expected: tuple


def _pack(values, width: int) -> int:
    out = 0
    for i, v in enumerate(values):
        out |= int(v) << (width * i)
    return out


class SelfCheck(wiring.Component):
    """Runs *passes* on a ``PEArray(rows, cols)`` once after reset and checks every result.

    Parameters
    ----------
    rows, cols : int
        The array's shape.
    passes : list of Pass
        The program. Modes are ``"verify"`` or ``"draft"``.
    pauses : bool
        Offer beats and take results only when the LFSR allows (about 3 cycles in 4).
    mul_stages, add_stages : int
        The PEs' pipeline depth; the program's beats must interleave ``add_stages + 1``
        tiles (:func:`golden.pe_array.weight_stream`).

    Members
    -------
    done : Out(1)
        Every expected result has arrived.
    passed : Out(1)
        Valid with ``done``: every result matched.
    errors : Out(16)
        Results that differed (saturating).
    results : Out(16)
        Result beats taken so far.
    """

    done: Out(1)
    passed: Out(1)
    errors: Out(16)
    results: Out(16)

    def __init__(self, rows: int, cols: int, passes, *, pauses: bool = True, mul_stages: int = 0,
                 add_stages: int = 0):
        pes = rows * cols
        problem = None
        if not passes:
            problem = "the program needs at least one pass"
        for i, p in enumerate(passes):
            if p.mode not in ("verify", "draft"):
                problem = problem or f"pass {i}: mode must be 'verify' or 'draft', not {p.mode!r}"
            elif not (len(p.words) == len(p.last) == len(p.acts) > 0):
                problem = problem or f"pass {i}: words, last and acts need one row per beat"
            elif any(len(row) != pes for row in p.words):
                problem = problem or f"pass {i}: every beat needs {pes} weight words"
            elif len(p.expected) != sum(p.last) * pes:
                problem = problem or f"pass {i}: expected needs {pes} result beats per tile"
        if problem:
            refuse(self, problem)
        self._rows, self._cols, self._passes, self._pauses = rows, cols, list(passes), pauses
        self._depth = dict(mul_stages=mul_stages, add_stages=add_stages)
        super().__init__()

    @property
    def total_results(self) -> int:
        return sum(len(p.expected) for p in self._passes)

    def elaborate(self, platform):
        m = Module()
        pes = self._rows * self._cols
        m.submodules.array = array = PEArray(self._rows, self._cols, **self._depth)
        passes = self._passes

        beats = [(_pack(w, 16) | (int(l) << (16 * pes)), _pack(a, 16))
                 for p in passes for w, l, a in zip(p.words, p.last, p.acts)]
        expected = [_pack(e, 32) for p in passes for e in p.expected]
        m.submodules.wrom = wrom = memory.Memory(shape=16 * pes + 1, depth=len(beats),
                                                 init=[b[0] for b in beats])
        m.submodules.arom = arom = memory.Memory(shape=16 * LANES, depth=len(beats),
                                                 init=[b[1] for b in beats])
        m.submodules.erom = erom = memory.Memory(shape=32 * LANES, depth=len(expected),
                                                 init=expected)
        wport, aport, eport = (rom.read_port(domain="comb") for rom in (wrom, arom, erom))

        ends, end = [], 0
        for p in passes:
            end += len(p.words)
            ends.append(end)
        configs = [Cat(Const(PeMode.DRAFT.value if p.mode == "draft" else PeMode.VERIFY.value, 1),
                       Const(_pack(p.base, 5), 40), Const(_pack(p.lut, 15), 120)) for p in passes]

        lfsr = Signal(16, init=0xACE1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[2] ^ lfsr[3] ^ lfsr[5]))
        offer = Signal()
        take = Signal()
        if self._pauses:
            m.d.comb += [offer.eq(lfsr[0] | lfsr[1]), take.eq(lfsr[2] | lfsr[3])]
        else:
            m.d.comb += [offer.eq(1), take.eq(1)]

        beat = Signal(range(len(beats) + 1))
        stage = Signal(range(len(passes) + 1))      # the pass whose beats are being sent
        configured = Signal()                       # its configuration beat was sent
        m.d.comb += [wport.addr.eq(beat), aport.addr.eq(beat)]
        m.d.comb += array.config.payload.as_value().eq(Array(configs)[stage])
        sending = Signal()
        m.d.comb += sending.eq((stage < len(passes)) & configured & offer)
        with m.If((stage < len(passes)) & ~configured):
            m.d.comb += array.config.valid.eq(1)
            with m.If(array.config.ready):
                m.d.sync += configured.eq(1)
        m.d.comb += [
            array.weights.valid.eq(sending),
            array.weights.payload.as_value().eq(wport.data),
            array.acts.valid.eq(sending),
            array.acts.payload.as_value().eq(aport.data),
        ]
        with m.If(array.weights.valid & array.weights.ready):
            m.d.sync += beat.eq(beat + 1)
            with m.If(beat + 1 == Array(Const(e) for e in ends)[stage]):
                m.d.sync += [stage.eq(stage + 1), configured.eq(0)]

        got = Signal(range(len(expected) + 1))
        m.d.comb += [eport.addr.eq(got), self.results.eq(got),
                     array.results.ready.eq(take & (got < len(expected)))]
        with m.If(array.results.valid & array.results.ready):
            m.d.sync += got.eq(got + 1)
            with m.If((array.results.payload.data.as_value() != eport.data) & ~self.errors.all()):
                m.d.sync += self.errors.eq(self.errors + 1)
        m.d.comb += [self.done.eq(got == len(expected)),
                     self.passed.eq(self.done & (self.errors == 0))]
        return m
