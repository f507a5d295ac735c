"""Floating-point arithmetic of a PE lane (docs/architecture.md, Numbers): FP16 multiplier, binary32 adder, FP16 rounding.

By default all three components are combinational (latency 0 cycles, throughput one
operation per cycle) and the PE places pipeline registers around them. The multiplier and
the adder take a ``stages`` parameter that puts that many register stages inside them, at
fixed cut points chosen to split their longest paths; the registers load when ``en`` is
high (the PEs tie it high: their pipelines never hold). NaN outputs are the canonical
quiet NaNs ``0x7FC00000`` (binary32) and ``0x7E00`` (binary16).
"""

from amaranth.hdl import Array, Cat, ClockSignal, Const, Instance, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw import refusing

__all__ = [
    "Fp16Multiplier", "Fp32Adder", "Fp32ToFp16", "NAN32", "NAN16", "leading_zeros", "shift_right_sticky",
    "MUL_MAX_STAGES", "ADD_MAX_STAGES", "stages_problem", "Fp16Norm", "normalise_fp16",
]

MUL_MAX_STAGES = 4
ADD_MAX_STAGES = 3

NAN32 = 0x7FC00000
NAN16 = 0x7E00


class Fp16Norm(data.Struct):
    """A binary16 value with its significand normalised, subnormals included: the operand
    format of ``Fp16Multiplier(normalised=True)``.

    ``frac`` is the significand below its leading one. ``exp`` is the biased exponent plus
    32 for normal numbers (33..62: the 5-bit field with a one above it, no adder); for a
    subnormal with ``z`` leading zeros in its 10-bit fraction it is ``32 - z`` (23..32), so
    the value is always ``1.frac * 2**(exp - 47)``. ``exp`` is 0 for zeros and 63 for
    infinities (``frac`` 0) and NaNs (``frac`` not 0).
    """
    frac: 10
    exp: 6
    sign: 1


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


def normalise_fp16(m: Module, x: Value, name: str = "norm") -> Value:
    """The :class:`Fp16Norm` form (17 bits) of binary16 *x*: a 10-bit leading-zero count and
    left shift, used only by subnormals. It has no adder: a subnormal's exponent ``32 - z``
    is a table of the count (one LUT per bit on an FPGA)."""
    e, f = x[10:15], x[0:10]
    lz = leading_zeros(m, f, f"{name}_lz")
    shifted = _wire(m, f"{name}_shifted", (f << lz)[0:9])
    sub_exp = _wire(m, f"{name}_sub_exp", Array([Const(32 - z, 6) for z in range(10)])[lz[0:4]])
    exp = Mux(e.any(), Cat(e, Const(1, 1)), Mux(f.any(), sub_exp, 0))
    return _wire(m, name, Cat(Mux(e.any(), f, Cat(Const(0, 1), shifted)), exp, x[15]))


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


def ecp5_dsp(platform) -> bool:
    """Whether designs elaborated for *platform* use the ECP5 ``MULT18X18D`` block's own
    registers (an ECP5 board's platform; ``None``, as in simulation and generic synthesis,
    gives plain flip-flops around a ``*``)."""
    return getattr(platform, "family", None) == "ecp5"


def _mult18x18d(m: Module, a: Value, b: Value, en: Value) -> Signal:
    """``a * b`` (unsigned, at most 18 bits each) from an ECP5 ``MULT18X18D`` whose input and
    output registers load when *en* is high: two cycles of latency, as cuts 1 and 2.

    Simulations of such a design use the model ``sim/models/MULT18X18D.v``."""
    p = Signal(36, name="dsp_p")
    ports = {"i_CLK0": ClockSignal(), "i_CE0": en, "i_RST0": Const(0, 1),
             "i_SIGNEDA": Const(0, 1), "i_SIGNEDB": Const(0, 1),
             "i_SOURCEA": Const(0, 1), "i_SOURCEB": Const(0, 1)}
    for i in range(18):
        ports[f"i_A{i}"] = a[i] if i < len(a) else Const(0, 1)
        ports[f"i_B{i}"] = b[i] if i < len(b) else Const(0, 1)
    for i in range(36):
        ports[f"o_P{i}"] = p[i]
    m.submodules.dsp = Instance("MULT18X18D", p_REG_INPUTA_CLK="CLK0", p_REG_INPUTB_CLK="CLK0",
                                p_REG_OUTPUT_CLK="CLK0", **ports)
    return p


class Fp16Multiplier(_Staged):
    """Exact binary16 x binary16 -> binary32 product.

    Latency ``stages`` cycles (0: combinational), throughput 1 product per cycle.

    The 11x11-bit significand product always fits binary32 exactly (no rounding).
    Subnormal inputs are supported; inf x 0 and NaN inputs give ``NAN32``; the sign of
    a zero or infinite product is the xor of the input signs.

    Both significands are normalised before they are multiplied (their leading one at the
    top, subnormals by a 10-bit leading-zero count and shift, :func:`normalise_fp16`), so
    the product needs at most a one-bit shift. With ``normalised=True`` the operands arrive
    in that form already (:class:`Fp16Norm`): a PE array normalises each activation once per
    row of PEs, and a PE its verify weight once for its four lanes.

    Parameters
    ----------
    stages : int
        Register stages inside, 0..4, at cut points 0 to 3. One stage registers the
        significand product (cut 2, the multiplier block's output register on an FPGA);
        two stages also register the normalised significands in front of it (cut 1, its
        input registers), so that the block's inputs and outputs both come straight from
        flip-flops; three stages also register the product after its one-bit normalisation
        (cut 3); four stages also register the normalised operands as they arrive (cut 0,
        flip-flops in the fabric), so that whatever logic drives ``a`` and ``b`` (a PE's
        operand normalisation and mode multiplexer) ends at flip-flops beside it rather
        than at the block's inputs. Elaborated for an ECP5 board (:func:`ecp5_dsp`) with
        two or more stages, cuts 1 and 2 of the significands are the ``MULT18X18D``
        block's own input and output registers, so the block's paths to and from the
        fabric are routing only.
    normalised : bool
        Whether ``a`` and ``b`` are :class:`Fp16Norm` values instead of binary16.

    Attributes
    ----------
    a, b : In(16), or In(Fp16Norm) with ``normalised=True``
        The operands.
    p : Out(32)
        binary32 product.
    en : In(1)
        Only with ``stages > 0``: the inner registers load when high.
    """

    @refusing
    def __init__(self, *, stages: int = 0, normalised: bool = False):
        if not isinstance(normalised, bool):
            raise ValueError(f"normalised must be True or False, not {normalised!r}")
        self._normalised = normalised
        operand = Fp16Norm if normalised else 16
        super().__init__({"a": In(operand), "b": In(operand), "p": Out(32)}, stages,
                         MUL_MAX_STAGES)

    @property
    def normalised(self) -> bool:
        return self._normalised

    def elaborate(self, platform):
        m = Module()
        cuts = _Cuts(m, self.en if self._stages else None,
                     {1: [2], 2: [1, 2], 3: [1, 2, 3], 4: [0, 1, 2, 3]}.get(self._stages, []))
        if self._normalised:
            a, b = Value.cast(self.a), Value.cast(self.b)
        else:
            a, b = normalise_fp16(m, self.a, "norm_a"), normalise_fp16(m, self.b, "norm_b")
        a, b = cuts.cut(0, a=a, b=b).values()

        # An operand is 1.frac * 2**(exp - 47) (Fp16Norm), so the product of the 11-bit
        # significands, in [2**20, 2**22), times 2**(exp_a + exp_b - 114) is the result.
        # With its leading one at bit 21 or 20 it is 1.f * 2**(exp_a + exp_b - 94 + top)
        # (top = bit 21), so the binary32 exponent is exp_a + exp_b + 33 + top, in
        # [79, 158] for all nonzero finite inputs. The exponents are added, and the special
        # cases decoded, after cut 1, beside the significands' multiply: the operands'
        # normalisation ends at cut 1.
        sig_a, sig_b = Cat(a[0:10], Const(1, 1)), Cat(b[0:10], Const(1, 1))
        fields = dict(exp_a=a[10:16], exp_b=b[10:16], sign=a[16] ^ b[16],
                      frac_a=a[0:10].any(), frac_b=b[0:10].any())

        def decode(v):
            special_a, special_b = v["exp_a"].all(), v["exp_b"].all()
            zero_a, zero_b = ~v["exp_a"].any(), ~v["exp_b"].any()
            inf_a, inf_b = special_a & ~v["frac_a"], special_b & ~v["frac_b"]
            return dict(exp=(v["exp_a"] + v["exp_b"] + 33)[0:8], sign=v["sign"],
                        nan=(special_a & v["frac_a"]) | (special_b & v["frac_b"])
                        | (inf_a & zero_b) | (inf_b & zero_a),
                        inf=inf_a | inf_b, zero=zero_a | zero_b)

        if self._stages >= 2 and ecp5_dsp(platform):
            # Cuts 1 and 2 of the significands are the block's input and output registers.
            v = cuts.cut(2, **decode(cuts.cut(1, **fields)))
            v["prod"] = _mult18x18d(m, sig_a, sig_b, self.en)[0:22]
        else:
            v = cuts.cut(1, sig_a=sig_a, sig_b=sig_b, **fields)
            v = cuts.cut(2, prod=(v["sig_a"] * v["sig_b"])[0:22], **decode(v))
        prod = _wire(m, "prod", v.pop("prod"))
        top = prod[21]
        v = cuts.cut(3, norm=Mux(top, prod[0:21], Cat(Const(0, 1), prod[0:20])),
                     exp=(v.pop("exp") + top)[0:8], **v)
        sign = v["sign"]

        with m.If(v["nan"]):
            m.d.comb += self.p.eq(NAN32)
        with m.Elif(v["inf"]):
            m.d.comb += self.p.eq(Cat(Const(0, 23), Const(0xFF, 8), sign))
        with m.Elif(v["zero"]):
            m.d.comb += self.p.eq(Cat(Const(0, 31), sign))
        with m.Else():
            m.d.comb += self.p.eq(Cat(Const(0, 2), v["norm"], v["exp"], sign))
        return m


class Fp32Adder(_Staged):
    """IEEE binary32 adder, round to nearest even.

    Latency ``stages`` cycles (0: combinational), throughput 1 sum per cycle.

    Subnormal inputs and outputs are supported, overflow rounds to infinity,
    ``x + (-x) = +0``, ``-0 + -0 = -0``, ``inf + -inf`` and NaN inputs give ``NAN32``.

    Parameters
    ----------
    stages : int
        Register stages inside, 0..3, at the cut points listed in :attr:`CUTS`.
    subnormals : bool
        With False, the adder leaves out what only subnormal operands and results need
        (the cap on the normalisation shift). It is then exact only where neither operand
        is subnormal and no nonzero sum is below ``2**-126`` in magnitude: the case of a
        PE, whose products and partial sums are all zero or multiples of ``2**-48``
        (FP16 products are; binary32 rounding at those magnitudes keeps them so).

    Attributes
    ----------
    a, b : In(32)
        binary32 operands.
    s : Out(32)
        binary32 sum.
    en : In(1)
        Only with ``stages > 0``: the inner registers load when high.
    """

    @refusing
    def __init__(self, *, stages: int = 0, subnormals: bool = True):
        if not isinstance(subnormals, bool):
            raise ValueError(f"subnormals must be True or False, not {subnormals!r}")
        self._subnormals = subnormals
        super().__init__({"a": In(32), "b": In(32), "s": Out(32)}, stages, ADD_MAX_STAGES)

    @property
    def subnormals(self) -> bool:
        return self._subnormals

    # Cut points used for each number of stages: 1 after the operand order, 2 after the
    # alignment shift, 3 after the significand sum and its leading-zero count (before the
    # rounding adder and the normalisation shift).
    CUTS = {0: (), 1: (2,), 2: (1, 3), 3: (1, 2, 3)}

    def elaborate(self, platform):
        m = Module()
        a, b = self.a, self.b
        cuts = _Cuts(m, self.en if self._stages else None, self.CUTS[self._stages])

        # The adder is most of a PE's area, so it is one datapath. The operands are
        # ordered by magnitude (x >= y, a 31-bit compare); y's significand is aligned to
        # x's exponent with guard, round and sticky bits; one adder adds or subtracts it
        # (x >= y keeps the difference non-negative). Then either
        #
        # - the sum needs at most a one-bit shift (a carry out, or no or one leading zero):
        #   it is rounded by adding the hidden bit and the rounding increment to the packed
        #   31-bit magnitude (exponent - 1, significand), which handles rounding carries,
        #   subnormal-to-normal and overflow-to-infinity in one adder; or
        # - it has two or more leading zeros. That takes a subtraction with exponents at
        #   most one apart (else x - y > x/2), so at most one bit of y lies below x's last
        #   bit, and a shift of two or more leaves nothing to round: the result is exact,
        #   and its normalisation shift runs beside the rounding adder.
        #
        # With subnormals, OR-ing a one-hot limit derived from x's exponent into the count's
        # input caps the shift so the result exponent stays >= 1 (gradual underflow
        # without a separate clamp).
        def unpack(x, n):
            e, f = x[23:31], x[0:23]
            sig = _wire(m, f"sig_{n}", Cat(f, e.any()))
            exp = _wire(m, f"exp_{n}", e | ~e.any()) if self._subnormals else e
            return sig, exp, e.all() & ~f.any(), e.all() & f.any()

        sig_a, exp_a, inf_a, nan_a = unpack(a, "a")
        sig_b, exp_b, inf_b, nan_b = unpack(b, "b")
        sub = a[31] ^ b[31]
        swap = _wire(m, "swap", b[0:31] > a[0:31])
        # The alignment distance saturates at 31: a shift of 27 or more already moves every
        # bit of the 27-bit aligned value into the sticky bit, so the shifter needs no
        # separate stage that zeroes it for the distance's high bits.
        d = _wire(m, "d", Mux(swap, exp_b - exp_a, exp_a - exp_b)[0:8])
        v = cuts.cut(
            1, sig_x=Mux(swap, sig_b, sig_a), sig_y=Mux(swap, sig_a, sig_b),
            exp_x=Mux(swap, exp_b, exp_a), d=d[0:5] | d[5:8].any().replicate(5),
            sub=sub, sign=Mux(swap, b[31], a[31]),
            nan=nan_a | nan_b | (inf_a & inf_b & sub), inf=inf_a | inf_b)
        exp_x, sub = v["exp_x"], v["sub"]
        aligned, sticky = shift_right_sticky(m, Cat(Const(0, 3), v["sig_y"]), v["d"], "align")
        # Without subnormals the limit is a constant 0 (its registers and ORs vanish in
        # synthesis), so both variants share one datapath description. A subtraction's
        # addend is inverted before the cut (x - y = x + ~y + 1), in the shifter's last LUTs.
        v = cuts.cut(
            2, sig_x=v["sig_x"], addend=Cat(aligned[0] | sticky, aligned[1:]) ^ sub.replicate(27),
            exp_x=exp_x,
            limit=Cat(*(exp_x == 27 - i for i in range(27))) if self._subnormals else Const(0, 27),
            sub=sub, sign=v["sign"], nan=v["nan"], inf=v["inf"])
        sub, exp_x = v["sub"], v["exp_x"]
        total = _wire(m, "total", _add(Cat(Const(0, 3), v["sig_x"]), v["addend"], sub)[0:28])
        capped = _wire(m, "capped", total[0:27] | v["limit"])
        # The rounded cases: a carry (one bit right), no leading zero, one leading zero;
        # exponent - 1 is exp_x, exp_x - 1 or exp_x - 2 (0 where the shift is capped).
        carry, lead0 = total[27] & ~sub, capped[26]
        right = Cat(total[0] | total[1], total[2:28])
        left = Cat(Const(0, 1), total[0:26])
        shifted = _wire(m, "shifted", Mux(carry, right, Mux(lead0, total[0:27], left)))
        # The rounding increment is decided before the cut, so that after it the rounding
        # carry chain starts straight from registers.
        v = cuts.cut(
            3, shifted=shifted[3:27], round_up=shifted[2] & (shifted[0:2].any() | shifted[3]),
            exp_m1=Mux(carry, exp_x, Mux(lead0, exp_x - 1, exp_x - 2))[0:8],
            use_rounded=carry | lead0 | capped[25],
            total=total[0:27], lz=leading_zeros(m, capped, "lz"), exp_x=exp_x,
            sign=v["sign"] & ~(sub & ~total[0:27].any()), nan=v["nan"], inf=v["inf"])
        sig, round_up = v["shifted"], v["round_up"]
        rounded = _wire(m, "rounded", (Cat(sig[0:23], v["exp_m1"]) + Cat(round_up, Const(0, 22), sig[23]))[0:31])
        # Overflow: the packed exponent, exp_m1 + sig[23] plus the rounding carry out of the
        # 23 fraction bits (mod 256), is all ones, or that carry wraps it past all ones. A
        # carry into all ones leaves a zero fraction, which is infinity already, so the test
        # is exp_m1 + sig[23] = 255 (the wrap needs it too); exp_m1 is 255 only for an
        # infinite or NaN x, which takes the special path anyway. It is decided from the
        # registers beside the rounding adder, not from the adder's exponent bits, so that
        # after the carry chain only the result multiplexer is left.
        overflow = sig[23] & (v["exp_m1"] == 254)
        # Only exact sums use norm, and their two lowest bits are zero (both operands'
        # are: the alignment moved y by at most one bit).
        norm = _wire(m, "norm", (Cat(Const(0, 2), v["total"][2:27]) << v["lz"])[0:27])
        exact = Cat(norm[3:26], Mux(norm[26], v["exp_x"] - v["lz"], 0)[0:8])
        use_rounded = v["use_rounded"]
        sign = v["sign"]
        special = Mux(v["nan"], NAN32, Cat(Const(0, 23), Const(0xFF, 8), sign))

        with m.If(v["nan"] | v["inf"] | (use_rounded & overflow)):
            m.d.comb += self.s.eq(special)
        with m.Else():
            m.d.comb += self.s.eq(Cat(Mux(use_rounded, rounded, exact), sign))
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
