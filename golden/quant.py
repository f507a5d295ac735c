"""Integer weight-only quantisation baselines and the shared relative-error metric.

Both quantisers are symmetric round-to-nearest (RTN): ``scale = absmax / qmax`` per tensor,
per group or per channel, stored as FP16 (round to nearest even; a scale that would round to
zero for a non-zero group becomes the smallest FP16 subnormal, 2^-24); codes
``clip(rint(w / scale), qmin, qmax)`` with ``rint`` rounding halves to even; the dequantised
weight ``code * scale`` is computed exactly in float64 and rounded once to FP16.
"""

from __future__ import annotations

import numpy as np

__all__ = ["int4_rtn", "int8_rtn", "rtn", "rel_rmse"]

_FP16_MIN_SUBNORMAL = 2.0 ** -24


def _as_float_array(w, what: str = "w") -> np.ndarray:
    if not isinstance(w, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, not {type(w).__name__}")
    if w.dtype.kind != "f":
        raise ValueError(f"{what} must be a floating-point array, not dtype {w.dtype}")
    if w.size == 0:
        raise ValueError(f"{what} must have at least one element, got shape {w.shape}")
    return w.astype(np.float64)


def _fp16_scale(absmax: np.ndarray, qmax: int) -> np.ndarray:
    scale = (absmax / qmax).astype(np.float16).astype(np.float64)
    return np.where((scale == 0) & (absmax > 0), _FP16_MIN_SUBNORMAL, scale)


def rtn(w: np.ndarray, bits: int, group_size: int | None = None) -> np.ndarray:
    """Symmetric RTN with ``bits``-bit codes in ``[-2^(bits-1), 2^(bits-1) - 1]``.

    ``scale = absmax / (2^(bits-1) - 1)`` per tensor (``group_size`` None) or per group of
    ``group_size`` consecutive elements along the last axis (which it must divide).
    Returns the dequantised tensor as float16, same shape as ``w``.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an integer 2..16, not {bits!r}")
    x = _as_float_array(w)
    if not np.isfinite(x).all():
        raise ValueError("RTN quantisation needs finite weights (w holds inf or NaN)")
    qmax = (1 << (bits - 1)) - 1
    qmin = -(1 << (bits - 1))
    if group_size is None:
        groups = x.reshape(1, -1)
    else:
        if (isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer))
                or group_size < 1):
            raise ValueError(f"group_size must be a positive integer or None, not {group_size!r}")
        if x.ndim == 0 or x.shape[-1] % group_size:
            last = x.shape[-1] if x.ndim else None
            raise ValueError(f"group_size {group_size} must divide the last axis "
                             f"(length {last}) of w with shape {x.shape}")
        groups = x.reshape(-1, int(group_size))
    scale = _fp16_scale(np.abs(groups).max(axis=1, keepdims=True), qmax)
    safe = np.where(scale == 0, 1.0, scale)
    codes = np.clip(np.rint(groups / safe), qmin, qmax)
    return (codes * scale).astype(np.float16).reshape(x.shape)


def int4_rtn(w: np.ndarray, group_size: int | None = None) -> np.ndarray:
    """Symmetric INT4 RTN: scale absmax/7 (FP16) per tensor or per group, codes in [-8, 7]."""
    return rtn(w, 4, group_size)


def int8_rtn(w: np.ndarray) -> np.ndarray:
    """Symmetric INT8 RTN per channel: FP16 scale absmax/127 per output row, codes in [-128, 127].

    For an ``(N, K)`` tensor a channel is a row (reduction over K); in general a channel is a
    slice along the last axis, and a 1-D tensor is one channel.
    """
    x = _as_float_array(w)
    return rtn(w, 8, x.shape[-1] if x.ndim else None)


def rel_rmse(ref: np.ndarray, approx: np.ndarray) -> float:
    """``sqrt(mean((approx - ref)^2)) / sqrt(mean(ref^2))`` in float64 (0/0 counts as 0).

    A non-zero error against an all-zero ``ref`` gives ``inf``; non-finite entries propagate.
    """
    r = _as_float_array(np.asarray(ref), "ref")
    a = _as_float_array(np.asarray(approx), "approx")
    if r.shape != a.shape:
        raise ValueError(f"ref and approx must have the same shape, got {r.shape} and {a.shape}")
    num = float(np.sqrt(np.mean((a - r) ** 2)))
    den = float(np.sqrt(np.mean(r ** 2)))
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den
