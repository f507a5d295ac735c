"""Lane arithmetic: golden/fp.py against exact rational references, hw/fp.py against golden/fp.py.

The golden functions are checked against references built from ``fractions.Fraction``
(exact sums, exact products, explicit round-to-nearest-even), which share no code with
numpy's float arithmetic. The Amaranth components are then simulated and compared with
the golden functions bit for bit (NaNs included: only the canonical patterns ``0x7FC00000``
and ``0x7E00`` are right) on every pair of edge cases and on
random vectors biased towards close exponents, cancellation, subnormals and ties (the
edge lists and generators are shared with the cocotb testbench, ``sim/tb_fp.py``).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from golden import fp
from amaranth.hdl import Module, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.fp import Fp16Multiplier, Fp16Norm, Fp32Adder, Fp32ToFp16, normalise_fp16
from sim.tb_fp import (FP16_EDGES, FP32_EDGES, FP32_TO_FP16_EDGES, cross, random_fp16_pairs,
                       random_fp32_for_fp16, random_fp32_pairs)

# --------------------------------------------------------------------------------------
# Exact references


def _value(bits: int, ebits: int, mbits: int) -> Fraction | float:
    """Exact value of an IEEE pattern (``Fraction``), or a float for inf / NaN."""
    sign = -1 if bits >> (ebits + mbits) & 1 else 1
    e, f = bits >> mbits & ((1 << ebits) - 1), bits & ((1 << mbits) - 1)
    bias = (1 << (ebits - 1)) - 1
    if e == (1 << ebits) - 1:
        return math.nan if f else sign * math.inf
    if e == 0:
        return sign * Fraction(f, 1 << (mbits + bias - 1))
    return sign * Fraction(f | 1 << mbits) * Fraction(2) ** (e - bias - mbits)


def _round(x: Fraction, ebits: int, mbits: int, negative_zero: bool = False) -> int:
    """Round an exact rational to the nearest IEEE pattern, ties to even."""
    sign = int(x < 0 or (x == 0 and negative_zero)) << (ebits + mbits)
    x = abs(x)
    bias = (1 << (ebits - 1)) - 1
    if x == 0:
        return sign
    e = x.numerator.bit_length() - x.denominator.bit_length()
    if Fraction(2) ** e > x:
        e -= 1
    e = max(e, 1 - bias)
    q = x / Fraction(2) ** (e - mbits)
    n, rem = divmod(q.numerator, q.denominator)
    if 2 * rem > q.denominator or (2 * rem == q.denominator and n & 1):
        n += 1
    if n >> (mbits + 1):
        n, e = n >> 1, e + 1
    if e > bias:
        return sign | ((1 << ebits) - 1) << mbits
    if n >> mbits == 0:
        return sign | n
    return sign | (e + bias) << mbits | (n - (1 << mbits))


def ref_add(a: int, b: int) -> int:
    va, vb = _value(a, 8, 23), _value(b, 8, 23)
    if isinstance(va, float) or isinstance(vb, float):
        s = float(va) + float(vb)
        return fp.NAN32 if math.isnan(s) else (0xFF800000 if s < 0 else 0x7F800000)
    return _round(va + vb, 8, 23, negative_zero=bool(a >> 31 and b >> 31))


def ref_to_fp16(a: int) -> int:
    v = _value(a, 8, 23)
    if isinstance(v, float):
        return fp.NAN16 if math.isnan(v) else (0xFC00 if v < 0 else 0x7C00)
    return _round(v, 5, 10, negative_zero=bool(a >> 31))


def ref_mul(a: int, b: int) -> int:
    va, vb = _value(a, 5, 10), _value(b, 5, 10)
    if isinstance(va, float) or isinstance(vb, float):
        p = float(va) * float(vb)
        if math.isnan(p):
            return fp.NAN32
        return 0xFF800000 if p < 0 else 0x7F800000
    return _round(va * vb, 8, 23, negative_zero=bool((a ^ b) >> 15))


def _mismatches(name, inputs, got, want) -> str:
    bad = np.nonzero(np.asarray(got, np.uint32) != np.asarray(want, np.uint32))[0]
    lines = [f"{name}: {len(bad)} of {len(want)} differ"]
    for i in bad[:8]:
        ins = ", ".join(f"{x[i]:#x}" for x in inputs)
        lines.append(f"  ({ins}) -> {int(got[i]):#x}, expected {int(want[i]):#x}")
    return "\n".join(lines)


def assert_fp_equal(name, inputs, got, want) -> None:
    """Bit-for-bit equality, NaNs included."""
    assert np.array_equal(np.asarray(got, np.uint32), np.asarray(want, np.uint32)), \
        _mismatches(name, inputs, got, want)


# --------------------------------------------------------------------------------------
# Golden model


def test_fp16_mul_edge_cases_match_exact_products():
    a, b = cross(FP16_EDGES)
    want = [ref_mul(int(x), int(y)) for x, y in zip(a, b)]
    assert_fp_equal("fp16_mul", (a, b), fp.fp16_mul(a, b), want)


def test_fp16_mul_random_products_are_exact_float64_products(rng):
    a = rng.integers(0, 1 << 16, 200_000).astype(np.uint16)
    b = rng.integers(0, 1 << 16, 200_000).astype(np.uint16)
    b[: 50_000] &= 0x83FF  # subnormal operands
    with np.errstate(all="ignore"):
        exact = fp.bits_to_float16(a).astype(np.float64) * fp.bits_to_float16(b).astype(np.float64)
    finite = np.isfinite(exact)
    as32 = exact.astype(np.float32)
    assert np.all(as32[finite].astype(np.float64) == exact[finite]), "product not representable"
    want = np.where(np.isnan(exact), fp.NAN32, as32.view(np.uint32))
    assert_fp_equal("fp16_mul", (a, b), fp.fp16_mul(a, b), want)


def test_fp16_mul_sign_of_zero_and_invalid():
    assert fp.fp16_mul(0x8000, 0x3C00) == 0x80000000
    assert fp.fp16_mul(0x8000, 0x8001) == 0x00000000
    assert fp.fp16_mul(0x7C00, 0x8000) == fp.NAN32
    assert fp.fp16_mul(0xFC00, 0x0001) == 0xFF800000
    assert fp.fp16_mul(0x0001, 0x0001) == 0x27800000  # 2**-48


def test_fp32_add_edge_cases_match_exact_sums():
    a, b = cross(FP32_EDGES)
    want = [ref_add(int(x), int(y)) for x, y in zip(a, b)]
    assert_fp_equal("fp32_add", (a, b), fp.fp32_add(a, b), want)


def test_fp32_add_random_matches_exact_sums(rng):
    a, b = random_fp32_pairs(rng, 30_000)
    want = [ref_add(int(x), int(y)) for x, y in zip(a, b)]
    assert_fp_equal("fp32_add", (a, b), fp.fp32_add(a, b), want)


def test_fp32_add_signed_zero_rules_and_ties():
    assert fp.fp32_add(0x3F800000, 0xBF800000) == 0x00000000
    assert fp.fp32_add(0x80000000, 0x80000000) == 0x80000000
    assert fp.fp32_add(0x80000000, 0x00000000) == 0x00000000
    assert fp.fp32_add(0x3F800000, 0x33800000) == 0x3F800000  # 1 + 2**-24: tie, to even
    assert fp.fp32_add(0x3F800001, 0x33800000) == 0x3F800002  # tie, odd -> up
    assert fp.fp32_add(0x7F7FFFFF, 0x73000000) == 0x7F800000  # tie at the top -> inf
    assert fp.fp32_add(0x7F800000, 0xFF800000) == fp.NAN32
    assert fp.fp32_add(0x7FA00001, 0x3F800000) == fp.NAN32


def test_fp32_to_fp16_edge_and_random_match_exact_rounding(rng):
    x = np.concatenate([np.array(FP32_TO_FP16_EDGES, np.uint32), random_fp32_for_fp16(rng, 30_000)])
    want = np.array([ref_to_fp16(int(v)) for v in x], np.uint32)
    got = fp.fp32_to_fp16(x).astype(np.uint32)
    assert np.array_equal(got, want), _mismatches("fp32_to_fp16", (x,), got, want)


def test_fp32_to_fp16_round_trips_every_fp16_and_rounds_midpoints_to_even():
    h = np.arange(1 << 16, dtype=np.uint16)
    h = h[~fp.is_nan16(h)]
    as32 = fp.float32_to_bits(fp.bits_to_float16(h).astype(np.float32))
    assert np.array_equal(fp.fp32_to_fp16(as32), h)
    # Midpoints between consecutive positive finite FP16 values (exact in binary32).
    lo = np.arange(0, 0x7BFF, dtype=np.uint16)
    mid = (fp.bits_to_float16(lo).astype(np.float64) + fp.bits_to_float16(lo + 1).astype(np.float64)) / 2
    got = fp.fp32_to_fp16(fp.float32_to_bits(mid))
    assert np.array_equal(got, np.where(lo & 1, lo + 1, lo))


def test_mac_is_sequential_float32_accumulation(rng):
    w = (rng.integers(0, 0x7C00, (6, 40)) | rng.integers(0, 2, (6, 40)) << 15).astype(np.uint16)
    a = rng.integers(0, 0x7C00, 40).astype(np.uint16)
    got = fp.mac(w, a)
    assert got.shape == (6,) and got.dtype == np.uint32
    for row in range(6):
        acc = 0
        for k in range(40):
            acc = ref_add(acc, ref_mul(int(w[row, k]), int(a[k])))
        assert got[row] == acc, f"row {row}: {int(got[row]):#x} != {acc:#x}"
    acc = np.float32(0)
    wf, af = fp.bits_to_float16(w[0]).astype(np.float32), fp.bits_to_float16(a).astype(np.float32)
    for k in range(40):
        acc = np.float32(acc + wf[k] * af[k])
    assert got[0] == fp.float32_to_bits(acc)


def test_mac_empty_sum_is_positive_zero_and_scalar_is_rejected():
    assert fp.mac(np.zeros((3, 0), np.uint16), np.zeros(0, np.uint16)).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="axis"):
        fp.mac(0x3C00, 0x3C00)


def test_bit_helpers():
    assert fp.is_nan16(0x7C01) and fp.is_nan16(0xFE00) and not fp.is_nan16(0x7C00)
    assert fp.is_nan32(0x7F800001) and not fp.is_nan32(0x7F800000)
    assert fp.float32_to_bits(1.0) == 0x3F800000 and fp.bits_to_float32(0x40000000) == 2.0
    assert fp.float16_to_bits(-2.0) == 0xC000 and fp.bits_to_float16(0x3C00) == 1.0
    assert fp.fp16_mul(np.uint16(0x3C00), 0x4000).shape == ()
    with pytest.raises(ValueError, match="integer"):
        fp.fp32_add(1.0, 2.0)
    with pytest.raises(ValueError, match="2\\*\\*16"):
        fp.fp16_mul(0x10000, 0)


# --------------------------------------------------------------------------------------
# Amaranth simulation of hw/fp.py


def simulate(dut, inputs: dict[str, np.ndarray], output: str) -> np.ndarray:
    """Drive the combinational *dut* with one vector per step and collect *output*."""
    names = list(inputs)
    columns = [np.asarray(inputs[n]).astype(np.int64).tolist() for n in names]
    ports = [Value.cast(getattr(dut, n)) for n in names]
    out_port = Value.cast(getattr(dut, output))
    results = []

    async def testbench(ctx):
        for values in zip(*columns):
            for port, value in zip(ports, values):
                ctx.set(port, value)
            await ctx.delay(1e-9)
            results.append(ctx.get(out_port))

    sim = Simulator(dut)
    sim.add_testbench(testbench)
    sim.run()
    return np.array(results, dtype=np.uint32)


def test_fp16_multiplier_rtl_edge_cross_and_random(rng):
    ea, eb = cross(FP16_EDGES)
    ra, rb = random_fp16_pairs(rng, 6000)
    a, b = np.concatenate([ea, ra]).astype(np.uint16), np.concatenate([eb, rb]).astype(np.uint16)
    got = simulate(Fp16Multiplier(), {"a": a, "b": b}, "p")
    assert_fp_equal("Fp16Multiplier", (a, b), got, fp.fp16_mul(a, b))


def test_fp32_adder_rtl_edge_cross():
    a, b = cross(FP32_EDGES)
    a, b = a.astype(np.uint32), b.astype(np.uint32)
    got = simulate(Fp32Adder(), {"a": a, "b": b}, "s")
    assert_fp_equal("Fp32Adder", (a, b), got, fp.fp32_add(a, b))


def test_fp32_adder_rtl_random_biased(rng):
    a, b = random_fp32_pairs(rng, 5000)
    got = simulate(Fp32Adder(), {"a": a, "b": b}, "s")
    assert_fp_equal("Fp32Adder", (a, b), got, fp.fp32_add(a, b))


def test_fp32_adder_rtl_accumulates_like_mac(rng):
    """The PE's use: a running sum of FP16 products, fed back each step."""
    # Finite signed terms over a wide range of scales (subnormals included), so that the
    # running sums cancel and round rather than saturating to inf or NaN.
    w = fp.float16_to_bits(rng.normal(size=(4, 64)) * 2.0 ** rng.integers(-20, 8, (4, 64)))
    x = fp.float16_to_bits(rng.normal(size=64) * 2.0 ** rng.integers(-20, 8, 64))
    dut = Fp32Adder()
    sums = []

    async def testbench(ctx):
        for row in range(4):
            acc = 0
            for k in range(64):
                ctx.set(dut.a, acc)
                ctx.set(dut.b, int(fp.fp16_mul(w[row, k], x[k])))
                await ctx.delay(1e-9)
                acc = ctx.get(dut.s)
            sums.append(acc)

    sim = Simulator(dut)
    sim.add_testbench(testbench)
    sim.run()
    want = fp.mac(w, x)
    assert_fp_equal("Fp32Adder loop", (np.arange(4),), np.array(sums, np.uint32), want)


def test_fp32_to_fp16_rtl_edges_random_and_every_fp16(rng):
    h = np.arange(1 << 16, dtype=np.uint16)
    every = fp.float32_to_bits(fp.bits_to_float16(h).astype(np.float32))
    x = np.concatenate([np.array(FP32_TO_FP16_EDGES, np.uint32), random_fp32_for_fp16(rng, 10_000), every])
    got = simulate(Fp32ToFp16(), {"a": x}, "o")
    want = fp.fp32_to_fp16(x).astype(np.uint32)
    assert np.array_equal(got, want), _mismatches("Fp32ToFp16", (x,), got, want)


# Inputs whose result is NaN: NaN operands of either sign with quiet, signalling and full
# payloads, and the invalid operations. The RTL must give exactly the canonical pattern.
_NAN16_IN = [0x7E00, 0xFE00, 0x7C01, 0xFC01, 0x7D55, 0xFFFF, 0x7FFF]
_NAN32_IN = [0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FA00000, 0x7FFFFFFF, 0xFFFFFFFF]


def test_rtl_nan_results_are_exactly_the_canonical_patterns():
    mul = [(n, x) for n in _NAN16_IN for x in (0x0000, 0x8000, 0x3C00, 0xFC00, 0x0001, n)]
    mul += [(x, n) for n, x in mul]
    mul += [(0x7C00, 0x0000), (0x7C00, 0x8000), (0xFC00, 0x0000), (0x8000, 0xFC00)]  # inf x 0
    a, b = (np.array(c, np.uint16) for c in zip(*mul))
    got = simulate(Fp16Multiplier(), {"a": a, "b": b}, "p")
    assert [f"{int(v):#010x}" for v in got] == ["0x7fc00000"] * len(mul)
    assert np.all(fp.fp16_mul(a, b) == 0x7FC00000)

    add = [(n, x) for n in _NAN32_IN
           for x in (0x00000000, 0x80000000, 0x3F800000, 0xFF800000, 0x7F7FFFFF, n)]
    add += [(x, n) for n, x in add]
    add += [(0x7F800000, 0xFF800000), (0xFF800000, 0x7F800000)]                         # inf - inf
    a, b = (np.array(c, np.uint32) for c in zip(*add))
    got = simulate(Fp32Adder(), {"a": a, "b": b}, "s")
    assert [f"{int(v):#010x}" for v in got] == ["0x7fc00000"] * len(add)
    assert np.all(fp.fp32_add(a, b) == 0x7FC00000)

    x = np.array(_NAN32_IN, np.uint32)
    got = simulate(Fp32ToFp16(), {"a": x}, "o")
    assert [f"{int(v):#06x}" for v in got] == ["0x7e00"] * len(x)
    assert np.all(fp.fp32_to_fp16(x) == 0x7E00)


@pytest.mark.parametrize("component", [Fp16Multiplier, Fp32Adder, Fp32ToFp16])
def test_components_are_combinational_by_default_with_documented_ports(component):
    dut = component()
    Fragment.get(dut, None)
    widths = {name: len(getattr(dut, name)) for name in dut.signature.members}
    assert widths == {
        Fp16Multiplier: {"a": 16, "b": 16, "p": 32},
        Fp32Adder: {"a": 32, "b": 32, "s": 32},
        Fp32ToFp16: {"a": 32, "o": 16},
    }[component]
    assert "latency 0" in component.__doc__.lower() or "(0: combinational)" in component.__doc__


def simulate_pipelined(dut, inputs: dict[str, np.ndarray], output: str, seed: int) -> np.ndarray:
    """Drive a pipelined *dut* one vector per enabled cycle, ``en`` low at random in between.

    The output of a vector is read ``dut.latency`` enabled cycles after it was applied.
    """
    names = list(inputs)
    columns = [np.asarray(inputs[n]).astype(np.int64).tolist() for n in names]
    ports = [Value.cast(getattr(dut, n)) for n in names]
    rng = np.random.default_rng(seed)
    results = []

    async def testbench(ctx):
        vectors = list(zip(*columns)) + [None] * dut.latency
        for i, values in enumerate(vectors):
            while rng.random() < 0.3:            # a stalled cycle with other inputs
                for port in ports:
                    ctx.set(port, int(rng.integers(0, 1 << 16)))
                ctx.set(dut.en, 0)
                await ctx.tick()
            for port, value in zip(ports, values or [0] * len(ports)):
                ctx.set(port, value)
            ctx.set(dut.en, 1)
            if i >= dut.latency:
                results.append(ctx.get(Value.cast(getattr(dut, output))))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return np.array(results, dtype=np.uint32)


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_pipelined_fp16_multiplier_matches_golden(rng, stages, seed):
    ea, eb = cross(FP16_EDGES)
    ra, rb = random_fp16_pairs(rng, 1500)
    a, b = np.concatenate([ea, ra]).astype(np.uint16), np.concatenate([eb, rb]).astype(np.uint16)
    dut = Fp16Multiplier(stages=stages)
    assert dut.latency == stages
    got = simulate_pipelined(dut, {"a": a, "b": b}, "p", seed)
    assert_fp_equal(f"Fp16Multiplier(stages={stages})", (a, b), got, fp.fp16_mul(a, b))


def ref_normalise(x: int) -> int:
    """Fp16Norm bits of binary16 *x*, from its definition (hw/fp.py), without the RTL."""
    sign, e, f = x >> 15, (x >> 10) & 0x1F, x & 0x3FF
    if e == 31:
        return (sign << 16) | (63 << 10) | f
    if e:
        return (sign << 16) | ((e + 32) << 10) | f
    if f == 0:
        return sign << 16
    z = 10 - f.bit_length()                   # leading zeros in the 10-bit fraction
    return (sign << 16) | ((32 - z) << 10) | ((f << (z + 1)) & 0x3FF)


class _Normaliser(wiring.Component):
    def __init__(self):
        super().__init__({"x": In(16), "n": Out(Fp16Norm)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.n.eq(normalise_fp16(m, self.x))
        return m


def test_normalise_fp16_every_subnormal_zero_and_special_and_random_normals(rng):
    """The RTL normaliser against its definition, and the form's value against the float."""
    subnormal_and_special = [s | v for s in (0, 0x8000) for v in [*range(0, 0x400), *range(0x7C00, 0x8000)]]
    normals = rng.integers(0x400, 0x7C00, 3000) | (rng.integers(0, 2, 3000) << 15)
    x = np.array(subnormal_and_special + normals.tolist(), np.uint16)
    got = simulate(_Normaliser(), {"x": x}, "n")
    want = np.array([ref_normalise(int(v)) for v in x], np.uint32)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, ", ".join(f"{int(x[i]):#06x}: {int(got[i]):#07x} != {int(want[i]):#07x}"
                                    for i in bad[:8])
    for v, n in zip(x.tolist(), want.tolist()):
        exp, frac = (n >> 10) & 63, n & 0x3FF
        if 0 < exp < 63:                         # finite nonzero: 1.frac * 2**(exp - 47)
            value = Fraction(1024 + frac, 1024) * Fraction(2) ** (exp - 47)
            assert value == abs(Fraction(_value(v, 5, 10))), hex(v)


@pytest.mark.parametrize("stages", [0, 1, 2, 3, 4])
def test_normalised_fp16_multiplier_matches_golden(rng, stages, seed):
    ea, eb = cross(FP16_EDGES)
    ra, rb = random_fp16_pairs(rng, 1500)
    a, b = np.concatenate([ea, ra]).astype(np.uint16), np.concatenate([eb, rb]).astype(np.uint16)
    na = np.array([ref_normalise(int(v)) for v in a], np.uint32)
    nb = np.array([ref_normalise(int(v)) for v in b], np.uint32)
    dut = Fp16Multiplier(stages=stages, normalised=True)
    assert Fp16Norm.as_shape().size == 17 and dut.latency == stages
    if stages:
        got = simulate_pipelined(dut, {"a": na, "b": nb}, "p", seed)
    else:
        got = simulate(dut, {"a": na, "b": nb}, "p")
    assert_fp_equal(f"Fp16Multiplier(stages={stages}, normalised=True)", (a, b), got, fp.fp16_mul(a, b))


def test_normalised_flag_must_be_a_bool():
    with pytest.raises(ValueError, match="normalised must be True or False"):
        Fp16Multiplier(normalised=1)


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_pipelined_fp32_adder_matches_golden(rng, stages, seed):
    ea, eb = cross(FP32_EDGES)
    ra, rb = random_fp32_pairs(rng, 1500)
    a = np.concatenate([ea, ra]).astype(np.uint32)
    b = np.concatenate([eb, rb]).astype(np.uint32)
    dut = Fp32Adder(stages=stages)
    assert dut.latency == stages
    got = simulate_pipelined(dut, {"a": a, "b": b}, "s", seed)
    assert_fp_equal(f"Fp32Adder(stages={stages})", (a, b), got, fp.fp32_add(a, b))


@pytest.mark.parametrize("component,stages", [(Fp16Multiplier, 5), (Fp32Adder, 4), (Fp32Adder, -1),
                                              (Fp32Adder, True), (Fp16Multiplier, 1.0)])
def test_stage_counts_out_of_range_are_rejected(component, stages):
    with pytest.raises(ValueError, match="stages must be an integer"):
        component(stages=stages)


def test_golden_and_hw_stay_independent():
    """docs/architecture.md, Layout: golden/fp.py imports neither amaranth nor hw; hw/fp.py never imports golden."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def imported(path):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module.split(".")[0])
        return names

    assert not imported(root / "golden" / "fp.py") & {"amaranth", "hw"}
    assert "golden" not in imported(root / "hw" / "fp.py")


# --------------------------------------------------------------------------------------
# The PE's adder: Fp32Adder(subnormals=False) on the values a PE can produce


def _subnormal(x) -> np.ndarray:
    x = np.asarray(x, np.uint32)
    return ((x & 0x7F800000) == 0) & ((x & 0x007FFFFF) != 0)


def pe_domain_pairs(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Adder operand pairs in the PE's domain: every edge-case pair and biased random pair
    whose operands and sum are not subnormal, plus partial sums of FP16 dot products
    (subnormal FP16 inputs included) with their next product."""
    ea, eb = cross(FP32_EDGES)
    ra, rb = random_fp32_pairs(rng, n)
    a = np.concatenate([ea, ra]).astype(np.uint32)
    b = np.concatenate([eb, rb]).astype(np.uint32)
    keep = ~(_subnormal(a) | _subnormal(b) | _subnormal(fp.fp32_add(a, b)))
    w, x = random_fp16_pairs(rng, n)
    products = fp.fp16_mul(w, x).reshape(-1, 8)
    sums, adds = [], []
    for row in products:
        acc = np.uint32(0)
        for p in row:
            sums.append(acc)
            adds.append(p)
            acc = fp.fp32_add(np.array([acc]), np.array([p]))[0]
    return (np.concatenate([a[keep], np.array(sums, np.uint32)]),
            np.concatenate([b[keep], np.array(adds, np.uint32)]))


def test_pe_products_and_partial_sums_are_never_subnormal(rng):
    """The claim Fp32Adder(subnormals=False) rests on: FP16 products and their binary32
    sums are zero or at least 2**-48 in magnitude (biased exponent >= 79)."""
    edges = np.array(FP16_EDGES, np.uint16)
    w, x = cross(FP16_EDGES)
    rw, rx = random_fp16_pairs(rng, 40_000)
    w = np.concatenate([w.astype(np.uint16), rw])
    x = np.concatenate([x.astype(np.uint16), rx])
    products = fp.fp16_mul(w, x)[: len(w) // 16 * 16]
    assert int(fp.fp16_mul(edges[2:3], edges[2:3])[0]) == 79 << 23     # 2**-24 squared
    acc = np.zeros(len(products) // 16, np.uint32)
    seen = [products]
    for step in products.reshape(16, -1):          # 16-term dot products
        acc = fp.fp32_add(acc, step)
        seen.append(acc)
    values = np.concatenate(seen)
    exp = values >> 23 & 0xFF
    assert np.all((values & 0x7FFFFFFF == 0) | (exp >= 79))


@pytest.mark.parametrize("stages", [0, 3])
def test_pe_adder_matches_golden_on_the_pe_domain(rng, stages, seed):
    a, b = pe_domain_pairs(rng, 3000)
    dut = Fp32Adder(stages=stages, subnormals=False)
    got = (simulate(dut, {"a": a, "b": b}, "s") if stages == 0
           else simulate_pipelined(dut, {"a": a, "b": b}, "s", seed))
    assert_fp_equal(f"Fp32Adder(stages={stages}, subnormals=False)", (a, b), got, fp.fp32_add(a, b))


def test_pe_adder_is_only_exact_on_its_domain():
    """Outside the domain the restricted adder is wrong (why the PE proves its domain): a
    normal minus a normal whose difference is subnormal."""
    a = np.array([0x00800001, 0x00C00000], np.uint32)
    b = np.array([0x80800000, 0x80800000], np.uint32)
    want = fp.fp32_add(a, b)
    assert list(want) == [0x00000001, 0x00400000]
    assert np.array_equal(simulate(Fp32Adder(), {"a": a, "b": b}, "s"), want)
    got = simulate(Fp32Adder(subnormals=False), {"a": a, "b": b}, "s")
    assert not np.array_equal(got, want)


def test_subnormals_flag_must_be_a_bool():
    with pytest.raises(ValueError, match="subnormals must be True or False"):
        Fp32Adder(subnormals=1)
