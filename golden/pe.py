"""Golden model of one 4-lane PE: what ``hw.pe`` must compute, bit for bit.

See docs/architecture.md, "PE and PE array".

A dot product is a sequence of K beats. Each beat is one 16-bit weight word and four
FP16 activations (bit patterns). Results are the lanes' binary32 sums, accumulated
sequentially in increasing k from +0.0 (:func:`golden.fp.mac`).
"""

from __future__ import annotations

import numpy as np

from golden.fp import mac

LANES = 4
MODES = ("verify", "draft")


def _u16(x, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "ui" or (arr.size and (arr.min() < 0 or arr.max() > 0xFFFF)):
        raise ValueError(f"{what} must hold 16-bit unsigned bit patterns")
    return arr.astype(np.uint16)


def check_tables(base, lut) -> tuple[np.ndarray, np.ndarray]:
    """Validate the PE's per-tensor tables: 8 five-bit bases and 8 FP16 magnitudes."""
    base = np.asarray(base)
    lut = np.asarray(lut)
    if base.shape != (8,) or base.dtype.kind not in "ui" or base.min() < 0 or base.max() > 31:
        raise ValueError("base must be 8 biased exponents in 0..31")
    if lut.shape != (8,) or lut.dtype.kind not in "ui" or lut.min() < 0 or lut.max() > 0x7FFF:
        raise ValueError("lut must be 8 non-negative FP16 magnitudes as 15-bit patterns")
    return base.astype(np.uint16), lut.astype(np.uint16)


def decode_verify(words, base) -> np.ndarray:
    """Full BSFP words -> FP16 bit patterns: ``s | (base[D] + x) mod 32 | m``."""
    words = _u16(words, "words").astype(np.uint32)
    base = np.asarray(base, dtype=np.uint32)
    sign = words >> 15
    code = (words >> 12) & 7
    x = (words >> 10) & 3
    exp = (base[code] + x) & 31
    return ((sign << 15) | (exp << 10) | (words & 0x3FF)).astype(np.uint16)


def decode_draft(words, lut) -> np.ndarray:
    """Draft-plane words -> FP16 bit patterns of shape ``words.shape + (4,)``.

    Lane ``j`` takes nibble ``s|D`` from bits ``4j+3..4j`` and becomes ``s | lut[D]``.
    """
    words = _u16(words, "words").astype(np.uint32)
    lut = np.asarray(lut, dtype=np.uint32)
    shifts = np.arange(LANES, dtype=np.uint32) * 4
    nibbles = (words[..., None] >> shifts) & 0xF
    return (((nibbles >> 3) << 15) | lut[nibbles & 7]).astype(np.uint16)


def lane_operands(mode: str, words, acts, base=None, lut=None) -> tuple[np.ndarray, np.ndarray]:
    """The (weight, activation) FP16 pairs each lane multiplies, shaped ``(4, K)``.

    ``mode`` is ``"verify"``, ``"draft"`` or ``"fp16"`` (the plain PE); ``words`` has shape
    ``(K,)`` and ``acts`` ``(K, 4)``; lane ``j`` multiplies ``acts[:, j]`` in every mode (a draft
    pass repeats its token's activation in all four, as :class:`hw.array.PEArray` does).
    """
    words = _u16(words, "words")
    acts = _u16(acts, "acts")
    if words.ndim != 1 or words.size == 0:
        raise ValueError("words must be a non-empty 1-D sequence (K >= 1)")
    if acts.shape != (words.size, LANES):
        raise ValueError(f"acts must have shape (K, 4) = ({words.size}, 4), not {acts.shape}")
    if mode == "fp16":
        return np.broadcast_to(words, (LANES, words.size)), acts.T
    base, lut = check_tables(base, lut)
    if mode == "verify":
        return np.broadcast_to(decode_verify(words, base), (LANES, words.size)), acts.T
    if mode == "draft":
        return decode_draft(words, lut).T, acts.T
    raise ValueError(f"mode must be one of {MODES + ('fp16',)}, not {mode!r}")


def pe_dot(mode: str, words, acts, base=None, lut=None) -> np.ndarray:
    """The four binary32 results (uint32 bit patterns) of one dot product on the PE."""
    w, a = lane_operands(mode, words, acts, base, lut)
    return mac(np.ascontiguousarray(w), np.ascontiguousarray(a)).astype(np.uint32)
