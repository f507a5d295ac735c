"""golden.bsfp: lossless BSFP-4 encoding, optimal window search, draft decoding and planes."""

from __future__ import annotations

import itertools
from fractions import Fraction
from functools import lru_cache

import numpy as np
import pytest

from golden import bsfp
from golden.bsfp import BsfpTensor, encode, words_from_planes

ALL_BITS = np.arange(1 << 16, dtype=np.uint16)


def bits_of(w: np.ndarray) -> np.ndarray:
    return w.view(np.uint16)


def exponent_codes(w: np.ndarray) -> np.ndarray:
    return (bits_of(w) >> 10) & 0x1F


def random_weights(rng, codes, n, *, nan_payloads=True) -> np.ndarray:
    """n FP16 weights with biased exponents drawn from ``codes``, random signs and mantissas."""
    e = rng.choice(np.asarray(codes, dtype=np.uint16), size=n).astype(np.uint16)
    m = rng.integers(0, 1024, size=n, dtype=np.uint16)
    if not nan_payloads:
        m[e == 31] = 0
    s = rng.integers(0, 2, size=n, dtype=np.uint16)
    return ((s << 15) | (e << 10) | m).astype(np.uint16).view(np.float16)


def assert_bit_exact(t: BsfpTensor, w: np.ndarray):
    out = t.decode_full()
    assert out.dtype == np.float16 and out.shape == w.shape
    np.testing.assert_array_equal(bits_of(out), bits_of(w))


# --------------------------------------------------------------------------------------------
# Lossless encoding


def test_every_fp16_bit_pattern_decodes_bit_exactly():
    w = ALL_BITS.view(np.float16)
    t = encode(w)
    assert t.words.dtype == np.uint16 and t.shape == w.shape
    assert_bit_exact(t, w)
    covered = sorted(e for b, s in zip(t.base, t.size) for e in range(b, b + s))
    assert covered == list(range(32))


def test_every_fp16_bit_pattern_decodes_bit_exactly_as_a_matrix(rng):
    w = rng.permutation(ALL_BITS).reshape(256, 256).view(np.float16)
    assert_bit_exact(encode(w), w)


def test_all_nan_payloads_signed_zeros_subnormals_and_infinities_survive(rng):
    nans = ALL_BITS[(ALL_BITS & 0x7C00 == 0x7C00) & (ALL_BITS & 0x03FF != 0)]
    subnormals = ALL_BITS[(ALL_BITS & 0x7C00 == 0) & (ALL_BITS & 0x03FF != 0)]
    special = np.array([0x0000, 0x8000, 0x7C00, 0xFC00, 0x3C00, 0xBC00], dtype=np.uint16)
    bits = rng.permutation(np.concatenate([nans, subnormals, special]))
    w = bits.view(np.float16)
    assert_bit_exact(encode(w), w)
    for part in (nans, subnormals, special[:2], special[2:4]):
        assert_bit_exact(encode(part.view(np.float16)), part.view(np.float16))


@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 5), (9, 4), (2, 3, 4), (1, 1, 1, 6)])
def test_random_bit_patterns_of_any_shape_round_trip(rng, shape):
    for _ in range(20):
        w = np.asarray(rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)).view(np.float16)
        t = encode(w)
        assert t.shape == w.shape
        assert_bit_exact(t, w)


def test_random_subsets_of_exponents_round_trip(rng):
    for _ in range(200):
        k = int(rng.integers(1, 33))
        codes = rng.choice(32, size=k, replace=False)
        w = random_weights(rng, codes, int(rng.integers(1, 300)))
        assert_bit_exact(encode(w), w)


def test_realistic_gaussian_matrix_round_trips(rng):
    w = (rng.standard_normal((300, 257)) * 0.02).astype(np.float16)
    assert_bit_exact(encode(w), w)


def test_byte_order_and_memory_layout_do_not_change_the_encoding(rng):
    w = rng.integers(0, 1 << 16, size=(6, 10), dtype=np.uint16).view(np.float16)
    ref = encode(w)
    for variant in (np.asfortranarray(w), w.astype(">f2"), np.ascontiguousarray(w.T).T):
        t = encode(variant)
        np.testing.assert_array_equal(t.words, ref.words)
        np.testing.assert_array_equal(t.lut.view(np.uint16), ref.lut.view(np.uint16))


def test_encoding_is_deterministic(rng):
    w = (rng.standard_normal((64, 48)) * 0.05).astype(np.float16)
    a, b = encode(w), encode(w.copy())
    for name in ("words", "base", "size"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.lut.view(np.uint16), b.lut.view(np.uint16))


def test_encoded_tensor_is_read_only(rng):
    t = encode(np.ones((2, 2), np.float16))
    for name in ("words", "base", "size", "lut"):
        with pytest.raises(ValueError):
            getattr(t, name)[0] = 0
    with pytest.raises(AttributeError):
        t.words = t.words


# --------------------------------------------------------------------------------------------
# Metadata and draft


def fp16_round(q: Fraction) -> Fraction:
    """Round a non-negative rational to the nearest FP16 value, ties to even (by search)."""
    c = np.float16(float(q))
    cands = {c, np.nextafter(c, np.float16(np.inf)), np.nextafter(c, np.float16(0))}
    cands = [v for v in cands if np.isfinite(v)]
    return min(cands, key=lambda v: (abs(Fraction(float(v)) - q), int(bits_of(np.array(v))) & 1))


def finite_magnitudes(w: np.ndarray) -> dict[int, list[Fraction]]:
    """Finite |w| per exponent code, as exact fractions."""
    by_code: dict[int, list[Fraction]] = {}
    for v, e in zip(np.abs(w.reshape(-1).astype(np.float64)), exponent_codes(w).reshape(-1)):
        if e != 31:
            by_code.setdefault(int(e), []).append(Fraction(float(v)))
    return by_code


def window_cost(mags: dict[int, list[Fraction]], codes) -> tuple[Fraction, Fraction]:
    vals = [v for e in codes for v in mags.get(e, [])]
    if not vals:
        return Fraction(0), Fraction(0)
    lut = Fraction(float(fp16_round(sum(vals) / len(vals))))
    return sum((v - lut) ** 2 for v in vals), lut


def brute_force_windows(w: np.ndarray, groupings):
    """Best (cost, windows) over the given groupings of the occurring codes.

    Only tight windows (from a group's lowest to its highest code) are tried: any other window
    holding the same codes has the same cost and covers more codes, so it never wins the
    documented tie-break (cost, number of windows, covered codes, lexicographic windows).
    """
    mags = finite_magnitudes(w)

    @lru_cache(maxsize=None)
    def cost(group):
        return window_cost(mags, group)[0]

    best = None
    for groups in groupings:
        if len(groups) > 8:
            continue
        windows = sorted((min(g), max(g) - min(g) + 1) for g in groups)
        if any(s > 4 for _, s in windows):
            continue
        if any(b1 + s1 > b2 for (b1, s1), (b2, _) in zip(windows, windows[1:])):
            continue   # interleaved groups: their windows would overlap
        total = sum(cost(tuple(sorted(g))) for g in groups)
        key = (total, len(windows), sum(s for _, s in windows), tuple(windows))
        if best is None or key < best:
            best = key
    return best[0], best[3]


def set_partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in set_partitions(rest):
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1:]
        yield [[first]] + part


def compositions(items):
    n = len(items)
    for cuts in itertools.product((False, True), repeat=n - 1):
        groups, cur = [], [items[0]]
        for item, cut in zip(items[1:], cuts):
            if cut:
                groups.append(cur)
                cur = []
            cur.append(item)
        groups.append(cur)
        yield groups


def used_windows(t: BsfpTensor, w: np.ndarray):
    occurring = set(int(e) for e in np.unique(exponent_codes(w)))
    return tuple(sorted((int(b), int(s)) for b, s in zip(t.base, t.size)
                        if occurring & set(range(b, b + s))))


def draft_cost(t: BsfpTensor, w: np.ndarray) -> Fraction:
    finite = np.isfinite(w)
    d = t.decode_draft()[finite].astype(np.float64)
    v = w[finite].astype(np.float64)
    return sum((Fraction(float(a)) - Fraction(float(b))) ** 2 for a, b in zip(d, v))


def check_against_brute_force(w, groupings):
    t = encode(w)
    cost, windows = brute_force_windows(w, groupings)
    assert used_windows(t, w) == windows
    assert draft_cost(t, w) == cost


def test_window_search_equals_brute_force_over_all_partitions_of_few_exponents(rng):
    for trial in range(60):
        k = int(rng.integers(1, 7))
        lo = int(rng.integers(0, 33 - 2 * k))
        pool = np.arange(lo, min(32, lo + 2 * k + 2))
        codes = sorted(int(c) for c in rng.choice(pool, size=k, replace=False))
        if trial % 5 == 0:
            codes = sorted(set(codes) | {31})
        w = random_weights(rng, codes, int(rng.integers(1, 80)))
        check_against_brute_force(w, set_partitions(sorted(set(exponent_codes(w).tolist()))))


def test_window_search_equals_brute_force_when_the_eight_window_limit_binds(rng):
    for _ in range(16):
        k = int(rng.integers(9, 14))
        lo = int(rng.integers(0, 32 - 16))
        codes = sorted(int(c) for c in rng.choice(np.arange(lo, lo + 16), size=k, replace=False))
        w = random_weights(rng, codes, 150)
        occurring = sorted(set(exponent_codes(w).tolist()))
        t = encode(w)
        assert len(used_windows(t, w)) == min(8, len(occurring))
        check_against_brute_force(w, compositions(occurring))


def test_ties_prefer_fewer_windows_then_tight_windows():
    # zeros (code 0) and NaN (code 31) cost nothing wherever they go; 1.0 is code 15
    w = np.array([0.0, -0.0, 1.0, np.nan, np.inf], dtype=np.float16)
    t = encode(w)
    assert used_windows(t, w) == ((0, 1), (15, 1), (31, 1))
    w = np.array([1.0, 2.0, np.inf], dtype=np.float16)      # codes 15, 16, 31
    assert used_windows(encode(w), w) == ((15, 1), (16, 1), (31, 1))
    w = np.array([32768.0, -np.inf, np.nan], dtype=np.float16)  # codes 30, 31: one window
    assert used_windows(encode(w), w) == ((30, 2),)
    w = np.array([1.0, np.inf], dtype=np.float16)             # tight windows, not (12, 4)
    assert used_windows(encode(w), w) == ((15, 1), (31, 1))


def test_lut_is_the_fp16_rounded_mean_magnitude_of_each_window(rng):
    for _ in range(20):
        codes = rng.choice(32, size=int(rng.integers(1, 20)), replace=False)
        w = random_weights(rng, codes, int(rng.integers(1, 400)))
        t = encode(w)
        mags = finite_magnitudes(w)
        for d in range(8):
            window = range(int(t.base[d]), int(t.base[d] + t.size[d]))
            assert Fraction(float(t.lut[d])) == window_cost(mags, window)[1]
        assert np.isfinite(t.lut).all() and not np.signbit(t.lut).any()


def test_lut_rounds_the_exact_mean_once_to_nearest_even():
    # mean of 1 and 1 + 2^-10 (adjacent FP16 values in code 15) is a tie: rounds to even (1.0)
    w = np.array([1.0, 1.0 + 2 ** -10], dtype=np.float16)
    t = encode(w, base=[15, 0, 1, 2, 3, 4, 5, 6], size=[1] * 8)
    assert t.lut[0] == np.float16(1.0)
    w = np.array([1.0 + 2 ** -10, 1.0 + 2 * 2 ** -10], dtype=np.float16)
    t = encode(w, base=[15, 0, 1, 2, 3, 4, 5, 6], size=[1] * 8)
    assert t.lut[0] == np.float16(1.0 + 2 * 2 ** -10)


def test_draft_is_the_signed_lut_entry_of_each_weight(rng):
    w = rng.integers(0, 1 << 16, size=(40, 33), dtype=np.uint16).view(np.float16)
    t = encode(w)
    s = (t.words >> 15).astype(bool)
    d = (t.words >> 12) & 7
    lut_bits = t.lut.view(np.uint16)
    assert not (lut_bits & 0x8000).any()
    expect = np.where(s, 0x8000, 0) | lut_bits[d]      # bit patterns: NaN payloads count
    draft = t.decode_draft()
    assert draft.dtype == np.float16
    np.testing.assert_array_equal(draft.view(np.uint16), expect.astype(np.uint16))
    np.testing.assert_array_equal(np.signbit(draft), s)


def test_unused_windows_lie_on_uncovered_codes_with_zero_lut():
    w = np.full((3, 3), 0.5, dtype=np.float16)     # one exponent code (14)
    t = encode(w)
    assert list(t.base) == sorted(t.base)
    used = [d for d in range(8) if t.base[d] <= 14 < t.base[d] + t.size[d]]
    assert len(used) == 1 and t.lut[used[0]] == np.float16(0.5)
    assert all(t.lut[d] == 0 and t.size[d] == 1 for d in range(8) if d not in used)
    np.testing.assert_array_equal(t.decode_draft(), w)


def test_thirty_one_occurring_exponents_fit_in_eight_windows():
    w = ALL_BITS[ALL_BITS < 0x7C00].view(np.float16)   # every finite non-negative value
    t = encode(w)
    covered = sorted(e for b, s in zip(t.base.tolist(), t.size.tolist()) for e in range(b, b + s))
    assert set(range(31)) <= set(covered)
    assert_bit_exact(t, w)


def test_given_windows_are_used_as_is_with_lut_recomputed(rng):
    w = (rng.standard_normal((16, 16)) * 0.1).astype(np.float16)
    ref = encode(w)
    again = encode(w, base=ref.base, size=ref.size)
    np.testing.assert_array_equal(again.words, ref.words)
    np.testing.assert_array_equal(again.lut.view(np.uint16), ref.lut.view(np.uint16))
    uniform = encode(w, base=list(range(0, 32, 4)), size=[4] * 8)
    assert list(uniform.base) == list(range(0, 32, 4)) and list(uniform.size) == [4] * 8
    assert_bit_exact(uniform, w)
    assert bsfp.draft_rel_rmse(w, uniform) >= bsfp.draft_rel_rmse(w, ref)


def test_draft_rel_rmse_is_the_float64_relative_rms_error(rng):
    w = (rng.standard_normal((32, 24)) * 0.02).astype(np.float16)
    t = encode(w)
    d = t.decode_draft().astype(np.float64)
    x = w.astype(np.float64)
    expect = np.sqrt(np.mean((d - x) ** 2)) / np.sqrt(np.mean(x ** 2))
    assert bsfp.draft_rel_rmse(w) == pytest.approx(expect, rel=1e-12)
    assert bsfp.draft_rel_rmse(np.zeros(5, np.float16)) == 0.0


# --------------------------------------------------------------------------------------------
# Planes


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 9, 13])
def test_planes_reassemble_the_words_for_any_row_count(rng, n):
    k = int(rng.integers(1, 12))
    w = rng.integers(0, 1 << 16, size=(n, k), dtype=np.uint16).view(np.float16)
    t = encode(w)
    dp, rp = t.draft_plane(), t.residual_plane()
    assert dp.dtype == np.uint16 and dp.shape == (-(-n // 4), k)
    assert rp.dtype == np.uint16 and rp.shape == (n, k) and not (rp & 0xF000).any()
    np.testing.assert_array_equal(words_from_planes(dp, rp, n), t.words)


def test_draft_plane_puts_row_4g_plus_j_in_lane_j():
    w = (np.arange(6 * 3).reshape(6, 3) - 9).astype(np.float16)
    t = encode(w)
    dp = t.draft_plane()
    for n in range(8):
        for k in range(3):
            nibble = (int(dp[n // 4, k]) >> (4 * (n % 4))) & 0xF
            assert nibble == (int(t.words[n, k]) >> 12 if n < 6 else 0)


def test_residual_plane_packs_twelve_bits_per_weight_little_endian():
    words = np.array([[0x0ABC, 0x1DEF, 0x0123]], dtype=np.uint16)   # x|m fields ABC, DEF, 123
    t = BsfpTensor.from_parts(words, [0, 4, 8, 12, 16, 20, 24, 28], [4] * 8,
                              np.zeros(8, np.float16))
    packed = t.residual_plane_packed()
    assert packed.dtype == np.uint8
    assert packed.tolist() == [0xBC, 0xFA, 0xDE, 0x23, 0x01]
    np.testing.assert_array_equal(bsfp.unpack_residual_plane(packed, (1, 3)), words & 0x0FFF)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (4, 4), (7, 9)])
def test_packed_residual_plane_round_trips(rng, shape):
    w = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16).view(np.float16)
    t = encode(w)
    packed = t.residual_plane_packed()
    assert packed.size == (12 * w.size + 7) // 8
    rp = bsfp.unpack_residual_plane(packed, shape)
    np.testing.assert_array_equal(rp, t.residual_plane())
    np.testing.assert_array_equal(words_from_planes(t.draft_plane(), rp, shape[0]), t.words)


@pytest.mark.parametrize("shape", [(), (5,), (2, 2, 2)])
def test_plane_functions_reject_tensors_that_are_not_matrices(shape):
    t = encode(np.ones(shape, np.float16))
    for method in (t.draft_plane, t.residual_plane, t.residual_plane_packed):
        with pytest.raises(ValueError, match="2-D"):
            method()


# --------------------------------------------------------------------------------------------
# Rejected input


@pytest.mark.parametrize("bad, match", [
    (np.ones(4, np.float32), "float16"),
    (np.ones(4, np.float64), "float16"),
    (np.ones(4, np.int16), "float16"),
    (np.ones(4, np.uint16), "float16"),
    (np.array([np.float16(1)], dtype=object), "object"),
    (np.zeros((0,), np.float16), "at least one element"),
    (np.zeros((3, 0), np.float16), "at least one element"),
    ([1.0, 2.0], "numpy array"),
])
def test_encode_rejects_bad_tensors(bad, match):
    with pytest.raises(ValueError, match=match):
        encode(bad)


GOOD_BASE = [0, 4, 8, 12, 16, 20, 24, 28]
GOOD_SIZE = [4] * 8


@pytest.mark.parametrize("base, size, match", [
    (GOOD_BASE, GOOD_SIZE[:7], "8 entries"),
    ([0, 4, 8, 12, 16, 20, 24, 26], GOOD_SIZE, "overlap"),
    ([0, 4, 8, 12, 16, 20, 24, 29], GOOD_SIZE, "beyond the last code 31"),
    (GOOD_BASE, [4, 4, 4, 4, 4, 4, 4, 0], "size must be 1..4"),
    (GOOD_BASE, [5, 4, 4, 4, 4, 4, 4, 1], "size must be 1..4"),
    ([-1, 4, 8, 12, 16, 20, 24, 28], GOOD_SIZE, "base"),
    (np.array(GOOD_BASE, float), GOOD_SIZE, "integer"),
])
def test_window_tables_that_are_invalid_are_rejected(base, size, match):
    words = np.zeros(3, np.uint16)
    with pytest.raises(ValueError, match=match):
        BsfpTensor.from_parts(words, base, size, np.zeros(8, np.float16))
    with pytest.raises(ValueError, match=match):
        encode(np.zeros(3, np.float16), base=base, size=size)


@pytest.mark.parametrize("lut, match", [
    (np.array([1, 0, 0, 0, 0, 0, 0, -1], np.float16), "non-negative"),
    (np.array([-0.0] + [0] * 7, np.float16), "non-negative"),
    (np.array([np.nan] + [0] * 7, np.float16), "finite"),
    (np.array([np.inf] + [0] * 7, np.float16), "finite"),
    (np.zeros(8, np.float32), "float16"),
    ([0.0] * 8, "float16"),
    (np.zeros(7, np.float16), "8 entries"),
])
def test_lut_tables_that_are_invalid_are_rejected(lut, match):
    with pytest.raises(ValueError, match=match):
        BsfpTensor.from_parts(np.zeros(3, np.uint16), GOOD_BASE, GOOD_SIZE, lut)


def test_words_with_a_code_outside_their_window_are_rejected():
    size = [1, 2, 3, 4, 1, 1, 1, 1]
    base = [0, 1, 3, 6, 10, 11, 12, 13]
    lut = np.zeros(8, np.float16)
    ok = np.array([0 << 12 | 0 << 10, 1 << 12 | 1 << 10, 2 << 12 | 2 << 10, 3 << 12 | 3 << 10],
                  dtype=np.uint16)
    t = BsfpTensor.from_parts(ok, base, size, lut)
    t.validate()
    for word in (0 << 12 | 1 << 10, 1 << 12 | 2 << 10, 2 << 12 | 3 << 10, 7 << 12 | 1 << 10):
        bad = np.concatenate([ok, np.array([word | 0x8000], np.uint16)])
        with pytest.raises(ValueError, match="invalid code x >= size"):
            BsfpTensor.from_parts(bad, base, size, lut)


def test_words_that_are_not_uint16_are_rejected():
    for words in (np.zeros(3, np.int16), np.zeros(3, np.float16), [0, 1], np.zeros(0, np.uint16)):
        with pytest.raises(ValueError, match="uint16|at least one"):
            BsfpTensor.from_parts(words, GOOD_BASE, GOOD_SIZE, np.zeros(8, np.float16))


def test_given_windows_must_cover_every_occurring_exponent():
    w = np.array([1.0, 2.0 ** -20], dtype=np.float16)   # codes 15 and 0 (subnormal)
    with pytest.raises(ValueError, match=r"do not cover exponent code\(s\) \[15\]"):
        encode(w, base=[0, 1, 2, 3, 4, 5, 6, 7], size=[1] * 8)
    with pytest.raises(ValueError, match="both base and size"):
        encode(w, base=GOOD_BASE)


def test_inconsistent_planes_are_rejected():
    w = np.ones((5, 3), np.float16)
    t = encode(w)
    dp, rp = t.draft_plane(), t.residual_plane()
    with pytest.raises(ValueError, match="shaped"):
        words_from_planes(dp, rp, 4)
    with pytest.raises(ValueError, match="shaped"):
        words_from_planes(dp[:1], rp, 5)
    with pytest.raises(ValueError, match="12 bits"):
        words_from_planes(dp, rp | 0x1000, 5)
    padded = dp.copy()
    padded[1, 0] |= 0x1 << 4                             # row 5 does not exist
    with pytest.raises(ValueError, match="padding"):
        words_from_planes(padded, rp, 5)
    with pytest.raises(ValueError, match="uint16"):
        words_from_planes(dp.astype(np.int32), rp, 5)
    with pytest.raises(ValueError, match="positive integer"):
        words_from_planes(dp, rp, 0)
    packed = t.residual_plane_packed()
    with pytest.raises(ValueError, match="bytes"):
        bsfp.unpack_residual_plane(packed[:-1], (5, 3))
    bad = packed.copy()
    bad[-1] |= 0xF0
    with pytest.raises(ValueError, match="upper nibble"):
        bsfp.unpack_residual_plane(bad, (5, 3))
