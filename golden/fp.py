"""Bit-exact reference arithmetic of a PE lane (docs/architecture.md, Numbers).

Values travel as IEEE bit patterns: ``uint16`` for binary16 (FP16), ``uint32`` for
binary32. Every function is vectorised over numpy arrays and also accepts Python or
numpy scalars (returning 0-d arrays). NaN results are canonical: ``NAN32`` for binary32,
``NAN16`` for binary16, and the hardware promises the same patterns, so checkers compare
results bit for bit, NaNs included (a NaN with any other sign or payload is a mismatch).
"""

from __future__ import annotations

import numpy as np

NAN32 = 0x7FC00000
NAN16 = 0x7E00
INF32 = 0x7F800000
INF16 = 0x7C00


def _bits(x, width: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "ui":
        raise ValueError(f"expected integer bit patterns, not an array of dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >> width):
        raise ValueError(f"bit patterns must lie in 0 .. 2**{width} - 1")
    return arr.astype(np.uint16 if width == 16 else np.uint32)


def float32_to_bits(x) -> np.ndarray:
    """binary32 bit patterns of *x* (converted to float32 first)."""
    return np.asarray(x, dtype=np.float32).view(np.uint32)


def bits_to_float32(bits) -> np.ndarray:
    return _bits(bits, 32).view(np.float32)


def float16_to_bits(x) -> np.ndarray:
    """binary16 bit patterns of *x* (converted to float16 first)."""
    return np.asarray(x, dtype=np.float16).view(np.uint16)


def bits_to_float16(bits) -> np.ndarray:
    return _bits(bits, 16).view(np.float16)


def is_nan32(bits) -> np.ndarray:
    b = _bits(bits, 32)
    return (b & 0x7FFFFFFF) > INF32


def is_nan16(bits) -> np.ndarray:
    b = _bits(bits, 16)
    return (b & 0x7FFF) > INF16


def fp16_mul(a_bits, b_bits) -> np.ndarray:
    """Exact binary32 product of two binary16 values (bit patterns in, bit pattern out).

    The 11x11-bit significand product has at most 22 bits and its exponent lies in
    [2^-48, 2^32), so it is always representable: no rounding ever happens. Computed
    with integers the way the hardware does it (normalising by the product's leading
    one), not through float conversions.
    """
    a, b = np.broadcast_arrays(_bits(a_bits, 16).astype(np.int64), _bits(b_bits, 16).astype(np.int64))
    sign = ((a ^ b) >> 15) & 1
    ea, eb = (a >> 10) & 0x1F, (b >> 10) & 0x1F
    fa, fb = a & 0x3FF, b & 0x3FF
    ma = np.where(ea > 0, fa | 0x400, fa)
    mb = np.where(eb > 0, fb | 0x400, fb)
    m = ma * mb
    msb = np.frexp(m.astype(np.float64))[1] - 1  # exact: m < 2**22
    exp = msb + np.maximum(ea, 1) + np.maximum(eb, 1) - 50 + 127
    mant = (m << np.clip(23 - msb, 0, 23)) & 0x7FFFFF
    out = np.where(m == 0, 0, (exp << 23) | mant)
    a_inf, b_inf = (ea == 31) & (fa == 0), (eb == 31) & (fb == 0)
    a_zero, b_zero = (a & 0x7FFF) == 0, (b & 0x7FFF) == 0
    out = np.where(a_inf | b_inf, INF32, out)
    out = (sign << 31) | out
    nan = ((ea == 31) & (fa != 0)) | ((eb == 31) & (fb != 0)) | (a_inf & b_zero) | (b_inf & a_zero)
    return np.where(nan, NAN32, out).astype(np.uint32)


def fp32_add(a_bits, b_bits) -> np.ndarray:
    """binary32 sum, round to nearest even; ``x + (-x) = +0``, ``-0 + -0 = -0``."""
    a, b = np.broadcast_arrays(_bits(a_bits, 32), _bits(b_bits, 32))
    with np.errstate(all="ignore"):
        s = (a.view(np.float32) + b.view(np.float32)).view(np.uint32)
    return np.where(is_nan32(s), np.uint32(NAN32), s).astype(np.uint32)


def fp32_to_fp16(bits) -> np.ndarray:
    """binary32 to binary16, round to nearest even (subnormal results, overflow to inf)."""
    b = _bits(bits, 32)
    with np.errstate(all="ignore"):
        h = b.view(np.float32).astype(np.float16).view(np.uint16)
    return np.where(is_nan32(b), np.uint16(NAN16), h).astype(np.uint16)


def mac(w_bits, a_bits) -> np.ndarray:
    """Dot products over the last axis, as a PE lane computes them (docs/architecture.md, Numbers).

    ``acc = fp32_add(acc, fp16_mul(w[..., k], a[..., k]))`` for k = 0, 1, ... starting
    from ``acc = +0.0``. *w_bits* and *a_bits* (binary16 patterns) broadcast against each
    other; the result has their broadcast shape without the last axis.
    """
    w, a = np.broadcast_arrays(_bits(w_bits, 16), _bits(a_bits, 16))
    if w.ndim == 0:
        raise ValueError("mac needs at least one axis to accumulate over")
    acc = np.zeros(w.shape[:-1], dtype=np.uint32)
    for k in range(w.shape[-1]):
        acc = fp32_add(acc, fp16_mul(w[..., k], a[..., k]))
    return acc
