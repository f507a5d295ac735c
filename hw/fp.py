"""Floating-point arithmetic of a PE lane (DESIGN §3): FP16 multiplier, binary32 adder, FP16 rounding.

All three components are purely combinational (latency 0 cycles, throughput one
operation per cycle); the PE places pipeline registers around them. NaN outputs are the
canonical quiet NaNs ``0x7FC00000`` (binary32) and ``0x7E00`` (binary16).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Fp16Multiplier", "Fp32Adder", "Fp32ToFp16", "NAN32", "NAN16"]

NAN32 = 0x7FC00000
NAN16 = 0x7E00


def _wire(m: Module, name: str, value) -> Signal:
    """A named combinational signal driven by *value* (keeps shared logic shared)."""
    value = Value.cast(value)
    sig = Signal(value.shape(), name=name)
    m.d.comb += sig.eq(value)
    return sig


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


def trailing_zeros(m: Module, value: Value, name: str = "tz") -> Signal:
    """Number of trailing zeros of *value* (``len(value)`` when it is zero)."""
    return leading_zeros(m, Cat(*reversed(list(value))), name)


class Fp16Multiplier(wiring.Component):
    """Exact binary16 x binary16 -> binary32 product.

    Combinational: latency 0 cycles, throughput 1 product per cycle.

    The 11x11-bit significand product always fits binary32 exactly (no rounding).
    Subnormal inputs are supported; inf x 0 and NaN inputs give ``NAN32``; the sign of
    a zero or infinite product is the xor of the input signs.

    Attributes
    ----------
    a, b : In(16)
        binary16 operands.
    p : Out(32)
        binary32 product.
    """

    a: In(16)
    b: In(16)
    p: Out(32)

    def elaborate(self, platform):
        m = Module()

        # With significands m_a, m_b (hidden bit explicit, exponent 0 read as 1) the
        # product is m_a*m_b * 2^(e_a+e_b-50). Normalising the 22-bit integer product by
        # its leading-zero count z gives the binary32 exponent e_a+e_b+98-z, which lies in
        # [79, 158] for all nonzero finite inputs.
        def unpack(x):
            e, f = x[10:15], x[0:10]
            return Cat(f, e.any()), e | ~e.any(), e.all() & ~f.any(), e.all() & f.any(), ~x[0:15].any()

        sig_a, exp_a, inf_a, nan_a, zero_a = unpack(self.a)
        sig_b, exp_b, inf_b, nan_b, zero_b = unpack(self.b)
        sign = self.a[15] ^ self.b[15]
        prod = _wire(m, "prod", (sig_a * sig_b)[0:22])
        shift = leading_zeros(m, prod)
        norm = (prod << shift)[0:21]
        exp = (exp_a + exp_b + 98 - shift)[0:8]

        with m.If(nan_a | nan_b | (inf_a & zero_b) | (inf_b & zero_a)):
            m.d.comb += self.p.eq(NAN32)
        with m.Elif(inf_a | inf_b):
            m.d.comb += self.p.eq(Cat(Const(0, 23), Const(0xFF, 8), sign))
        with m.Elif(zero_a | zero_b):
            m.d.comb += self.p.eq(Cat(Const(0, 31), sign))
        with m.Else():
            m.d.comb += self.p.eq(Cat(Const(0, 2), norm, exp, sign))
        return m


class Fp32Adder(wiring.Component):
    """IEEE binary32 adder, round to nearest even.

    Combinational: latency 0 cycles, throughput 1 sum per cycle. It closes the PE's
    single-cycle accumulation loop, so it is structured for low logic depth (see below).

    Subnormal inputs and outputs are supported, overflow rounds to infinity,
    ``x + (-x) = +0``, ``-0 + -0 = -0``, ``inf + -inf`` and NaN inputs give ``NAN32``.

    Attributes
    ----------
    a, b : In(32)
        binary32 operands.
    s : Out(32)
        binary32 sum.
    """

    a: In(32)
    b: In(32)
    s: Out(32)

    def elaborate(self, platform):
        m = Module()
        a, b = self.a, self.b

        # Operands are ordered by magnitude (one 31-bit compare), the exponent difference
        # d taken from both subtractions computed in parallel. Two paths then run side by
        # side and a mux picks one:
        #
        # - near (effective subtraction, d <= 1): an exact 25-bit difference, normalised by
        #   a tree leading-zero count. OR-ing a one-hot limit derived from the larger
        #   exponent into the count's input caps the shift so the result exponent stays >= 1
        #   (gradual underflow without a separate clamp).
        # - far (addition, or subtraction with d >= 2): alignment shift with guard, round
        #   and sticky bits, one add/subtract, then a 1-bit normalisation either way. The
        #   sticky bit comes from the smaller operand's trailing-zero count (computed before
        #   the swap), not from OR-ing the shifted-out bits. (A zero operand counts 24 and
        #   may set a lone sticky bit; that never changes a rounded result.)
        #
        # Both deliver (exponent - 1, 24-bit significand, guard, round|sticky). Packing the
        # significand's hidden bit into the exponent field and adding the rounding
        # increment to the 31-bit magnitude handles rounding carries, subnormal-to-normal
        # and overflow-to-infinity in one adder.
        def unpack(x, n):
            e, f = x[23:31], x[0:23]
            sig = _wire(m, f"sig_{n}", Cat(f, e.any()))
            exp = _wire(m, f"exp_{n}", e | ~e.any())
            return sig, exp, trailing_zeros(m, sig, f"tz_{n}"), e.all() & ~f.any(), e.all() & f.any()

        sig_a, exp_a, tz_a, inf_a, nan_a = unpack(a, "a")
        sig_b, exp_b, tz_b, inf_b, nan_b = unpack(b, "b")
        swap = _wire(m, "swap", b[0:31] > a[0:31])
        sign = Mux(swap, b[31], a[31])
        sub = _wire(m, "sub", a[31] ^ b[31])
        sig_l = _wire(m, "sig_l", Mux(swap, sig_b, sig_a))
        sig_s = _wire(m, "sig_s", Mux(swap, sig_a, sig_b))
        exp_l = _wire(m, "exp_l", Mux(swap, exp_b, exp_a))
        tz_s = Mux(swap, tz_a, tz_b)
        d = _wire(m, "d", Mux(swap, exp_b - exp_a, exp_a - exp_b)[0:8])
        near = _wire(m, "near", sub & ~d[1:].any())

        diff = _wire(m, "diff", (Cat(Const(0, 1), sig_l) - Mux(d[0], sig_s, Cat(Const(0, 1), sig_s)))[0:25])
        limit = (Const(1 << 24, 25) >> (exp_l - 1)[0:8])[0:25]
        near_shift = leading_zeros(m, diff | limit, "near_lz")
        near_norm = _wire(m, "near_norm", (diff << near_shift)[0:25])
        near_exp = (exp_l - 1 - near_shift)[0:8]
        near_zero = ~diff.any()

        aligned = _wire(m, "aligned", (Cat(Const(0, 3), sig_s) >> d)[0:27])
        sticky = tz_s + 3 < d
        addend = _wire(m, "addend", Cat(aligned[0] | sticky, aligned[1:]))
        total = _wire(m, "total", (Cat(Const(0, 3), sig_l) + Mux(sub, ~addend, addend) + sub)[0:28])
        carry = total[27] & ~sub
        borrow = sub & ~total[26]

        exp_m1 = Signal(8)
        sig = Signal(24)
        guard = Signal()
        rest = Signal()
        with m.If(near):
            m.d.comb += [exp_m1.eq(near_exp), sig.eq(near_norm[1:25]), guard.eq(near_norm[0])]
        with m.Elif(carry):
            m.d.comb += [exp_m1.eq(exp_l), sig.eq(total[4:28]), guard.eq(total[3]), rest.eq(total[0:3].any())]
        with m.Elif(borrow):
            m.d.comb += [exp_m1.eq(exp_l - 2), sig.eq(total[2:26]), guard.eq(total[1]), rest.eq(total[0])]
        with m.Else():
            m.d.comb += [exp_m1.eq(exp_l - 1), sig.eq(total[3:27]), guard.eq(total[2]), rest.eq(total[0:2].any())]

        round_up = guard & (rest | sig[0])
        mag = _wire(m, "mag", (Cat(sig[0:23], exp_m1) + Cat(round_up, Const(0, 22), sig[23]))[0:32])
        overflow = mag[23:32] >= 0xFF

        with m.If(nan_a | nan_b | (inf_a & inf_b & sub)):
            m.d.comb += self.s.eq(NAN32)
        with m.Elif(inf_a | inf_b | overflow):
            m.d.comb += self.s.eq(Cat(Const(0, 23), Const(0xFF, 8), sign))
        with m.Elif(near & near_zero):
            m.d.comb += self.s.eq(0)
        with m.Else():
            m.d.comb += self.s.eq(Cat(mag[0:31], sign))
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
