"""Floating-point arithmetic of a PE lane (docs/architecture.md, Numbers): FP16 multiplier, binary32 adder, FP16 rounding.

By default all three components are combinational (latency 0 cycles, throughput one
operation per cycle) and the PE places pipeline registers around them. The multiplier and
the adder take a ``stages`` parameter that puts that many register stages inside them, at
fixed cut points chosen to split their longest paths; the registers load when ``en`` is
high, so the PE can stall them with the rest of its pipeline. NaN outputs are the canonical
quiet NaNs ``0x7FC00000`` (binary32) and ``0x7E00`` (binary16).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "Fp16Multiplier", "Fp32Adder", "Fp32ToFp16", "NAN32", "NAN16", "leading_zeros", "shift_right_sticky",
    "MUL_MAX_STAGES", "ADD_MAX_STAGES", "stages_problem",
]

MUL_MAX_STAGES = 3
ADD_MAX_STAGES = 3

NAN32 = 0x7FC00000
NAN16 = 0x7E00


def _wire(m: Module, name: str, value) -> Signal:
    """A named combinational signal driven by *value* (keeps shared logic shared)."""
    value = Value.cast(value)
    sig = Signal(value.shape(), name=name)
    m.d.comb += sig.eq(value)
    return sig


def stages_problem(name: str, stages, most: int) -> str | None:
    """What is wrong with a register-stage count, or None."""
    if isinstance(stages, bool) or not isinstance(stages, int) or not 0 <= stages <= most:
        return f"{name} must be an integer in 0..{most}, not {stages!r}"
    return None


def _check_stages(stages, most: int) -> int:
    problem = stages_problem("stages", stages, most)
    if problem:
        raise ValueError(problem)
    return stages


class _Cuts:
    """Pipeline registers at some of a datapath's numbered cut points.

    ``cut(i, name=value, ...)`` returns the values unchanged when cut ``i`` is not chosen,
    else registered copies that load when *en* is high.
    """

    def __init__(self, m: Module, en, chosen):
        self._m, self._en, self._chosen = m, en, frozenset(chosen)

    def cut(self, index: int, **values) -> dict:
        if index not in self._chosen:
            return values
        out = {}
        for name, value in values.items():
            value = Value.cast(value)
            reg = Signal(value.shape(), name=f"c{index}_{name}")
            with self._m.If(self._en):
                self._m.d.sync += reg.eq(value)
            out[name] = reg
        return out


class _Staged(wiring.Component):
    """A component with ``stages`` inner register stages (and then an ``en`` input)."""

    def __init__(self, members: dict, stages, most: int):
        self._stages = _check_stages(stages, most)
        if stages:
            members = dict(members, en=In(1))
        super().__init__(members)

    @property
    def stages(self) -> int:
        return self._stages

    @property
    def latency(self) -> int:
        return self._stages


def _add(a, b, carry_in) -> Value:
    """``a + b + carry_in`` as a single adder (the carry enters through an extra low bit)."""
    return (Cat(carry_in, a) + Cat(carry_in, b))[1:]


def leading_zeros(m: Module, value: Value, name: str = "lz") -> Signal:
    """Number of leading zeros of *value* as a balanced tree (depth log2 of the width).

    The value is padded with ones below its LSB to a power-of-two width, so an all-zero
    input counts ``len(value)``. Each tree node picks the upper half's count when the
    upper half holds a one, else the lower half's count with the half width added.
    """
    width = 1 << max(1, (len(value) - 1).bit_length())
    pad = width - len(value)
    bits = _wire(m, f"{name}_in", Cat(Const((1 << pad) - 1, pad), value) if pad else value)

    def node(v, path):
        if len(v) == 2:
            return ~v.any(), ~v[1]
        half = len(v) // 2
        lo_zero, lo_count = node(v[:half], path + "0")
        hi_zero, hi_count = node(v[half:], path + "1")
        zero = _wire(m, f"{name}_z{path}", lo_zero & hi_zero)
        count = _wire(m, f"{name}_c{path}", Cat(Mux(hi_zero, lo_count, hi_count), hi_zero))
        return zero, count

    return node(bits, "")[1]


def shift_right_sticky(m: Module, value: Value, amount: Value, name: str = "srs") -> tuple[Signal, Value]:
    """``value >> amount`` and whether any one bits were shifted out.

    A logarithmic shifter; each stage's dropped bits are OR-ed in parallel with its mux and
    the per-stage flags are combined by one OR tree. Amounts of ``len(value)`` or more
    (the high bits of *amount*) zero the value in a single final stage.
    """
    stages = min(len(amount), (len(value) - 1).bit_length())
    original, dropped = value, []
    for i in reversed(range(stages)):
        step = 1 << i
        dropped.append(amount[i] & value[:step].any())
        value = _wire(m, f"{name}_{i}", Mux(amount[i], value >> step, value))
    if len(amount) > stages:
        too_far = amount[stages:].any()
        dropped.append(too_far & original.any())
        value = _wire(m, f"{name}_out", Mux(too_far, 0, value))
    return value, Cat(*dropped).any()


class Fp16Multiplier(_Staged):
    """Exact binary16 x binary16 -> binary32 product.

    Latency ``stages`` cycles (0: combinational), throughput 1 product per cycle.

    The 11x11-bit significand product always fits binary32 exactly (no rounding).
    Subnormal inputs are supported; inf x 0 and NaN inputs give ``NAN32``; the sign of
    a zero or infinite product is the xor of the input signs.

    Parameters
    ----------
    stages : int
        Register stages inside, 0..3: one stage registers the significand product (the
        multiplier block's output register on an FPGA); two stages also register the
        unpacked operands in front of it (its input registers), so that the block's
        inputs and outputs both come straight from flip-flops; three stages also register
        the normalisation's leading-zero count.

    Attributes
    ----------
    a, b : In(16)
        binary16 operands.
    p : Out(32)
        binary32 product.
    en : In(1)
        Only with ``stages > 0``: the inner registers load when high.
    """

    def __init__(self, *, stages: int = 0):
        super().__init__({"a": In(16), "b": In(16), "p": Out(32)}, stages, MUL_MAX_STAGES)

    def elaborate(self, platform):
        m = Module()
        cuts = _Cuts(m, self.en if self._stages else None,
                     {1: [1], 2: [0, 1], 3: [0, 1, 2]}.get(self._stages, []))

        # With significands m_a, m_b (hidden bit explicit, exponent 0 read as 1) the
        # product is m_a*m_b * 2^(e_a+e_b-50). Normalising the 22-bit integer product by
        # its leading-zero count z gives the binary32 exponent e_a+e_b+98-z, which lies in
        # [79, 158] for all nonzero finite inputs.
        def unpack(x):
            e, f = x[10:15], x[0:10]
            return Cat(f, e.any()), e | ~e.any(), e.all() & ~f.any(), e.all() & f.any(), ~x[0:15].any()

        sig_a, exp_a, inf_a, nan_a, zero_a = unpack(self.a)
        sig_b, exp_b, inf_b, nan_b, zero_b = unpack(self.b)
        v = cuts.cut(
            0, sig_a=sig_a, sig_b=sig_b, exp=(exp_a + exp_b + 98)[0:8],
            sign=self.a[15] ^ self.b[15],
            nan=nan_a | nan_b | (inf_a & zero_b) | (inf_b & zero_a),
            inf=inf_a | inf_b, zero=zero_a | zero_b)
        v = cuts.cut(1, prod=(v.pop("sig_a") * v.pop("sig_b"))[0:22], **v)
        prod = _wire(m, "prod", v["prod"])
        v = cuts.cut(2, **v, shift=leading_zeros(m, prod))
        norm = (v["prod"] << v["shift"])[0:21]
        exp = (v["exp"] - v["shift"])[0:8]
        sign = v["sign"]

        with m.If(v["nan"]):
            m.d.comb += self.p.eq(NAN32)
        with m.Elif(v["inf"]):
            m.d.comb += self.p.eq(Cat(Const(0, 23), Const(0xFF, 8), sign))
        with m.Elif(v["zero"]):
            m.d.comb += self.p.eq(Cat(Const(0, 31), sign))
        with m.Else():
            m.d.comb += self.p.eq(Cat(Const(0, 2), norm, exp, sign))
        return m


class Fp32Adder(_Staged):
    """IEEE binary32 adder, round to nearest even.

    Latency ``stages`` cycles (0: combinational), throughput 1 sum per cycle. It closes
    the PE's accumulation loop, so it is structured for low logic depth (see below).

    Subnormal inputs and outputs are supported, overflow rounds to infinity,
    ``x + (-x) = +0``, ``-0 + -0 = -0``, ``inf + -inf`` and NaN inputs give ``NAN32``.

    Parameters
    ----------
    stages : int
        Register stages inside, 0..3, at the cut points listed in :attr:`CUTS`.

    Attributes
    ----------
    a, b : In(32)
        binary32 operands.
    s : Out(32)
        binary32 sum.
    en : In(1)
        Only with ``stages > 0``: the inner registers load when high.
    """

    def __init__(self, *, stages: int = 0):
        super().__init__({"a": In(32), "b": In(32), "s": Out(32)}, stages, ADD_MAX_STAGES)

    # Cut points used for each number of stages: 1 after the operand order and exponent
    # difference, 2 after the near difference and the far alignment shift, 3 after the
    # leading-zero count and the far sum (before the rounding adder and the near shift).
    CUTS = {0: (), 1: (2,), 2: (1, 3), 3: (1, 2, 3)}

    def elaborate(self, platform):
        m = Module()
        a, b = self.a, self.b
        cuts = _Cuts(m, self.en if self._stages else None, self.CUTS[self._stages])

        # Two paths run side by side:
        #
        # - near (effective subtraction, d = |e_a - e_b| <= 1): operands ordered by
        #   magnitude (a 31-bit compare), an exact 25-bit difference, normalised by a tree
        #   leading-zero count. OR-ing a one-hot limit derived from the larger exponent into
        #   the count's input caps the shift so the result exponent stays >= 1 (gradual
        #   underflow without a separate clamp). A shifted result is exact; only the
        #   unshifted one (d = 1, no cancellation) has a guard bit to round.
        # - far (addition, or subtraction with d >= 2): operands ordered by exponent alone
        #   (an 8-bit compare of the exponent fields, so the long compare is off this
        #   path), alignment shift with guard, round and sticky bits, one add/subtract with
        #   carry-in, then a 1-bit normalisation either way.
        #
        # Results that need rounding arrive as (exponent - 1, 24-bit significand, guard,
        # round|sticky), none of it behind the leading-zero count. Adding the significand's
        # hidden bit and the rounding increment to the packed 31-bit magnitude handles
        # rounding carries, subnormal-to-normal and overflow-to-infinity in one adder.
        def unpack(x, n):
            e, f = x[23:31], x[0:23]
            sig = _wire(m, f"sig_{n}", Cat(f, e.any()))
            exp = _wire(m, f"exp_{n}", e | ~e.any())
            return sig, exp, e.all() & ~f.any(), e.all() & f.any()

        sig_a, exp_a, inf_a, nan_a = unpack(a, "a")
        sig_b, exp_b, inf_b, nan_b = unpack(b, "b")
        sub = _wire(m, "sub", a[31] ^ b[31])
        exp_swap = _wire(m, "exp_swap", b[23:31] > a[23:31])
        d = _wire(m, "d", Mux(exp_swap, exp_b - exp_a, exp_a - exp_b)[0:8])
        swap = _wire(m, "swap", b[0:31] > a[0:31])
        v = cuts.cut(
            1, sig_a=sig_a, sig_b=sig_b, sub=sub, exp_swap=exp_swap, d=d, swap=swap,
            exp_l=Mux(exp_swap, exp_b, exp_a), near=sub & ~d[1:].any(),
            sign_near=Mux(swap, b[31], a[31]), sign_far=Mux(exp_swap, b[31], a[31]),
            nan=nan_a | nan_b | (inf_a & inf_b & sub), inf=inf_a | inf_b)
        sig_a, sig_b, sub, exp_swap, d = v["sig_a"], v["sig_b"], v["sub"], v["exp_swap"], v["d"]
        exp_l = _wire(m, "exp_l", v["exp_l"])

        near_l = Mux(v["swap"], sig_b, sig_a)
        near_s = Mux(v["swap"], sig_a, sig_b)
        near_l2 = Cat(Const(0, 1), near_l)
        diff = _wire(m, "diff", (near_l2 - Mux(d[0], near_s, Cat(Const(0, 1), near_s)))[0:25])
        far_l = _wire(m, "far_l", Mux(exp_swap, sig_b, sig_a))
        far_s = _wire(m, "far_s", Mux(exp_swap, sig_a, sig_b))
        aligned, sticky = shift_right_sticky(m, Cat(Const(0, 3), far_s), d, "align")
        v = cuts.cut(
            2, **{k: v[k] for k in ("sub", "near", "sign_near", "sign_far", "nan", "inf")},
            exp_l=exp_l, diff=diff, far_l=far_l,
            addend=Cat(aligned[0] | sticky, aligned[1:]),
            limit=Cat(*(exp_l == 25 - i for i in range(25))))
        sub, near, exp_l, diff = v["sub"], v["near"], v["exp_l"], v["diff"]

        near_shift = leading_zeros(m, diff | v["limit"], "near_lz")
        total = _wire(m, "total", _add(Cat(Const(0, 3), v["far_l"]), v["addend"] ^ sub.replicate(27),
                                       sub)[0:28])

        # The rounding adder's inputs for each case, as (rest, guard, significand, exponent-1,
        # top, below_top), where top means exponent-1 = 254 (overflow) and below_top means
        # 253 (overflow if rounding carries out of the significand), so that overflow is
        # known without waiting for the adder. The late far-path sum bits select last.
        def case(exp_m1, sig, guard, rest=0, top=0, below_top=0):
            return Cat(rest, guard, sig, exp_m1[0:8], top, below_top)

        at_254 = exp_l == 254
        plain = case(exp_l - 1, total[3:27], total[2], total[0:2].any(), below_top=at_254)
        near_case = case(exp_l - 1, diff[1:25], diff[0], below_top=at_254)
        carry = case(exp_l, total[4:28], total[3], total[0:3].any(), at_254, exp_l == 253)
        add_case = Mux(total[27], carry, plain)
        sub_case = Mux(total[26], Mux(near, near_case, plain),
                       Mux(near, near_case, case(exp_l - 2, total[2:26], total[1], total[0])))
        v = cuts.cut(
            3, chosen=Mux(sub, sub_case, add_case), diff=diff, near_shift=near_shift,
            exp_l=exp_l, use_exact=near & ~diff[24],
            sign=Mux(near, v["sign_near"] & diff.any(), v["sign_far"]),
            nan=v["nan"], inf=v["inf"])
        # The exact near result's normalisation shift runs beside the rounding adder.
        near_norm = _wire(m, "near_norm", (v["diff"] << v["near_shift"])[0:25])
        near_exact = Cat(near_norm[1:24], Mux(near_norm[24], v["exp_l"] - v["near_shift"], 0)[0:8])
        chosen = _wire(m, "chosen", v["chosen"])
        rest, guard, sig, exp_m1 = chosen[0], chosen[1], chosen[2:26], chosen[26:34]
        top, below_top = chosen[34], chosen[35]
        round_up = guard & (rest | sig[0])
        rounded = _wire(m, "rounded", (Cat(sig[0:23], exp_m1) + Cat(round_up, Const(0, 22), sig[23]))[0:31])
        use_exact = v["use_exact"]
        overflow = ~use_exact & (top | (below_top & sig.all() & round_up))
        sign = v["sign"]
        special = Mux(v["nan"], NAN32, Cat(Const(0, 23), Const(0xFF, 8), sign))

        with m.If(v["nan"] | v["inf"] | overflow):
            m.d.comb += self.s.eq(special)
        with m.Else():
            m.d.comb += self.s.eq(Cat(Mux(use_exact, near_exact, rounded), sign))
        return m


class Fp32ToFp16(wiring.Component):
    """binary32 -> binary16 conversion, round to nearest even.

    Combinational: latency 0 cycles, throughput 1 conversion per cycle.

    Results below the binary16 normal range become subnormals (or zero), results beyond
    it infinity; NaN inputs give ``NAN16``.

    Attributes
    ----------
    a : In(32)
        binary32 input.
    o : Out(16)
        binary16 result.
    """

    a: In(32)
    o: Out(16)

    def elaborate(self, platform):
        m = Module()
        sign, exp, frac = self.a[31], self.a[23:31], self.a[0:23]
        sig = _wire(m, "sig", Cat(frac, exp.any()))

        # Normal results keep the top 11 significand bits; subnormal ones (biased
        # exponent <= 112) shift the significand right by 126 - exp (capped at 31, where
        # everything is below half the smallest subnormal). As in the adder, the rounding
        # increment is added to the packed magnitude, so carries into the exponent field
        # (and up to infinity) need no special case.
        tiny = _wire(m, "tiny", exp <= 112)
        shifted = _wire(m, "shifted", (Cat(Const(0, 26), sig) >> Mux(exp < 95, 31, 126 - exp)[0:5])[0:50])
        mant = _wire(m, "mant", Mux(tiny, shifted[26:36], sig[13:23]))
        field = Mux(tiny, 0, exp - 112)[0:5]
        guard = Mux(tiny, shifted[25], sig[12])
        rest = Mux(tiny, shifted[0:25].any(), sig[0:12].any())
        round_up = guard & (rest | mant[0])
        mag = _wire(m, "mag", (Cat(mant, field) + round_up)[0:15])

        with m.If(exp.all() & frac.any()):
            m.d.comb += self.o.eq(NAN16)
        with m.Elif(exp >= 143):
            m.d.comb += self.o.eq(Cat(Const(0, 10), Const(0x1F, 5), sign))
        with m.Else():
            m.d.comb += self.o.eq(Cat(mag, sign))
        return m
