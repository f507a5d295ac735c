"""BSFP-4, the bit-sharing weight format (docs/bsfp.md): encoder, decoders and nibble planes.

Every FP16 weight ``s | e[4:0] | m[9:0]`` is re-encoded, bijectively, as the 16-bit word

```
bit 15    14..12     11..10    9..0
  s    |  D (3 bit) | x (2 bit) | m (10 bit)
```

where the tensor's metadata holds 8 exponent *windows* ``(base[d], size[d])`` and the weight's
biased exponent is ``e = base[D] + x``. The top nibble ``s|D`` is the draft weight, worth
``(-1)^s * lut[D]``. Numpy only: no Amaranth, no ``hw`` imports.

Plane layout (docs/bsfp.md), for a weight matrix ``w`` of shape ``(N, K)`` (row ``n`` is an output,
column ``k`` a reduction index):

- draft plane, ``uint16[ceil(N/4), K]``: word ``[g, k]`` holds the nibble ``s|D`` of
  ``w[4g+j, k]`` in bits ``4j+3..4j`` (lane ``j`` = 0..3); rows past ``N`` are padded with 0.
- residual plane, ``uint16[N, K]``: the 12-bit ``x|m`` field in bits 11..0 (bits 15..12 zero).
- packed residual plane, ``uint8[ceil(12*N*K/8)]``: the residual fields in row-major order
  as one little-endian bit stream, weight ``i`` in stream bits ``12i..12i+11``. A pair ``(a, b)``
  occupies 3 bytes: ``a[7:0]``, then ``b[3:0] << 4 | a[11:8]``, then ``b[11:4]``; an odd final
  weight takes 2 bytes, the upper nibble of the last byte being 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from golden.quant import rel_rmse

__all__ = [
    "BsfpTensor",
    "N_WINDOWS",
    "MAX_WINDOW_SIZE",
    "encode",
    "search_windows",
    "draft_rel_rmse",
    "words_from_planes",
    "pack_residual_plane",
    "unpack_residual_plane",
]

N_WINDOWS = 8
MAX_WINDOW_SIZE = 4
N_EXPONENTS = 32          # biased FP16 exponent codes 0..31
_NONFINITE_CODE = 31      # inf and NaN
_FP16_UNIT = 2.0 ** -24   # smallest FP16 subnormal: |w| values are integer multiples of it


# --------------------------------------------------------------------------------------------
# Input checks


def _as_fp16_array(w, what: str = "w") -> np.ndarray:
    if not isinstance(w, np.ndarray):
        raise ValueError(f"{what} must be a numpy array of float16, not {type(w).__name__}")
    if w.dtype == object:
        raise ValueError(f"{what} must be a float16 array, not an object array")
    if w.dtype.kind != "f" or w.dtype.itemsize != 2:
        raise ValueError(f"{what} must be a float16 array, not dtype {w.dtype}")
    if w.size == 0:
        raise ValueError(f"{what} must have at least one element, got shape {w.shape}")
    return w.astype(np.float16, order="C", copy=False)   # native byte order, C order


def _check_table_shape(arr: np.ndarray, name: str) -> None:
    if arr.shape != (N_WINDOWS,):
        raise ValueError(f"{name} must hold {N_WINDOWS} entries (one per window), "
                         f"got shape {arr.shape}")


def _as_int_table(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    _check_table_shape(arr, name)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, not dtype {arr.dtype}")
    return arr.astype(np.int64)


def _check_windows(base, size) -> tuple[np.ndarray, np.ndarray]:
    """Validate a window table; return it as (uint8[8], uint8[8])."""
    base = _as_int_table(base, "base")
    size = _as_int_table(size, "size")
    bad = np.flatnonzero((size < 1) | (size > MAX_WINDOW_SIZE))
    if bad.size:
        d = int(bad[0])
        raise ValueError(f"window size must be 1..{MAX_WINDOW_SIZE}: size[{d}] = {int(size[d])}")
    bad = np.flatnonzero(base < 0)
    if bad.size:
        d = int(bad[0])
        raise ValueError(f"window base must be an exponent code 0..31: base[{d}] = {int(base[d])}")
    bad = np.flatnonzero(base + size - 1 > N_EXPONENTS - 1)
    if bad.size:
        d = int(bad[0])
        raise ValueError(f"window {d} (base {int(base[d])}, size {int(size[d])}) reaches exponent "
                         f"{int(base[d] + size[d] - 1)}, beyond the last code 31")
    owner = np.full(N_EXPONENTS, -1)
    for d in range(N_WINDOWS):
        for e in range(int(base[d]), int(base[d] + size[d])):
            if owner[e] >= 0:
                raise ValueError(f"windows {int(owner[e])} and {d} overlap at exponent {e}")
            owner[e] = d
    return base.astype(np.uint8), size.astype(np.uint8)


def _check_lut(lut) -> np.ndarray:
    if not isinstance(lut, np.ndarray) or lut.dtype != np.float16:
        dtype = lut.dtype if isinstance(lut, np.ndarray) else type(lut).__name__
        raise ValueError(f"lut must be a float16 numpy array, not {dtype}")
    _check_table_shape(lut, "lut")
    bad = np.flatnonzero(~np.isfinite(lut))
    if bad.size:
        d = int(bad[0])
        raise ValueError(f"lut entries must be finite: lut[{d}] = {lut[d]}")
    bad = np.flatnonzero(np.signbit(lut))
    if bad.size:
        d = int(bad[0])
        raise ValueError(f"lut entries must be non-negative magnitudes (sign bit clear): "
                         f"lut[{d}] = {lut[d]}")
    return lut.astype(np.float16)


def _u16(a, shape) -> np.ndarray:
    """``a`` as a uint16 array of ``shape`` (numpy turns 0-d results into scalars)."""
    return np.asarray(a, dtype=np.uint16).reshape(shape)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


# --------------------------------------------------------------------------------------------
# The encoded tensor


@dataclass(frozen=True, eq=False)
class BsfpTensor:
    """A BSFP-4 encoded tensor: one 16-bit word per weight plus per-tensor metadata.

    Attributes
    ----------
    words : numpy.ndarray of uint16
        Same shape as the original tensor; bit 15 ``s``, 14..12 ``D``, 11..10 ``x``, 9..0 ``m``.
    base, size : numpy.ndarray of uint8, shape (8,)
        Window ``d`` covers the biased exponents ``base[d] .. base[d] + size[d] - 1``.
    lut : numpy.ndarray of float16, shape (8,)
        Draft magnitude of each window (finite, sign bit clear).

    All arrays are read-only copies. Construction validates them (see :meth:`validate`);
    :meth:`from_parts` is the documented way to build one from stored parts.
    """

    words: np.ndarray
    base: np.ndarray
    size: np.ndarray
    lut: np.ndarray

    def __post_init__(self):
        words = self.words
        if not isinstance(words, np.ndarray) or words.dtype != np.uint16:
            dtype = words.dtype if isinstance(words, np.ndarray) else type(words).__name__
            raise ValueError(f"words must be a uint16 numpy array, not {dtype}")
        if words.size == 0:
            raise ValueError(f"words must have at least one element, got shape {words.shape}")
        base, size = _check_windows(self.base, self.size)
        lut = _check_lut(self.lut)
        d = (words >> 12) & 0x7
        x = (words >> 10) & 0x3
        bad = x >= size[d]
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            dd = int(d[idx])
            raise ValueError(f"{int(bad.sum())} word(s) hold an invalid code x >= size[D]; first "
                             f"at index {idx}: word 0x{int(words[idx]):04x} has D={dd}, "
                             f"x={int(x[idx])} but size[{dd}] = {int(size[dd])}")
        object.__setattr__(self, "words", _frozen(words.astype(np.uint16)))
        object.__setattr__(self, "base", _frozen(base))
        object.__setattr__(self, "size", _frozen(size))
        object.__setattr__(self, "lut", _frozen(lut))

    @classmethod
    def from_parts(cls, words, base, size, lut) -> "BsfpTensor":
        """Build a validated tensor from stored words and metadata (raises ``ValueError``)."""
        return cls(words, base, size, lut)

    def validate(self) -> None:
        """Raise ``ValueError`` if words or metadata are inconsistent.

        Rejected: words not uint16 or empty; base/size/lut not 8 entries; a size outside 1..4;
        a window reaching past exponent 31; overlapping windows; a lut entry that is not float16,
        not finite or negative (sign bit set); a word whose ``x`` is not below ``size[D]``.
        Instances are validated on construction, so this only re-checks.
        """
        type(self)(self.words, self.base, self.size, self.lut)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.words.shape

    def exponents(self) -> np.ndarray:
        """Biased FP16 exponent of every weight (``base[D] + x``), as uint16."""
        d = (self.words >> 12) & 0x7
        return _u16(self.base.astype(np.uint16)[d] + ((self.words >> 10) & 0x3), self.shape)

    def decode_full(self) -> np.ndarray:
        """The original FP16 tensor, bit for bit."""
        w = self.words
        bits = (w & 0x8000) | (self.exponents() << 10) | (w & 0x03FF)
        return _u16(bits, self.shape).view(np.float16)

    def decode_draft(self) -> np.ndarray:
        """The draft tensor: ``(-1)^s * lut[D]`` for every weight (FP16)."""
        lut_bits = self.lut.view(np.uint16)
        bits = (self.words & 0x8000) | lut_bits[(self.words >> 12) & 0x7]
        return _u16(bits, self.shape).view(np.float16)

    def _require_2d(self, what: str) -> tuple[int, int]:
        if len(self.shape) != 2:
            raise ValueError(f"{what} needs a 2-D (N, K) tensor, not shape {self.shape}")
        return self.shape

    def draft_plane(self) -> np.ndarray:
        """Nibbles ``s|D`` packed 4 rows per uint16 word: shape ``(ceil(N/4), K)``.

        Word ``[g, k]`` holds the nibble of ``w[4g+j, k]`` in bits ``4j+3..4j``; rows past N
        are padded with nibble 0.
        """
        n, k = self._require_2d("draft_plane")
        groups = -(-n // 4)
        nib = np.zeros((groups * 4, k), dtype=np.uint16)
        nib[:n] = self.words >> 12
        nib = nib.reshape(groups, 4, k)
        packed = nib[:, 0] | (nib[:, 1] << 4) | (nib[:, 2] << 8) | (nib[:, 3] << 12)
        return packed.astype(np.uint16)

    def residual_plane(self) -> np.ndarray:
        """The 12-bit ``x|m`` field of every weight in bits 11..0: shape ``(N, K)``, uint16."""
        self._require_2d("residual_plane")
        return (self.words & 0x0FFF).astype(np.uint16)

    def residual_plane_packed(self) -> np.ndarray:
        """The residual plane packed 12 bits per weight (see the module docstring), uint8."""
        return pack_residual_plane(self.residual_plane())


# --------------------------------------------------------------------------------------------
# Planes


def words_from_planes(draft_plane: np.ndarray, residual_plane: np.ndarray,
                      n_rows: int) -> np.ndarray:
    """Reassemble the ``(n_rows, K)`` uint16 BSFP words from a draft and a residual plane."""
    if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < 1:
        raise ValueError(f"n_rows must be a positive integer, not {n_rows!r}")
    for name, plane in (("draft_plane", draft_plane), ("residual_plane", residual_plane)):
        if not isinstance(plane, np.ndarray) or plane.dtype != np.uint16 or plane.ndim != 2:
            desc = (f"dtype {plane.dtype}, shape {plane.shape}" if isinstance(plane, np.ndarray)
                    else type(plane).__name__)
            raise ValueError(f"{name} must be a 2-D uint16 array, not {desc}")
    n_rows = int(n_rows)
    k = residual_plane.shape[1]
    groups = -(-n_rows // 4)
    if residual_plane.shape != (n_rows, k) or draft_plane.shape != (groups, k):
        raise ValueError(f"for {n_rows} rows the planes must be shaped draft ({groups}, K) and "
                         f"residual ({n_rows}, K); got {draft_plane.shape} and "
                         f"{residual_plane.shape}")
    if (residual_plane & 0xF000).any():
        raise ValueError("residual_plane entries must fit in 12 bits (bits 15..12 zero)")
    nib = np.stack([(draft_plane >> (4 * j)) & 0xF for j in range(4)], axis=1)
    nib = nib.reshape(groups * 4, k)
    if nib[n_rows:].any():
        raise ValueError(f"draft_plane padding nibbles (rows {n_rows}..{groups * 4 - 1}) must be 0")
    return ((nib[:n_rows] << 12) | residual_plane).astype(np.uint16)


def pack_residual_plane(residual_plane: np.ndarray) -> np.ndarray:
    """Pack 12-bit residual fields (any shape, row-major) into bytes; see the module docstring."""
    if not isinstance(residual_plane, np.ndarray) or residual_plane.dtype != np.uint16:
        raise ValueError("residual_plane must be a uint16 numpy array")
    if (residual_plane & 0xF000).any():
        raise ValueError("residual_plane entries must fit in 12 bits (bits 15..12 zero)")
    flat = residual_plane.reshape(-1)
    n = flat.size
    if n % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint16)])
    a = flat[0::2]
    b = flat[1::2]
    out = np.empty((a.size, 3), dtype=np.uint8)
    out[:, 0] = a & 0xFF
    out[:, 1] = (a >> 8) | ((b & 0xF) << 4)
    out[:, 2] = b >> 4
    return out.reshape(-1)[: (12 * n + 7) // 8].copy()


def unpack_residual_plane(packed: np.ndarray, shape) -> np.ndarray:
    """Inverse of :func:`pack_residual_plane`: bytes -> uint16 residual fields of ``shape``."""
    shape = tuple(int(s) for s in np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must be non-negative, not {shape}")
    n = int(np.prod(shape, dtype=np.int64))
    if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8 or packed.ndim != 1:
        raise ValueError("packed must be a 1-D uint8 numpy array")
    want = (12 * n + 7) // 8
    if packed.size != want:
        raise ValueError(f"{n} residual fields pack into {want} bytes, got {packed.size}")
    if n % 2 and (packed[-1] & 0xF0):
        raise ValueError("the unused upper nibble of the last packed byte must be 0")
    buf = np.zeros(3 * (-(-n // 2)), dtype=np.uint16)
    buf[: packed.size] = packed
    buf = buf.reshape(-1, 3)
    out = np.empty((buf.shape[0], 2), dtype=np.uint16)
    out[:, 0] = buf[:, 0] | ((buf[:, 1] & 0xF) << 8)
    out[:, 1] = (buf[:, 1] >> 4) | (buf[:, 2] << 4)
    return out.reshape(-1)[:n].reshape(shape).copy()


# --------------------------------------------------------------------------------------------
# Window search


def _code_stats(bits: np.ndarray) -> tuple[np.ndarray, list[int], list[int], list[int]]:
    """Per exponent code: occurs?, and the exact count, sum |w| and sum w^2 of finite weights.

    Sums are Python integers in units of 2^-24 (|w|) and 2^-48 (w^2), so they are exact.
    """
    magnitude = (bits.reshape(-1) & 0x7FFF).astype(np.int64)
    hist = np.bincount(magnitude, minlength=1 << 15).reshape(N_EXPONENTS, 1024)
    occurs = hist.sum(axis=1) > 0
    sig = np.arange(1024, dtype=np.int64)
    count, s1, s2 = [0] * N_EXPONENTS, [0] * N_EXPONENTS, [0] * N_EXPONENTS
    for e in range(N_EXPONENTS):
        if e == _NONFINITE_CODE:
            continue
        c = hist[e]
        # |w| = m * 2^-24 (e = 0) or (1024 + m) * 2^(e-1) * 2^-24 (e >= 1)
        v, shift = (sig, 0) if e == 0 else (sig + 1024, e - 1)
        count[e] = int(c.sum())
        s1[e] = int(c @ v) << shift
        s2[e] = int(c @ (v * v)) << (2 * shift)
    return occurs, count, s1, s2


def _round_mean_fp16_units(s1: int, n: int) -> int:
    """``s1 / n`` (units of 2^-24) rounded once, to nearest even, to an FP16 value (in units)."""
    if n == 0:
        return 0
    q = s1 // n
    ulp = 1 << max(0, q.bit_length() - 1 - 10) if q else 1
    den = n * ulp
    r, rem = divmod(s1, den)
    if 2 * rem > den or (2 * rem == den and r & 1):
        r += 1
    return r * ulp


def _window_cost(stats, lo: int, hi: int) -> tuple[int, int]:
    """(exact draft squared error in units of 2^-48, lut in units of 2^-24) of codes lo..hi."""
    _, count, s1, s2 = stats
    n = sum(count[lo:hi + 1])
    t1 = sum(s1[lo:hi + 1])
    t2 = sum(s2[lo:hi + 1])
    lut = _round_mean_fp16_units(t1, n)
    return t2 - 2 * lut * t1 + n * lut * lut, lut


def search_windows(occurs, cost) -> tuple[int, tuple[tuple[int, int], ...]]:
    """Optimal windows for exponent codes 0..31; returns ``(cost, ((base, size), ...))``.

    ``occurs[e]`` says whether code ``e`` must be covered; ``cost(base, size)`` is the additive
    cost of one window. The result minimises, in this order: total cost, number of windows,
    number of covered codes, then the (base, size) list in lexicographic order.

    Dynamic programme over suffixes: ``best[i][r]`` is the best key for codes ``i..31`` using at
    most ``r`` windows. At code ``i`` either no window starts there (allowed only if ``i`` does
    not occur) or a window of size 1..4 starts there; every term of the key is additive or
    lexicographic in the first window, so the optimum of a suffix extends to the whole.
    """
    best = [[None] * (N_WINDOWS + 1) for _ in range(N_EXPONENTS + 1)]
    for r in range(N_WINDOWS + 1):
        best[N_EXPONENTS][r] = (0, 0, 0, ())
    costs = {}
    for i in range(N_EXPONENTS - 1, -1, -1):
        for r in range(N_WINDOWS + 1):
            options = []
            if not occurs[i]:
                options.append(best[i + 1][r])
            if r > 0 and occurs[i]:   # a window starting on an empty code is never better
                for s in range(1, MAX_WINDOW_SIZE + 1):
                    if i + s > N_EXPONENTS:
                        break
                    rest = best[i + s][r - 1]
                    if rest is None:
                        continue
                    c = costs.get((i, s))
                    if c is None:
                        c = costs[(i, s)] = cost(i, s)
                    options.append((c + rest[0], 1 + rest[1], s + rest[2], ((i, s),) + rest[3]))
            options = [o for o in options if o is not None]
            best[i][r] = min(options) if options else None
    cost_total, _, _, windows = best[0][N_WINDOWS]
    return cost_total, windows


def _place_unused(windows) -> list[tuple[int, int]]:
    """Complete a list of used windows to 8 with size-1 windows on the lowest free codes."""
    covered = set()
    for b, s in windows:
        covered.update(range(b, b + s))
    free = [e for e in range(N_EXPONENTS) if e not in covered]
    full = list(windows) + [(e, 1) for e in free[: N_WINDOWS - len(windows)]]
    return sorted(full)


def encode(w: np.ndarray, base=None, size=None) -> BsfpTensor:
    """Encode an FP16 tensor (any shape, at least one element) as BSFP-4 with per-tensor metadata.

    Parameters
    ----------
    w : numpy.ndarray of float16
    base, size : sequences of 8 integers, optional
        Given windows (both or neither). They are validated and must cover every exponent that
        occurs in ``w``; only ``lut`` is then computed. Without them the windows are searched.

    Window search: per exponent code the exact count, sum |w| and sum w^2 of the finite weights
    are gathered as integers. A window's lut is the exact mean |w| of its finite weights rounded
    once to FP16 (round to nearest even; 0 if it has none), and its cost the exact squared draft
    error ``sum((lut - |w|)^2)``. :func:`search_windows` then finds, by dynamic programming over
    the 32 codes, the set of at most 8 non-overlapping windows of 1..4 codes that covers every
    occurring code (0 and 31 included) with the least total cost; ties go to fewer windows, then
    fewer covered codes, then the lexicographically smallest (base, size) list. Unused windows
    become size-1 windows on the lowest codes no other window covers, with lut 0. Windows are
    numbered in increasing order of base, so ``D`` grows with the exponent.
    """
    w = _as_fp16_array(w)
    bits = w.view(np.uint16)
    stats = _code_stats(bits)
    occurs = stats[0]
    if (base is None) != (size is None):
        raise ValueError("give both base and size, or neither")
    if base is None:
        _, used = search_windows(occurs, lambda b, s: _window_cost(stats, b, b + s - 1)[0])
        windows = _place_unused(used)
        base = np.array([b for b, _ in windows], dtype=np.uint8)
        size = np.array([s for _, s in windows], dtype=np.uint8)
    else:
        base, size = _check_windows(base, size)
    owner = np.full(N_EXPONENTS, 255, dtype=np.uint16)
    for d in range(N_WINDOWS):
        owner[base[d]: base[d] + size[d]] = d
    missing = [e for e in range(N_EXPONENTS) if occurs[e] and owner[e] == 255]
    if missing:
        raise ValueError(f"the windows do not cover exponent code(s) {missing} occurring in w")
    lut = np.array([_window_cost(stats, int(base[d]), int(base[d] + size[d] - 1))[1] * _FP16_UNIT
                    for d in range(N_WINDOWS)], dtype=np.float64).astype(np.float16)
    e = (bits >> 10) & 0x1F
    d = owner[e]
    x = e - base.astype(np.uint16)[d]
    words = (bits & 0x8000) | (d << 12) | (x << 10) | (bits & 0x03FF)
    return BsfpTensor(_u16(words, w.shape), base, size, lut)


def draft_rel_rmse(w: np.ndarray, encoded: BsfpTensor | None = None) -> float:
    """Relative RMS error of the BSFP draft of ``w``, in float64 over the whole tensor.

    ``sqrt(mean((draft - w)^2)) / sqrt(mean(w^2))``; 0 for an all-zero tensor. ``encoded`` may
    pass an already computed ``encode(w)``.
    """
    w = _as_fp16_array(w)
    if encoded is None:
        encoded = encode(w)
    elif encoded.shape != w.shape:
        raise ValueError(f"encoded has shape {encoded.shape}, w has {w.shape}")
    return rel_rmse(w, encoded.decode_draft())
