"""Stimulus for the PE tests: seeded random dot products plus the listed edge cases.

Shared by the Amaranth-simulator tests (``tests/test_pe.py``) and the cocotb testbench
(``sim/tb_pe.py``), so both simulate exactly the same cases for a given seed. A *batch*
is a run of dot products that share a mode and a table (``base``, ``lut``); expected
results come from :mod:`golden.pe`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from golden.fp import mac
from golden.pe import LANES, lane_operands, pe_dot

# FP16 bit patterns every test goes through, in every lane and every role.
FP16_EDGES = np.array([
    0x0000,  # +0
    0x8000,  # -0
    0x0001,  # smallest subnormal
    0x8001,
    0x03FF,  # largest subnormal
    0x0400,  # smallest normal
    0x3C00,  # 1.0
    0xBC00,  # -1.0
    0x3BFF,  # largest below 1
    0x3C01,  # smallest above 1
    0x3555,  # ~1/3
    0x7BFF,  # largest finite (65504)
    0xFBFF,
    0x7C00,  # +inf
    0xFC00,  # -inf
    0x7E00,  # quiet NaN
    0x7C01,  # signalling NaN payload
    0xFFFF,  # negative NaN, full payload
], dtype=np.uint16)

# Windows covering all 32 exponent codes: every FP16 value is a valid BSFP word.
FULL_BASE = np.arange(0, 32, 4, dtype=np.uint16)
FULL_SIZE = np.full(8, 4, dtype=np.uint16)
# Draft magnitudes that reach every multiplier corner: 0, subnormals, 1, max, inf, NaN.
EDGE_LUT = np.array([0x0000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0x7BFF, 0x7C00, 0x7E00],
                    dtype=np.uint16)


@dataclass
class Batch:
    mode: str                      # "verify", "draft" or "fp16"
    base: np.ndarray               # (8,) biased exponents
    lut: np.ndarray                # (8,) FP16 magnitudes (15-bit)
    words: list = field(default_factory=list)     # one (K,) uint16 array per dot product
    acts: list = field(default_factory=list)      # one (K, 4) uint16 array per dot product
    expected: list = field(default_factory=list)  # one (4,) uint32 array per dot product

    def add(self, words, acts) -> None:
        words = np.asarray(words, dtype=np.uint16)
        acts = np.asarray(acts, dtype=np.uint16)
        self.words.append(words)
        self.acts.append(acts)
        self.expected.append(pe_dot(self.mode, words, acts, self.base, self.lut))

    def add_many(self, words: list, acts: list) -> None:
        """:meth:`add` for many dot products at once: the golden results of those of equal
        length are computed together (one vectorised :func:`golden.fp.mac`), in order."""
        words = [np.asarray(w, dtype=np.uint16) for w in words]
        acts = [np.asarray(a, dtype=np.uint16) for a in acts]
        expected = [None] * len(words)
        by_length = {}
        for i, w in enumerate(words):
            by_length.setdefault(w.size, []).append(i)
        for index in by_length.values():
            pairs = [lane_operands(self.mode, words[i], acts[i], self.base, self.lut) for i in index]
            sums = mac(np.stack([w for w, _ in pairs]), np.stack([a for _, a in pairs]))
            for i, row in zip(index, sums.astype(np.uint32)):
                expected[i] = row
        self.words += words
        self.acts += acts
        self.expected += expected

    @property
    def beats(self) -> int:
        return sum(w.size for w in self.words)


@dataclass(frozen=True)
class Beat:
    """One cycle's worth of PE input: a weight word, its ``last`` flag, four activations."""
    batch: int
    word: int
    last: bool
    acts: tuple


def lut_writes(table: list, batch: "Batch") -> list[tuple[int, int]]:
    """The ``(entry, value)`` writes that give a PE holding *table* (updated in place;
    all +0.0 after reset) the lut of *batch*: only a draft batch reads the lut, so a verify
    batch needs none."""
    writes = []
    if batch.mode == "draft":
        for d, value in enumerate(int(x) for x in batch.lut):
            if table[d] != value:
                table[d] = value
                writes.append((d, value))
    return writes


def beats_of(batches, interleave: int = 1) -> list[Beat]:
    """The batches' dot products as the beat sequence a testbench drives, in order.

    With ``interleave = G > 1`` (a PE whose adder has ``G - 1`` stages) every run of G
    consecutive dot products of a batch is one group of equal length K, sent k-major:
    beat ``k * G + j`` is word k of the group's dot product j. Use :func:`interleaved` to
    put a stimulus in that shape.
    """
    beats = []
    for bi, b in enumerate(batches):
        if len(b.words) % interleave:
            raise ValueError(f"batch {bi} has {len(b.words)} dot products, not a multiple of "
                             f"the interleave {interleave}")
        for g in range(0, len(b.words), interleave):
            group = range(g, g + interleave)
            k = b.words[g].size
            if any(b.words[j].size != k for j in group):
                raise ValueError(f"batch {bi}: dot products {g}..{g + interleave - 1} differ in "
                                 "length; see interleaved()")
            beats += [Beat(bi, int(b.words[j][i]), i == k - 1, tuple(int(a) for a in b.acts[j][i]))
                      for i in range(k) for j in group]
    return beats


def interleaved(batches, interleave: int) -> list[Batch]:
    """The same stimulus regrouped for a PE that interleaves *interleave* dot products.

    Each batch's dot products are ordered by length (stably) and every length class is
    padded to a multiple of the interleave with repeats of its own dot products, so that
    consecutive groups of *interleave* have one length. Expected results follow the new
    order.
    """
    if interleave == 1:
        return list(batches)
    out = []
    for b in batches:
        nb = Batch(b.mode, b.base, b.lut)
        for k in sorted({w.size for w in b.words}):
            members = [i for i, w in enumerate(b.words) if w.size == k]
            members += members[:(-len(members)) % interleave]
            while len(members) % interleave:       # a class smaller than the pad
                members.append(members[0])
            for i in members:
                nb.words.append(b.words[i])
                nb.acts.append(b.acts[i])
                nb.expected.append(b.expected[i])
        out.append(nb)
    return out


def encode_full_table(fp16_bits) -> np.ndarray:
    """Encode FP16 patterns as BSFP words under :data:`FULL_BASE` (D = e // 4, x = e % 4)."""
    v = np.asarray(fp16_bits, dtype=np.uint32)
    exp = (v >> 10) & 31
    return ((v & 0x8000) | ((exp // 4) << 12) | ((exp % 4) << 10) | (v & 0x3FF)).astype(np.uint16)


def random_fp16(rng: np.random.Generator, n: int) -> np.ndarray:
    """FP16 patterns from a mixture: realistic magnitudes, any pattern, and edge values."""
    kind = rng.integers(0, 10, size=n)
    gauss = np.asarray(rng.normal(0.0, 1.0, size=n) * 2.0 ** rng.integers(-8, 8, size=n),
                       dtype=np.float16).view(np.uint16)
    anything = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    edges = FP16_EDGES[rng.integers(0, FP16_EDGES.size, size=n)]
    return np.where(kind < 6, gauss, np.where(kind < 9, anything, edges)).astype(np.uint16)


def random_tables(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random valid BSFP table: 8 non-overlapping windows of 1..4 codes, random lut."""
    while True:
        sizes = rng.integers(1, 5, size=8)
        slack = 32 - int(sizes.sum())
        if slack >= 0:
            break
    gaps = rng.multinomial(slack, np.ones(9) / 9)[:8]
    starts = np.cumsum(np.concatenate([[0], sizes[:-1]])) + np.cumsum(gaps)
    order = rng.permutation(8)
    base = starts[order].astype(np.uint16)
    size = sizes[order].astype(np.uint16)
    lut = (random_fp16(rng, 8) & 0x7FFF).astype(np.uint16)
    return base, size, lut


def random_verify_words(rng, size, n) -> np.ndarray:
    """Valid BSFP words for the windows *size*: any sign, code, offset x < size[D], mantissa."""
    code = rng.integers(0, 8, size=n)
    x = rng.integers(0, 1 << 16, size=n) % size[code]
    sign = rng.integers(0, 2, size=n)
    mant = rng.integers(0, 1024, size=n)
    return ((sign << 15) | (code << 12) | (x << 10) | mant).astype(np.uint16)


LENGTH_PROFILES = ("mixed", "short")


def random_length(rng, profile: str = "mixed") -> int:
    """Dot-product length K: ``mixed`` (mean ~6, up to 64) or ``short`` (mean ~3, up to 16).

    ``short`` keeps the slow event-driven simulator (Icarus) within the time budget
    while still running ten thousand dot products per mode.
    """
    r = rng.random()
    if profile == "short":
        return int(rng.integers(1, 5)) if r < 0.9 else int(rng.integers(5, 17))
    if profile != "mixed":
        raise ValueError(f"unknown length profile {profile!r}; expected one of {LENGTH_PROFILES}")
    if r < 0.70:
        return int(rng.integers(1, 5))
    if r < 0.95:
        return int(rng.integers(5, 17))
    return int(rng.integers(17, 65))


def edge_batches(mode: str) -> list[Batch]:
    """Every listed edge case, as one-beat and two-beat dot products."""
    batches = []
    if mode in ("verify", "fp16"):
        b = Batch(mode, FULL_BASE.copy(), EDGE_LUT.copy())
        acts_all = FP16_EDGES
        pad = (-acts_all.size) % LANES
        acts_all = np.concatenate([acts_all, acts_all[:pad]]).reshape(-1, LANES)
        for w in FP16_EDGES:
            word = encode_full_table([w])[0] if mode == "verify" else w
            for acts in acts_all:
                b.add([word], acts[None, :])
        # Two-beat sums: exact cancellation (+0), -0 + -0, inf + -inf (NaN), inf + inf.
        pairs = [(0x3C00, 0x3555, 0x3C00, 0xB555), (0x8000, 0x3C00, 0x8000, 0x3C00),
                 (0x7C00, 0x3C00, 0x7C00, 0xBC00), (0x7C00, 0x3C00, 0x7C00, 0x3C00),
                 (0x7BFF, 0x7BFF, 0x7BFF, 0xFBFF), (0x0001, 0x0001, 0x0001, 0x8001)]
        for w0, a0, w1, a1 in pairs:
            ws = [w0, w1]
            if mode == "verify":
                ws = encode_full_table(ws)
            b.add(ws, np.array([[a0] * LANES, [a1] * LANES], dtype=np.uint16))
        batches.append(b)
    elif mode == "draft":
        b = Batch(mode, FULL_BASE.copy(), EDGE_LUT.copy())
        nibble_words = [sum(((n + lane) % 16) << (4 * lane) for lane in range(LANES))
                        for n in range(16)]
        for word in nibble_words:
            for a in FP16_EDGES:
                b.add([word], np.array([[a, 0, 0, 0]], dtype=np.uint16))
        b.add([0x4444, 0xCCCC], np.array([[0x3C00] * 4, [0x3C00] * 4], dtype=np.uint16))
        b.add([0x6666, 0x6666], np.array([[0x3C00] * 4, [0xBC00] * 4], dtype=np.uint16))
        batches.append(b)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return batches


def random_batches(mode: str, sequences: int, rng: np.random.Generator,
                   batch_size: int = 400, lengths: str = "mixed") -> list[Batch]:
    """*sequences* random dot products in batches, each batch with a fresh random table."""
    batches = []
    left = sequences
    while left > 0:
        n = min(batch_size, left)
        left -= n
        base, size, lut = random_tables(rng)
        b = Batch(mode, base, lut)
        all_words, all_acts = [], []
        for _ in range(n):
            k = random_length(rng, lengths)
            if mode == "verify":
                words = random_verify_words(rng, size, k)
            elif mode == "draft":
                words = rng.integers(0, 1 << 16, size=k).astype(np.uint16)
            else:
                words = random_fp16(rng, k)
            all_words.append(words)
            all_acts.append(random_fp16(rng, k * LANES).reshape(k, LANES))
        b.add_many(all_words, all_acts)
        batches.append(b)
    return batches


def pe_batches(kind: str, modes, sequences: int, seed: int, lengths: str = "mixed") -> list[Batch]:
    """The full stimulus of one PE test run: edge cases first, then random batches.

    ``kind`` is ``"reconfigurable"`` (modes verify/draft, interleaved batch by batch so
    that mode and tables switch while the pipeline is busy) or ``"fp16"``.
    """
    rng = np.random.default_rng(seed)
    if kind == "fp16":
        modes = ["fp16"]
    elif kind != "reconfigurable":
        raise ValueError(f"unknown PE kind {kind!r}")
    per_mode = {m: edge_batches(m) + random_batches(m, sequences, rng, lengths=lengths)
                for m in modes}
    out = []
    while any(per_mode.values()):
        for m in modes:
            if per_mode[m]:
                out.append(per_mode[m].pop(0))
    return out
