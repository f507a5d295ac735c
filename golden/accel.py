"""Golden model of the accelerator top (docs/accel.md): tensor layout, command encoding, commands.

The accelerator ``hw.accel.Accelerator`` joins a ``rows x cols`` PE array (``P = rows * cols``
PEs, ``P`` a multiple of 4), a weight streamer, an activation buffer, a result writer and an
expert cache behind one AXI4 master whose data width is ``W = 2P`` bytes (one *line*).

This module defines, without Amaranth:

* :func:`tensor_layout`: the bytes of a weight matrix's draft and residual regions;
* the command encoding (:class:`LoadActs`, :class:`SetTables`, :class:`Matmul`, :class:`Demand`,
  :class:`Prefetch`, :class:`Release`, :class:`Fence`, each ``.encode() -> 8 words``);
* :class:`AccelModel`, the transaction-level model of every command: host memory after each
  command, counters (bytes, MACs, cache hits and misses) exactly, cycles as a lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from golden.bsfp import BsfpTensor, pack_residual_plane
from golden.pe_array import LANES

__all__ = ["TensorLayout", "tensor_layout", "stream_words", "check_pes", "line_bytes",
           "INTERLEAVES", "check_interleave", "interleave_of",
           "verify_tiles", "draft_tiles", "CMD_WORDS", "OPCODES", "CAUSES", "CAUSE_NAMES",
           "LoadActs", "SetTables", "Matmul", "Demand", "Prefetch", "Release", "Fence", "Raw",
           "decode", "tables_error", "COUNTERS", "Outcome", "AccelModel"]


def check_pes(pes: int) -> int:
    """``P``, validated: a positive multiple of 4 (a verify tile's draft nibbles fill words)."""
    if isinstance(pes, bool) or not isinstance(pes, (int, np.integer)) or pes < 4 or pes % 4:
        raise ValueError(f"the accelerator needs rows * cols to be a positive multiple of 4, "
                         f"not {pes!r}")
    return int(pes)


def line_bytes(pes: int) -> int:
    """Bytes of one bus line, ``W = 2P``."""
    return 2 * check_pes(pes)


def verify_tiles(n: int, pes: int) -> int:
    """``T = ceil(N / P)``: verify tiles of a matrix with ``N`` output rows."""
    return -(-int(n) // check_pes(pes))


def draft_tiles(n: int, pes: int) -> int:
    """``ceil(T / 4)``: draft tiles (``4P`` rows each)."""
    return -(-verify_tiles(n, pes) // 4)


INTERLEAVES = (1, 2, 4)


def check_interleave(interleave: int) -> int:
    """``G``, validated: the tiles a pipelined array interleaves, 1, 2 or 4 (a divisor of the 4
    verify tiles of a draft tile; ``G = add_stages + 1``)."""
    if isinstance(interleave, bool) or interleave not in INTERLEAVES:
        raise ValueError(f"the accelerator interleaves 1, 2 or 4 tiles (add_stages 0, 1 or 3), "
                         f"not {interleave!r}")
    return int(interleave)


def interleave_of(add_stages: int) -> int:
    """``G = add_stages + 1``, checked (:func:`check_interleave`)."""
    return check_interleave(int(add_stages) + 1)


@dataclass(frozen=True)
class TensorLayout:
    """A weight matrix as the accelerator reads it (docs/accel.md, "Tensor layout").

    Attributes
    ----------
    draft, residual : bytes
        The two regions, ``T * K/4`` and ``T * 3K/4`` lines of ``W`` bytes.
    n, k, pes, tiles : int
        Matrix shape, PEs, verify tiles ``T``.
    interleave : int
        ``G``, the verify tiles of a *group*: the regions hold group after group, each
        k-major (see :func:`tensor_layout`).
    """

    draft: bytes
    residual: bytes
    n: int
    k: int
    pes: int
    tiles: int
    interleave: int = 1

    @property
    def draft_lines(self) -> int:
        return self.tiles * self.k // 4

    @property
    def residual_lines(self) -> int:
        return self.tiles * 3 * self.k // 4


def _groups(t: int, g: int):
    """``(first tile, tiles)`` of each group of ``g`` verify tiles (the last may be short)."""
    return [(s, min(g, t - s)) for s in range(0, t, g)]


def tensor_layout(w: BsfpTensor, pes: int, interleave: int = 1) -> TensorLayout:
    """Lay out the ``(N, K)`` BSFP matrix ``w`` for an array of ``pes`` PEs whose beats
    interleave ``interleave`` (``G``) tiles.

    Verify tiles (``P`` rows each) form groups of ``G``; the last group holds the ``T mod G``
    remaining tiles if ``G`` does not divide ``T`` (no padding tile is stored). The draft
    region is a stream of *quarters* (``P/4`` words, a quarter line): for each group, each
    ``k``, each tile ``j`` of the group, the draft-plane words of the tile's ``P/4`` row groups
    at ``k``. The residual region is one bit stream of 12-bit fields in the same order, ``P``
    fields per ``(group, k, tile)``. ``K`` must be a multiple of 4, so each group takes whole
    lines. Padding rows (``N .. T*P-1``) are stored as word 0. ``G = 1`` gives tile after tile.
    """
    if not isinstance(w, BsfpTensor) or len(w.shape) != 2:
        raise ValueError("w must be a 2-D golden.bsfp.BsfpTensor")
    p = check_pes(pes)
    g = check_interleave(interleave)
    n, k = w.shape
    if k % 4:
        raise ValueError(f"K must be a multiple of 4, not {k}")
    t = verify_tiles(n, p)
    words = np.zeros((t * p, k), dtype=np.uint16)
    words[:n] = w.words
    # Quarter of tile tv at k: the P/4 words of its row groups, each 4 nibbles of rows 4i..4i+3.
    nib = (words >> 12).reshape(t, p // 4, 4, k)
    quarters = (nib[:, :, 0] | (nib[:, :, 1] << 4) | (nib[:, :, 2] << 8)
                | (nib[:, :, 3] << 12)).transpose(0, 2, 1)                  # (T, K, P/4)
    resid = (words & 0x0FFF).reshape(t, p, k).transpose(0, 2, 1)            # (T, K, P)
    order = _groups(t, g)
    draft = np.concatenate([quarters[s:s + r].transpose(1, 0, 2).reshape(-1)
                            for s, r in order]).astype("<u2")
    fields = np.concatenate([resid[s:s + r].transpose(1, 0, 2).reshape(-1) for s, r in order])
    packed = pack_residual_plane(np.ascontiguousarray(fields))
    return TensorLayout(draft=draft.tobytes(), residual=packed.tobytes(), n=n, k=k, pes=p,
                        tiles=t, interleave=g)


def _unlayout(layout: TensorLayout) -> tuple[np.ndarray, np.ndarray]:
    """The quarters ``(T, K, P/4)`` and residual fields ``(T, K, P)`` of a layout's regions."""
    from golden.bsfp import unpack_residual_plane

    p, k, t, g = layout.pes, layout.k, layout.tiles, layout.interleave
    draft = np.frombuffer(layout.draft, dtype="<u2")
    fields = unpack_residual_plane(np.frombuffer(layout.residual, dtype=np.uint8).copy(),
                                   (t * k * p,))
    quarters = np.zeros((t, k, p // 4), dtype=np.uint16)
    resid = np.zeros((t, k, p), dtype=np.uint16)
    for s, r in _groups(t, g):
        quarters[s:s + r] = draft[s * k * p // 4:(s + r) * k * p // 4].reshape(
            k, r, p // 4).transpose(1, 0, 2)
        resid[s:s + r] = fields[s * k * p:(s + r) * k * p].reshape(k, r, p).transpose(1, 0, 2)
    return quarters, resid


def stream_words(mode: str, layout: TensorLayout) -> np.ndarray:
    """The weight beats a streamer makes from ``layout``: uint16 ``(tiles * K, P)``, in the
    order the array takes them (:func:`golden.pe_array.weight_stream` with the layout's
    interleave ``G``), padding tiles' beats (zero words) included.

    Verify: groups of ``G`` verify tiles, ``k``-major; the word of row ``p`` is nibble ``p`` of
    the tile's quarter above residual field ``p``. Draft: draft tile ``td`` (``4P`` rows) at
    ``k`` is the quarters of verify tiles ``4td .. 4td+3`` side by side (zero past ``T``),
    ``ceil(T/4)`` draft tiles in groups of ``G``, ``k``-major. Tiles are padded with zero
    tiles to a multiple of ``G``. It decodes the regions, so that it can be checked against
    :func:`golden.pe_array.weight_stream`, which derives the beats from the matrix itself.
    """
    p, k, t, g = layout.pes, layout.k, layout.tiles, layout.interleave
    quarters, resid = _unlayout(layout)
    if mode == "verify":
        nib = np.stack([(quarters >> (4 * i)) & 0xF for i in range(4)], axis=-1).reshape(t, k, p)
        tiles_ = ((nib << 12) | resid).astype(np.uint16)                  # (T, K, P)
    elif mode == "draft":
        td = -(-t // 4)
        padded = np.zeros((4 * td, k, p // 4), dtype=np.uint16)
        padded[:t] = quarters
        tiles_ = padded.reshape(td, 4, k, p // 4).transpose(0, 2, 1, 3).reshape(td, k, p)
    else:
        raise ValueError(f"mode must be 'draft' or 'verify', not {mode!r}")
    nt = -(-tiles_.shape[0] // g) * g
    out = np.zeros((nt, k, p), dtype=np.uint16)
    out[:tiles_.shape[0]] = tiles_
    return np.ascontiguousarray(out.reshape(nt // g, g, k, p).transpose(0, 2, 1, 3)
                                .reshape(nt * k, p))


# --------------------------------------------------------------------------------------------
# Command encoding (docs/accel.md, "Commands")

CMD_WORDS = 8
OPCODES = {"LOAD_ACTS": 1, "SET_TABLES": 2, "MATMUL": 3, "DEMAND": 4, "PREFETCH": 5,
           "RELEASE": 6, "FENCE": 7}
CAUSES = {"OPCODE": 1, "DIMS": 2, "ALIGN": 3, "TABLES": 4, "READ": 5, "SLOT": 6, "FILL": 7,
          "RELEASE": 8, "ACTS": 9, "WRITE": 10, "OVERFLOW": 11, "EXPERT": 12, "FULL": 13}
CAUSE_NAMES = {v: k for k, v in CAUSES.items()}


def _field(value, bits: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not 0 <= value < 1 << bits:
        raise ValueError(f"{name} must be an integer in 0..{(1 << bits) - 1}, not {value!r}")
    return int(value)


def _words(w0: int, *rest: int) -> tuple[int, ...]:
    words = [w0, *rest]
    return tuple(words + [0] * (CMD_WORDS - len(words)))


@dataclass(frozen=True)
class LoadActs:
    """Load ``tokens`` rows of ``k`` FP16 activations, row ``t`` at ``addr + t * stride``."""
    tokens: int
    k: int
    addr: int
    stride: int

    def encode(self) -> tuple[int, ...]:
        return _words(OPCODES["LOAD_ACTS"] | _field(self.tokens, 3, "tokens") << 8,
                      _field(self.k, 16, "K") << 16, _field(self.addr, 32, "addr"),
                      _field(self.stride, 32, "stride"))


@dataclass(frozen=True)
class SetTables:
    """The BSFP tables of the next MATMULs: window ``base``/``size`` and FP16 ``lut`` patterns."""
    base: tuple[int, ...]
    size: tuple[int, ...]
    lut: tuple[int, ...]

    @classmethod
    def of(cls, w: BsfpTensor) -> "SetTables":
        return cls(tuple(int(b) for b in w.base), tuple(int(s) for s in w.size),
                   tuple(int(v) for v in np.asarray(w.lut).view(np.uint16)))

    def encode(self) -> tuple[int, ...]:
        if not len(self.base) == len(self.size) == len(self.lut) == 8:
            raise ValueError("base, size and lut must have 8 entries each")
        windows = 0
        for d in range(8):
            windows |= _field(self.base[d], 5, f"base[{d}]") << (5 * d)
            windows |= _field(self.size[d] - 1, 2, f"size[{d}] - 1") << (40 + 2 * d)
        lut = sum(_field(v, 16, f"lut[{d}]") << (16 * d) for d, v in enumerate(self.lut))
        return _words(OPCODES["SET_TABLES"], windows & 0xFFFFFFFF, windows >> 32,
                      *[(lut >> (32 * i)) & 0xFFFFFFFF for i in range(4)])


@dataclass(frozen=True)
class Matmul:
    """One pass over an ``(n, k)`` matrix: ``mode`` ``"draft"`` or ``"verify"``.

    ``slot`` None reads the regions at host addresses ``draft_addr``/``resid_addr``;
    otherwise they are byte offsets inside that expert slot.
    """
    mode: str
    n: int
    k: int
    draft_addr: int
    resid_addr: int
    out_addr: int
    out_stride: int = 0
    fp16: bool = False
    slot: int | None = None

    def encode(self) -> tuple[int, ...]:
        if self.mode not in ("draft", "verify"):
            raise ValueError(f"mode must be 'draft' or 'verify', not {self.mode!r}")
        w0 = (OPCODES["MATMUL"] | (self.mode == "draft") << 4 | (self.slot is not None) << 5
              | bool(self.fp16) << 6 | _field(self.slot or 0, 8, "slot") << 8)
        return _words(w0, _field(self.n, 16, "N") | _field(self.k, 16, "K") << 16,
                      _field(self.draft_addr, 32, "draft_addr"),
                      _field(self.resid_addr, 32, "resid_addr"),
                      _field(self.out_addr, 32, "out_addr"),
                      _field(self.out_stride, 32, "out_stride"))


@dataclass(frozen=True)
class Demand:
    layer: int
    expert: int

    def encode(self) -> tuple[int, ...]:
        return _words(OPCODES["DEMAND"],
                      _field(self.layer, 16, "layer") | _field(self.expert, 16, "expert") << 16)


@dataclass(frozen=True)
class Prefetch:
    layer: int
    expert: int

    def encode(self) -> tuple[int, ...]:
        return _words(OPCODES["PREFETCH"],
                      _field(self.layer, 16, "layer") | _field(self.expert, 16, "expert") << 16)


@dataclass(frozen=True)
class Release:
    slot: int

    def encode(self) -> tuple[int, ...]:
        return _words(OPCODES["RELEASE"] | _field(self.slot, 8, "slot") << 8)


@dataclass(frozen=True)
class Fence:
    def encode(self) -> tuple[int, ...]:
        return _words(OPCODES["FENCE"])


@dataclass(frozen=True)
class Raw:
    """Any 8 words, for malformed commands (an unknown opcode, say)."""
    words: tuple[int, ...]

    def encode(self) -> tuple[int, ...]:
        if len(self.words) != CMD_WORDS:
            raise ValueError(f"a command is {CMD_WORDS} words, not {len(self.words)}")
        return tuple(_field(w, 32, "word") for w in self.words)


def decode(words) -> object:
    """The command object of 8 words (``Raw`` for an unknown opcode)."""
    w = [int(x) & 0xFFFFFFFF for x in words]
    if len(w) != CMD_WORDS:
        raise ValueError(f"a command is {CMD_WORDS} words, not {len(w)}")
    op = w[0] & 0xF
    if op == OPCODES["LOAD_ACTS"]:
        return LoadActs((w[0] >> 8) & 7, w[1] >> 16, w[2], w[3])
    if op == OPCODES["SET_TABLES"]:
        windows = w[1] | w[2] << 32
        lut = w[3] | w[4] << 32 | w[5] << 64 | w[6] << 96
        return SetTables(tuple((windows >> (5 * d)) & 31 for d in range(8)),
                         tuple(((windows >> (40 + 2 * d)) & 3) + 1 for d in range(8)),
                         tuple((lut >> (16 * d)) & 0xFFFF for d in range(8)))
    if op == OPCODES["MATMUL"]:
        slot = (w[0] >> 8) & 0xFF if w[0] >> 5 & 1 else None
        return Matmul("draft" if w[0] >> 4 & 1 else "verify", w[1] & 0xFFFF, w[1] >> 16, w[2],
                      w[3], w[4], w[5], bool(w[0] >> 6 & 1), slot)
    if op == OPCODES["DEMAND"]:
        return Demand(w[1] & 0xFFFF, w[1] >> 16)
    if op == OPCODES["PREFETCH"]:
        return Prefetch(w[1] & 0xFFFF, w[1] >> 16)
    if op == OPCODES["RELEASE"]:
        return Release((w[0] >> 8) & 0xFF)
    if op == OPCODES["FENCE"]:
        return Fence()
    return Raw(tuple(w))


def tables_error(t: SetTables) -> str | None:
    """Why ``t`` breaks a BSFP rule, or None: windows inside 0..31 and disjoint, lut finite
    and non-negative."""
    owner = {}
    for d in range(8):
        lo, hi = t.base[d], t.base[d] + t.size[d] - 1
        if hi > 31:
            return f"window {d} reaches exponent {hi}"
        for e in range(lo, hi + 1):
            if e in owner:
                return f"windows {owner[e]} and {d} overlap at exponent {e}"
            owner[e] = d
        if t.lut[d] & 0x8000:
            return f"lut[{d}] is negative"
        if (t.lut[d] >> 10) & 31 == 31:
            return f"lut[{d}] is not finite"
    return None


# --------------------------------------------------------------------------------------------
# The command model

COUNTERS = ("cmds_done", "errors", "bytes_dense", "bytes_slot", "bytes_fill", "bytes_acts",
            "bytes_written", "macs")


@dataclass(frozen=True)
class Outcome:
    """What one command did: its index, the error cause name (None if it succeeded), the
    demand response ``(slot, hit, error)`` if it set one, and the host byte ranges whose
    contents are undefined after it (the output of a MATMUL that saw a bus error)."""
    index: int
    cause: str | None = None
    resp: tuple[int, bool, bool] | None = None
    undefined: tuple[tuple[int, int], ...] = ()

    @property
    def ok(self) -> bool:
        return self.cause is None


class AccelModel:
    """Transaction-level model of ``hw.accel.Accelerator``: one call of :meth:`run` per command.

    Parameters
    ----------
    rows, cols : int
        Array shape; ``P = rows * cols`` must be a multiple of 4; lines are ``W = 2P`` bytes.
    mem : bytearray
        Host memory (addresses are offsets into it); MATMUL results are written into it.
    slots, expert_bytes, n_layers, n_experts, policy, queue_depth, max_pins, lfu_max :
        The expert cache (:class:`golden.expert_cache.ExpertCacheModel`, lockstep: a program
        must FENCE between a PREFETCH and the next DEMAND or PREFETCH for exact agreement).
    expert_base : int
        Host address of expert (0, 0) (the ``EXPERT_BASE`` register).
    k_max, n_max : int
        Largest K and N a MATMUL may have.
    bad_read_ranges, bad_write_ranges : sequences of (start, end) byte ranges
        A line read (written) whose address lies in one answers SLVERR; a write with an error
        response writes nothing.
    mul_stages, add_stages : int
        The PEs' pipeline depth: matrices are laid out for, and passes interleave,
        ``G = add_stages + 1`` tiles (1, 2 or 4); the latency enters :meth:`min_cycles`.
    """

    def __init__(self, rows: int, cols: int, mem: bytearray, *, slots: int = 4,
                 expert_bytes: int = 4096, n_layers: int = 4, n_experts: int = 16,
                 policy: str = "lru", queue_depth: int = 2, max_pins: int = 15,
                 lfu_max: int = 255, expert_base: int = 0, k_max: int = 1024,
                 n_max: int = 1024, bad_read_ranges=(), bad_write_ranges=(),
                 mul_stages: int = 0, add_stages: int = 0):
        from golden.expert_cache import ExpertCacheModel
        from golden.pe_array import array_latency

        self.interleave = interleave_of(add_stages)
        self.mul_stages, self.add_stages = int(mul_stages), int(add_stages)
        self.latency = array_latency(self.mul_stages, self.add_stages)

        self.pes = check_pes(rows * cols)
        self.rows, self.cols = rows, cols
        self.line = 2 * self.pes
        if expert_bytes % self.line:
            raise ValueError(f"expert_bytes must be a multiple of the line, {self.line} bytes")
        self.mem = mem
        self.slots, self.expert_bytes = slots, expert_bytes
        self.n_layers, self.n_experts = n_layers, n_experts
        self.expert_base = expert_base
        self.k_max, self.n_max = k_max, n_max
        self.bad_read_ranges = list(bad_read_ranges)
        self.bad_write_ranges = list(bad_write_ranges)
        self.cache = ExpertCacheModel(slots, policy, queue_depth=queue_depth,
                                      expert_bytes=expert_bytes, n_layers=n_layers,
                                      n_experts=n_experts, max_pins=max_pins, lfu_max=lfu_max)
        self.slot_data = [bytes(expert_bytes) for _ in range(slots)]
        self.acts = np.zeros((LANES, -(-k_max // self.pes) * self.pes), dtype=np.uint16)
        self.acts_k: int | None = None
        self.acts_tokens = 0
        self.tables: SetTables | None = None
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.index = 0
        self.first_error: tuple[int, str] | None = None
        self.last_error: tuple[int, str] | None = None
        self.resp: tuple[int, int, bool, bool] | None = None    # index, slot, hit, error

    # -- bus ------------------------------------------------------------------------------
    def _bad(self, ranges, addr: int, nbytes: int) -> bool:
        return any(lo <= a < hi for lo, hi in ranges for a in range(addr, addr + nbytes, self.line))

    def _read(self, addr: int, nbytes: int) -> tuple[bytes, bool]:
        if addr + nbytes > len(self.mem):
            raise ValueError(f"read of {nbytes} bytes at {addr:#x} leaves the {len(self.mem)}-byte "
                             f"host memory")
        return bytes(self.mem[addr:addr + nbytes]), self._bad(self.bad_read_ranges, addr, nbytes)

    def _aligned(self, *values: int) -> bool:
        return all(v % self.line == 0 for v in values)

    # -- commands -------------------------------------------------------------------------
    def drop(self, cmd) -> Outcome:
        """A command pushed into a full queue: it gets an index and an ``OVERFLOW`` error."""
        return self._finish(self._take_index(), "OVERFLOW", count=False)

    def run(self, cmd) -> Outcome:
        """Execute one command (an object of this module, or its 8 words)."""
        if isinstance(cmd, (tuple, list)):
            cmd = decode(cmd)
        index = self._take_index()
        handler = {LoadActs: self._load_acts, SetTables: self._set_tables, Matmul: self._matmul,
                   Demand: self._demand, Prefetch: self._prefetch, Release: self._release,
                   Fence: lambda c: (None, {})}.get(type(cmd))
        if handler is None:
            return self._finish(index, "OPCODE")
        cause, extra = handler(cmd)
        return self._finish(index, cause, **extra)

    def _take_index(self) -> int:
        self.index += 1
        return self.index - 1

    def _finish(self, index, cause, *, count=True, resp=None, undefined=()) -> Outcome:
        if count:
            self.counters["cmds_done"] += 1
        if cause is not None:
            self.counters["errors"] += 1
            self.first_error = self.first_error or (index, cause)
            self.last_error = (index, cause)
        if resp is not None:
            self.resp = (index, *resp)
        return Outcome(index, cause, resp, tuple(undefined))

    def clear_errors(self) -> None:
        """``ERR_CLEAR``: forget the first and last error and zero the error count."""
        self.first_error = self.last_error = None
        self.counters["errors"] = 0

    def _load_acts(self, c: LoadActs):
        if not 1 <= c.tokens <= LANES or not 1 <= c.k <= self.k_max:
            return "DIMS", {}
        if not self._aligned(c.addr, c.stride):
            return "ALIGN", {}
        lines = -(-c.k // self.pes)
        bad = False
        for t in range(c.tokens):
            data, err = self._read(c.addr + t * c.stride, lines * self.line)
            bad |= err
            self.acts[t, :lines * self.pes] = np.frombuffer(data, dtype="<u2")
            self.counters["bytes_acts"] += lines * self.line
        if bad:
            self.acts_k, self.acts_tokens = None, 0
            return "READ", {}
        self.acts_k, self.acts_tokens = c.k, c.tokens
        return None, {}

    def _set_tables(self, c: SetTables):
        if tables_error(c) is not None:
            self.tables = None
            return "TABLES", {}
        self.tables = c
        return None, {}

    def _matmul(self, c: Matmul):
        p, line = self.pes, self.line
        if not 1 <= c.n <= self.n_max or not 4 <= c.k <= self.k_max or c.k % 4:
            return "DIMS", {}
        if not self._aligned(c.draft_addr, c.resid_addr, c.out_addr, c.out_stride):
            return "ALIGN", {}
        t = verify_tiles(c.n, p)
        d_bytes, r_bytes = t * c.k // 4 * line, t * 3 * c.k // 4 * line
        verify = c.mode == "verify"
        if c.slot is not None:
            if (c.slot >= self.slots or self.cache.slot_state(c.slot).pins == 0
                    or self.cache.slot_state(c.slot).state != "valid"
                    or c.draft_addr + d_bytes > self.expert_bytes
                    or c.resid_addr + r_bytes > self.expert_bytes):
                return "SLOT", {}
        if self.tables is None:
            return "TABLES", {}
        if self.acts_k != c.k:
            return "ACTS", {}
        if c.slot is None:
            draft, bad = self._read(c.draft_addr, d_bytes)
            resid, bad_r = self._read(c.resid_addr, r_bytes) if verify else (bytes(r_bytes), False)
            bad |= bad_r
            self.counters["bytes_dense"] += d_bytes + (r_bytes if verify else 0)
        else:
            slot = self.slot_data[c.slot]
            draft = slot[c.draft_addr:c.draft_addr + d_bytes]
            resid = slot[c.resid_addr:c.resid_addr + r_bytes] if verify else bytes(r_bytes)
            bad = False
            self.counters["bytes_slot"] += d_bytes + (r_bytes if verify else 0)
        layout = TensorLayout(draft=draft, residual=resid, n=c.n, k=c.k, pes=p, tiles=t,
                              interleave=self.interleave)
        words = stream_words(c.mode, layout)
        from golden.pe_array import stream_results
        tab = self.tables
        beats = stream_results(c.mode, words, self.acts[:, :c.k].T, np.array(tab.base),
                               np.array(tab.lut) & 0x7FFF, self.interleave)
        self.counters["macs"] += LANES * p * words.shape[0]
        if verify:
            out = beats[:c.n, :self.acts_tokens].T                    # (tokens, N)
        else:
            out = beats.reshape(-1)[:c.n][None, :]                    # (1, N)
        if c.fp16:
            from golden.fp import fp32_to_fp16
            out, esize = fp32_to_fp16(out).astype("<u2"), 2
        else:
            out, esize = out.astype("<u4"), 4
        undefined, bad_w = [], False
        for tok in range(out.shape[0]):
            addr = c.out_addr + tok * c.out_stride
            data = out[tok].tobytes()
            self.counters["bytes_written"] += len(data)
            if bad:
                undefined.append((addr, addr + len(data)))
                continue
            for a in range(addr, addr + len(data), line):
                chunk = data[a - addr:a - addr + line]
                if self._bad(self.bad_write_ranges, a, 1):
                    bad_w = True
                    undefined.append((a, a + len(chunk)))
                else:
                    self.mem[a:a + len(chunk)] = chunk
        cause = "READ" if bad else "WRITE" if bad_w else None
        return cause, {"undefined": undefined}

    def _expert_ok(self, layer: int, expert: int) -> bool:
        return layer < self.n_layers and expert < self.n_experts

    def _fill(self, result) -> None:
        if result.slot is not None and not result.error and not result.hit:
            addr = self.cache.host_address(result.layer, result.expert, self.expert_base)
            self.slot_data[result.slot] = self._read(addr, self.expert_bytes)[0]

    def _will_fail(self, layer: int, expert: int) -> bool:
        addr = self.cache.host_address(layer, expert, self.expert_base)
        return not self._aligned(addr) or self._bad(self.bad_read_ranges, addr, self.expert_bytes)

    def _access(self, layer, expert, kind):
        self.cache.clear_errors()
        if self.cache.lookup(layer, expert) is None and self._will_fail(layer, expert):
            self.cache.fail_next_fills(1)
        before = self.cache.counters.bytes_read
        r = self.cache.access(layer, expert, kind)
        self.counters["bytes_fill"] += self.cache.counters.bytes_read - before
        self.cache.clear_errors()
        self._fill(r)
        return r

    def _demand(self, c: Demand):
        if not self._expert_ok(c.layer, c.expert):
            return "EXPERT", {}
        r = self._access(c.layer, c.expert, "demand")
        if r.waited:
            return "FULL", {}
        resp = (r.slot, r.hit, r.error)
        return ("FILL" if r.error else None), {"resp": resp}

    def _prefetch(self, c: Prefetch):
        if not self._expert_ok(c.layer, c.expert):
            return "EXPERT", {}
        self._access(c.layer, c.expert, "prefetch")
        return None, {}

    def _release(self, c: Release):
        from golden.expert_cache import BadReleaseError
        if c.slot >= self.slots:
            return "SLOT", {}
        try:
            self.cache.release(c.slot)
        except BadReleaseError:
            return "RELEASE", {}
        return None, {}

    # -- figures --------------------------------------------------------------------------
    def min_cycles(self, cmd) -> int:
        """A lower bound on the cycles a successful command keeps the accelerator busy."""
        if isinstance(cmd, Matmul) and cmd.n >= 1 and cmd.k >= 1:
            from golden.pe_array import cycles
            return cycles(cmd.mode, cmd.n, cmd.k, self.rows, self.cols,
                          interleave=self.interleave, latency=self.latency)
        if isinstance(cmd, LoadActs) and cmd.tokens >= 1 and cmd.k >= 1:
            return cmd.tokens * -(-cmd.k // self.pes)
        return 1
