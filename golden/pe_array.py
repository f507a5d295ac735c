"""Golden model of the PE array: results, weight streams and cycle counts.

See docs/architecture.md, "PE and PE array".

The array has ``P = rows * cols`` PEs of 4 lanes. It is weight-streaming,
activation-broadcast and output-stationary; PE ``p`` sits at row ``p // cols``, column
``p % cols`` (the grid is only a layout: every PE sees the same activation beat). A layer
``w`` of shape ``(N, K)`` (row ``n`` an output, column ``k`` a reduction index) runs as
``tiles`` passes over k; each beat of a tile carries one 16-bit word per PE for one k and
one activation beat of 4 FP16 values.

Mapping
-------
- **draft** (one token): PE ``p`` of tile ``t`` owns draft-plane group ``g = t * P + p``,
  i.e. output rows ``4g .. 4g+3`` (lane ``j`` = row ``4g+j``). Its word at beat ``k`` is
  ``draft_plane[g, k]`` (4 nibbles); the activation beat is ``(a[k], 0, 0, 0)``.
  ``tiles = ceil(ceil(N / 4) / P)``.
- **verify** (``T <= 4`` tokens): PE ``p`` of tile ``t`` owns output row ``n = t * P + p``
  for the 4 tokens (lane ``j`` = token ``j``). Its word at beat ``k`` is the full BSFP word
  ``w.words[n, k]`` (the draft-plane nibble joined to the residual-plane field, see
  :func:`golden.bsfp.words_from_planes`); the activation beat is ``(a[0, k], .., a[T-1, k])``
  padded with +0.0. ``tiles = ceil(N / P)``.
- Groups and rows past the end of the layer are fed the word 0; their results (and the lanes
  of missing tokens) are computed and drained like the others and dropped by
  :func:`assemble`.

Results leave the array one PE at a time, PE 0 first: tile ``t`` yields ``P`` result beats
of 4 binary32 values (:func:`result_beats`).

Pipelined PEs (``add_stages = A``) interleave ``G = A + 1`` tiles: the tiles are padded
with zero tiles to a multiple of G, and each *group* of G tiles is streamed k-major, beat
``k * G + j`` of a group carrying word k of its tile j (:func:`weight_stream`; the
activation beat of k repeats G times). Every lane then accumulates each of the G dot
products in increasing k, so the results are those of ``G = 1``; they leave in tile order.

Timing (:func:`cycles`): the array accepts one beat per cycle; a tile's results are ready
``L`` cycles after its last beat (:func:`array_latency`: 3, plus the PE's pipeline stages,
plus the 2 registers of the array's input, plus the 2 of its result drain) and drain at
one beat per cycle while the next tiles accumulate. The array stalls only if tiles end
faster than their results drain (``K < P``), once the PE's latency plus 3 of them wait
(``hw.array.PEArray.result_depth``). With inputs always offered and results always taken,
the last result is taken in cycle
``(K - 1) G + L + (groups - 1) G max(K, P) + G P - 1`` counting from the cycle in which the
first beat is accepted as cycle 0 (``K + 6 + (tiles - 1) max(K, P) + P - 1`` for G = 1).
"""

from __future__ import annotations

import numpy as np

from golden.bsfp import BsfpTensor
from golden.fp import mac
from golden.pe import LANES, check_tables

__all__ = ["MODES", "MAX_TOKENS", "PIPELINE_LATENCY", "INPUT_LATENCY", "DRAIN_LATENCY", "array_latency",
           "ArrayShape", "matmul", "tiles", "weight_stream", "acts_stream", "result_beats",
           "assemble", "cycles", "macs", "weight_bytes", "pe_tables", "stream_results"]

MODES = ("draft", "verify")
MAX_TOKENS = LANES
PIPELINE_LATENCY = 3      # beat accepted -> result valid, as in hw.pe
INPUT_LATENCY = 2         # the array's input registers, as in hw.array
DRAIN_LATENCY = 2         # the array's result drain registers, as in hw.array


def array_latency(mul_stages: int = 0, add_stages: int = 0) -> int:
    """Cycles from a tile's last beat accepted to its first result beat valid, in an array
    of PEs with these pipeline depths (``hw.array.PEArray.latency``)."""
    return PIPELINE_LATENCY + int(mul_stages) + int(add_stages) + INPUT_LATENCY + DRAIN_LATENCY


class ArrayShape:
    """A validated ``rows x cols`` array shape; ``pes`` is ``rows * cols``."""

    def __init__(self, rows: int, cols: int):
        for name, v in (("rows", rows), ("cols", cols)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        self.rows = int(rows)
        self.cols = int(cols)

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    def __repr__(self) -> str:
        return f"ArrayShape({self.rows}, {self.cols})"


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    return mode


def _check_layer(w) -> tuple[int, int]:
    if not isinstance(w, BsfpTensor):
        raise ValueError(f"w must be a golden.bsfp.BsfpTensor, not {type(w).__name__}")
    if len(w.shape) != 2:
        raise ValueError(f"w must be a 2-D (N, K) weight matrix, not shape {w.shape}")
    n, k = w.shape
    return n, k


def _check_dims(n, k) -> tuple[int, int]:
    for name, v in (("N", n), ("K", k)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, not {v!r}")
    if k < 1:
        raise ValueError(f"K must be at least 1 (an empty dot product cannot be streamed), got {k}")
    if n < 1:
        raise ValueError(f"N must be at least 1, got {n}")
    return int(n), int(k)


def _check_acts(mode: str, acts, k: int) -> np.ndarray:
    """Activations as uint16 bit patterns shaped ``(T, K)`` (``T = 1`` in draft mode)."""
    if not isinstance(acts, np.ndarray) or acts.dtype != np.float16:
        dtype = acts.dtype if isinstance(acts, np.ndarray) else type(acts).__name__
        raise ValueError(f"acts must be a numpy array of float16, not {dtype}")
    if mode == "draft":
        if acts.shape != (k,):
            raise ValueError(f"draft acts must have shape (K,) = ({k},), not {acts.shape}")
        return acts.view(np.uint16)[None, :]
    if acts.ndim != 2 or acts.shape[1] != k or not 1 <= acts.shape[0] <= MAX_TOKENS:
        raise ValueError(f"verify acts must have shape (T, K) with 1 <= T <= {MAX_TOKENS} and "
                         f"K = {k}, not {acts.shape}")
    return acts.view(np.uint16)


def tiles(mode: str, n: int, k: int, rows: int, cols: int, interleave: int = 1) -> int:
    """Number of passes over k that a ``(n, k)`` layer takes on a ``rows x cols`` array,
    padded to a multiple of *interleave* (the tiles a pipelined PE interleaves)."""
    _check_mode(mode)
    n, k = _check_dims(n, k)
    g = _check_interleave(interleave)
    p = ArrayShape(rows, cols).pes
    units = -(-n // LANES) if mode == "draft" else n
    return -(-units // (p * g)) * g


def _check_interleave(interleave) -> int:
    if isinstance(interleave, bool) or not isinstance(interleave, int) or not 1 <= interleave <= 4:
        raise ValueError(f"interleave must be an integer in 1..4, not {interleave!r}")
    return interleave


def matmul(mode: str, w: BsfpTensor, acts: np.ndarray) -> np.ndarray:
    """The exact binary32 results of one pass of the array over the layer ``w``.

    Parameters
    ----------
    mode : ``"draft"`` or ``"verify"``
    w : BsfpTensor of shape ``(N, K)``
    acts : numpy.ndarray of float16
        ``(K,)`` in draft mode (one token), ``(T, K)`` with ``1 <= T <= 4`` in verify mode.

    Returns
    -------
    numpy.ndarray of float32
        ``(N,)`` in draft mode (``sum_k draft(w)[n, k] * a[k]``), ``(T, N)`` in verify mode
        (``sum_k w[n, k] * a[t, k]``). Each sum is accumulated in binary32 from +0.0 in
        increasing k (docs/architecture.md, Numbers); NaNs are the canonical quiet NaN.
    """
    _check_mode(mode)
    n, k = _check_layer(w)
    _check_dims(n, k)
    a = _check_acts(mode, acts, k)
    if mode == "draft":
        wb = w.decode_draft().view(np.uint16)
        return mac(wb, a[0][None, :]).view(np.float32)
    wb = w.decode_full().view(np.uint16)
    return mac(wb[None, :, :], a[:, None, :]).view(np.float32)


def weight_stream(mode: str, w: BsfpTensor, rows: int, cols: int,
                  interleave: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The weight beats in the order the array consumes them.

    Returns ``(words, last)``: ``words`` uint16 of shape ``(tiles * K, P)`` and ``last``
    bool of shape ``(tiles * K,)``, true on the last beat of each tile. With interleave 1,
    beat ``t * K + k`` carries word ``p`` of tile ``t`` for PE ``p``; with interleave G,
    beat ``(q * K + k) * G + j`` carries word k of tile ``q * G + j``. Draft mode streams
    the draft plane only.
    """
    _check_mode(mode)
    n, k = _check_layer(w)
    _check_dims(n, k)
    g = _check_interleave(interleave)
    p = ArrayShape(rows, cols).pes
    nt = tiles(mode, n, k, rows, cols, g)
    src = w.draft_plane() if mode == "draft" else w.words
    padded = np.zeros((nt * p, k), dtype=np.uint16)
    padded[:src.shape[0]] = src
    words = padded.reshape(nt // g, g, p, k).transpose(0, 3, 1, 2).reshape(nt * k, p)
    last = np.zeros((nt // g, k, g), dtype=bool)
    last[:, k - 1, :] = True
    return np.ascontiguousarray(words), last.reshape(-1)


def acts_stream(mode: str, acts: np.ndarray, n: int, rows: int, cols: int,
                interleave: int = 1) -> np.ndarray:
    """The activation beats, uint16 FP16 patterns of shape ``(tiles * K, 4)``.

    The same K beats repeat for every tile: draft ``(a[k], 0, 0, 0)``, verify
    ``(a[0, k], .., a[T-1, k])`` padded with +0.0. With interleave G each beat appears G
    times in a row (once per tile of the group), and the sequence repeats per group.
    """
    _check_mode(mode)
    if not isinstance(acts, np.ndarray) or acts.ndim < 1:
        raise ValueError("acts must be a numpy array of float16")
    k = acts.shape[-1]
    _check_dims(n, k)
    g = _check_interleave(interleave)
    a = _check_acts(mode, acts, k)
    beat = np.zeros((k, LANES), dtype=np.uint16)
    beat[:, :a.shape[0]] = a.T
    return np.tile(np.repeat(beat, g, axis=0), (tiles(mode, n, k, rows, cols, g) // g, 1))


def pe_tables(w: BsfpTensor) -> tuple[np.ndarray, np.ndarray]:
    """The array's configuration tables of ``w``: 5-bit ``base`` and 15-bit ``lut`` patterns."""
    base = np.asarray(w.base, dtype=np.uint16)
    lut = np.asarray(w.lut).view(np.uint16) & 0x7FFF
    return check_tables(base, lut)


def result_beats(mode: str, w: BsfpTensor, acts: np.ndarray, rows: int, cols: int,
                 interleave: int = 1) -> np.ndarray:
    """Every result beat the array emits, in order: uint32 of shape ``(tiles * P, 4)``.

    Beat ``t * P + p`` holds PE ``p``'s 4 lanes after tile ``t``, padding included, computed
    lane by lane from the streams exactly as the PEs do (:func:`stream_results`).
    """
    n, k = _check_layer(w)
    words, _ = weight_stream(mode, w, rows, cols, interleave)
    a = acts_stream(mode, acts, n, rows, cols)
    base, lut = pe_tables(w)
    return stream_results(mode, words, a[:k], base, lut, interleave)


def stream_results(mode: str, words: np.ndarray, acts: np.ndarray, base, lut,
                   interleave: int = 1) -> np.ndarray:
    """Result beats of the array fed the weight beats ``words`` (uint16 ``(tiles * K, P)``,
    groups of *interleave* tiles k-major as :func:`weight_stream` makes them), the
    activation beats ``acts`` (uint16 ``(K, 4)``, the same for every tile) and the tables.

    Returns uint32 ``(tiles * P, 4)``: beat ``t * P + p`` is PE ``p``'s lanes after tile ``t``
    (draft: every lane uses activation 0, which the array repeats for its PEs' lanes).
    """
    from golden.pe import check_tables, decode_draft, decode_verify

    _check_mode(mode)
    base, lut = check_tables(base, lut)
    a = np.asarray(acts, dtype=np.uint16)
    k = a.shape[0]
    if a.shape != (k, LANES) or k < 1 or words.ndim != 2 or words.shape[0] % k:
        raise ValueError(f"words {words.shape} and acts {a.shape} do not form K-beat tiles")
    p = words.shape[1]
    nt = words.shape[0] // k
    g = _check_interleave(interleave)
    if nt % g:
        raise ValueError(f"{nt} tiles do not form groups of {g}")
    words = words.reshape(nt // g, k, g, p).transpose(0, 2, 3, 1).reshape(nt, p, k)  # (tiles, P, K)
    if mode == "draft":
        wl = decode_draft(words, lut)                               # (tiles, P, K, 4)
        wl = wl.transpose(0, 1, 3, 2)                               # (tiles, P, 4, K)
        al = np.broadcast_to(a[:, 0], wl.shape)
    else:
        wl = np.broadcast_to(decode_verify(words, base)[:, :, None, :], (nt, p, LANES, k))
        al = np.broadcast_to(a.T, (nt, p, LANES, k))
    return mac(np.ascontiguousarray(wl), np.ascontiguousarray(al)).reshape(nt * p, LANES)


def assemble(mode: str, beats: np.ndarray, n: int, tokens: int = 1) -> np.ndarray:
    """Turn result beats ``(tiles * P, 4)`` (uint32) into :func:`matmul`'s float32 layout.

    Draft: beat ``b`` lane ``j`` is output row ``4b + j``; verify: beat ``b`` lane ``t`` is
    row ``b``, token ``t``. Padding rows and lanes are dropped.
    """
    _check_mode(mode)
    beats = np.asarray(beats, dtype=np.uint32)
    if beats.ndim != 2 or beats.shape[1] != LANES:
        raise ValueError(f"beats must have shape (beats, {LANES}), not {beats.shape}")
    if mode == "draft":
        flat = beats.reshape(-1)
        if flat.size < n:
            raise ValueError(f"{beats.shape[0]} beats hold fewer than N = {n} draft results")
        return flat[:n].view(np.float32)
    if not 1 <= tokens <= MAX_TOKENS:
        raise ValueError(f"tokens must be in 1..{MAX_TOKENS}, not {tokens}")
    if beats.shape[0] < n:
        raise ValueError(f"{beats.shape[0]} beats hold fewer than N = {n} verify rows")
    return np.ascontiguousarray(beats[:n, :tokens].T).view(np.float32)


def cycles(mode: str, n: int, k: int, rows: int, cols: int, *, interleave: int = 1,
           latency: int | None = None) -> int:
    """Clock cycles of one pass with no stall injected: first beat accepted to last result taken.

    ``(K - 1) G + L + (groups - 1) G max(K, P) + G P`` (both ends counted; ``G`` the
    interleave, ``L`` the array's latency, :func:`array_latency` of unpipelined PEs when not
    given): the accepting cycles of all groups when ``K >= P``, the latency, and the drain
    of the last group's ``G P`` result beats. For ``G = 1`` and ``L = 7`` that is
    ``K + 6 + (tiles - 1) max(K, P) + P``.
    """
    if latency is None:
        latency = array_latency()
    n, k = _check_dims(n, k)
    g = _check_interleave(interleave)
    nt = tiles(mode, n, k, rows, cols, g)
    p = ArrayShape(rows, cols).pes
    return (k - 1) * g + latency + (nt // g - 1) * g * max(k, p) + g * p


def macs(mode: str, n: int, k: int, rows: int, cols: int, interleave: int = 1) -> int:
    """MACs the array performs in one pass (4 per PE per beat, padding included)."""
    n, k = _check_dims(n, k)
    return LANES * ArrayShape(rows, cols).pes * tiles(mode, n, k, rows, cols, interleave) * k


def weight_bytes(mode: str, n: int, k: int) -> int:
    """Weight bytes a pass reads from memory: the draft plane, plus the packed residual plane
    in verify mode (``ceil(N/4) * K * 2`` and ``+ ceil(12 * N * K / 8)``)."""
    _check_mode(mode)
    n, k = _check_dims(n, k)
    draft = -(-n // LANES) * k * 2
    return draft if mode == "draft" else draft + -(-12 * n * k // 8)
