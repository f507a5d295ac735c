"""Random command programs for the accelerator top, built against the golden model.

:func:`random_program` lays out host memory (dense BSFP matrices, one matrix per expert,
activations, an output area, and poisoned ranges that answer SLVERR) and draws a program of
commands: activation loads, table loads, dense and expert MATMULs in both modes and both
output formats, demands, prefetches (each followed by a FENCE before the next cache command,
so that the golden cache model predicts every hit and victim), releases, and every malformed
command class. It runs its own :class:`golden.accel.AccelModel` while drawing, so that expert
MATMULs name slots that the cache really holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from golden import bsfp
from golden.accel import (AccelModel, Demand, Fence, LoadActs, Matmul, Prefetch, Raw, Release,
                          SetTables, tensor_layout, verify_tiles)

MEM_BYTES = 1 << 20
EXPERT_BASE = 0x80000
DENSE_BASE = 0x10000
POISON_BASE = 0x40000        # a dense matrix whose residual region answers SLVERR
ACTS_BASE = 0x60000
OUT_BASE = 0x70000
OUT_BYTES = 0xE000
BAD_OUT = (0x7F000, 0x7F100)  # writes here answer SLVERR


@dataclass(frozen=True)
class AccelParams:
    """The parameters of an accelerator under test (a subset of ``hw.accel.Accelerator``'s)."""
    rows: int = 2
    cols: int = 2
    slots: int = 4
    expert_bytes: int = 1024
    n_layers: int = 2
    n_experts: int = 4
    policy: str = "lru"
    k_max: int = 64
    n_max: int = 64
    queue_depth: int = 2
    cmd_depth: int = 8
    mul_stages: int = 4
    add_stages: int = 3

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    @property
    def interleave(self) -> int:
        """Tiles the array interleaves, ``add_stages + 1``: the layout's group size."""
        return self.add_stages + 1

    @property
    def line(self) -> int:
        return 2 * self.pes

    def model(self, mem: bytearray, **kw) -> AccelModel:
        return AccelModel(self.rows, self.cols, mem, slots=self.slots,
                          expert_bytes=self.expert_bytes, n_layers=self.n_layers,
                          n_experts=self.n_experts, policy=self.policy,
                          queue_depth=self.queue_depth, expert_base=EXPERT_BASE,
                          k_max=self.k_max, n_max=self.n_max, mul_stages=self.mul_stages,
                          add_stages=self.add_stages, **kw)


@dataclass
class Placed:
    """A matrix in memory: its tensor and the addresses (or slot offsets) of its regions."""
    w: bsfp.BsfpTensor
    draft: int
    resid: int


@dataclass
class Program:
    params: AccelParams
    mem: bytearray
    commands: list
    bad_read_ranges: list = field(default_factory=list)
    bad_write_ranges: list = field(default_factory=list)

    def model(self) -> AccelModel:
        return self.params.model(bytearray(self.mem), bad_read_ranges=self.bad_read_ranges,
                                 bad_write_ranges=self.bad_write_ranges)


def _matrix(rng, n, k) -> bsfp.BsfpTensor:
    scale = float(rng.choice([0.01, 0.5, 4.0]))
    w = (rng.standard_normal((n, k)) * scale).astype(np.float16)
    if rng.random() < 0.3:                       # a few edge values
        flat = w.reshape(-1)
        idx = rng.integers(0, flat.size, size=min(4, flat.size))
        flat[idx] = np.array([0.0, -0.0, 6e-8, -65504.0], dtype=np.float16)[:idx.size]
    return bsfp.encode(w)


def _place(mem, w, pes, addr, interleave) -> Placed:
    layout = tensor_layout(w, pes, interleave)
    mem[addr:addr + len(layout.draft)] = layout.draft
    resid = addr + len(layout.draft)
    mem[resid:resid + len(layout.residual)] = layout.residual
    return Placed(w, addr, resid)


def _expert_shape(rng, p: AccelParams) -> tuple[int, int]:
    while True:
        k = int(rng.choice([4, 8, 12, 16, 32]))
        n = int(rng.integers(1, 4 * p.pes + 1))
        if verify_tiles(n, p.pes) * k * p.line <= p.expert_bytes and k <= p.k_max \
                and n <= p.n_max:
            return n, k


class Builder:
    """Host memory laid out for a program, the program so far and the golden model run on it.

    Memory: six dense matrices (the first N = n_max, K = k_max) at line-aligned, otherwise
    random places; one matrix per expert; a poisoned dense matrix (one residual line answers
    SLVERR); a poisoned activation line; a poisoned last line of the last expert; a poisoned
    output range.
    """

    def __init__(self, params: AccelParams, rng: np.random.Generator):
        p = self.p = params
        self.rng = rng
        mem = bytearray(rng.integers(0, 256, MEM_BYTES, dtype=np.uint8).tobytes())
        mem[OUT_BASE:OUT_BASE + OUT_BYTES] = bytes(OUT_BYTES)
        self.dense = []
        addr = DENSE_BASE + p.line * int(rng.integers(0, 64))
        for i in range(6):
            n = int(rng.integers(1, p.n_max + 1)) if i else p.n_max
            k = 4 * int(rng.integers(1, p.k_max // 4 + 1)) if i else p.k_max
            self.dense.append(_place(mem, _matrix(rng, n, k), p.pes, addr, p.interleave))
            addr += verify_tiles(n, p.pes) * k * p.line + p.line * int(rng.integers(0, 40))
        assert addr < POISON_BASE, "dense matrices overflow their area"
        self.experts = {}
        for layer in range(p.n_layers):
            for e in range(p.n_experts):
                n, k = _expert_shape(rng, p)
                base = EXPERT_BASE + (layer * p.n_experts + e) * p.expert_bytes
                placed = _place(mem, _matrix(rng, n, k), p.pes, base, p.interleave)
                self.experts[layer, e] = Placed(placed.w, placed.draft - base, placed.resid - base)
        self.poison = _place(mem, _matrix(rng, 2 * p.pes, 8), p.pes, POISON_BASE, p.interleave)
        self.bad_acts = ACTS_BASE + 0x8000
        bad_reads = [(self.poison.resid + p.line, self.poison.resid + 2 * p.line),
                     (self.bad_acts, self.bad_acts + p.line)]
        self.bad_expert = (p.n_layers - 1, p.n_experts - 1)
        bad_base = EXPERT_BASE + (self.bad_expert[0] * p.n_experts + self.bad_expert[1]) \
            * p.expert_bytes
        bad_reads.append((bad_base + p.expert_bytes - p.line, bad_base + p.expert_bytes))
        self.prog = Program(p, mem, [], bad_reads, [BAD_OUT])
        self.model = self.prog.model()
        self.pinned: list[int] = []
        self.prefetch_pending = False

    def run(self, cmd):
        if isinstance(cmd, (Demand, Prefetch)) and self.prefetch_pending:
            self.run(Fence())
        if isinstance(cmd, (Prefetch, Fence)):
            self.prefetch_pending = isinstance(cmd, Prefetch)
        self.prog.commands.append(cmd)
        outcome = self.model.run(cmd)
        if isinstance(cmd, Demand) and outcome.ok:
            self.pinned.append(outcome.resp[0])
        if isinstance(cmd, Release) and outcome.ok:
            self.pinned.remove(cmd.slot)
        return outcome

    def ensure(self, k: int, tables_of) -> None:
        """Load activations of length ``k`` and the tables of ``tables_of`` unless present."""
        p, rng, model = self.p, self.rng, self.model
        if model.acts_k != k:
            stride = p.line * int(rng.integers(-(-2 * k // p.line), 40))
            self.run(LoadActs(int(rng.integers(1, 5)), k,
                              ACTS_BASE + p.line * int(rng.integers(0, 32)), stride))
        if model.tables != SetTables.of(tables_of):
            self.run(SetTables.of(tables_of))

    def out_args(self, n: int, fp16: bool) -> tuple[int, int]:
        p, rng = self.p, self.rng
        e = 2 if fp16 else 4
        stride = p.line * -(-(n * e) // p.line) + p.line * int(rng.integers(0, 4))
        if 4 * stride > OUT_BYTES:
            stride = p.line * -(-(n * e) // p.line)
        start = OUT_BASE + p.line * int(rng.integers(0, (OUT_BYTES - 4 * stride) // p.line))
        return start, stride

    def matmul(self, placed: Placed, slot=None, mode=None, fp16=None):
        n, k = placed.w.shape
        self.ensure(k, placed.w)
        fp16 = bool(self.rng.random() < 0.4) if fp16 is None else fp16
        out, stride = self.out_args(n, fp16)
        mode = mode or ("draft" if self.rng.random() < 0.5 else "verify")
        return self.run(Matmul(mode, n, k, placed.draft, placed.resid, out, stride, fp16, slot))

    def demand_and_matmul(self, tag, mode=None):
        o = self.run(Demand(*tag))
        if o.ok:
            self.matmul(self.experts[tag], slot=o.resp[0], mode=mode)
        return o

    def weight_read_error(self):
        ps = self.poison
        self.ensure(8, ps.w)
        out, stride = self.out_args(ps.w.shape[0], False)
        return self.run(Matmul("verify", ps.w.shape[0], 8, ps.draft, ps.resid, out, stride))

    def acts_read_error(self):
        return self.run(LoadActs(2, 8, self.bad_acts, 4 * self.p.line))

    def write_error(self):
        w = self.dense[1].w
        self.ensure(w.shape[1], w)
        return self.run(Matmul("draft", w.shape[0], w.shape[1], self.dense[1].draft,
                               self.dense[1].resid, BAD_OUT[0], 0))

    def bad_release(self):
        free = [s for s in range(self.p.slots) if self.model.cache.slot_state(s).pins == 0]
        if free:
            return self.run(Release(free[int(self.rng.integers(0, len(free)))]))
        return None

    def finish(self) -> Program:
        for slot in list(self.pinned):
            self.run(Release(slot))
        self.run(Fence())
        return self.prog


def random_program(params: AccelParams, rng: np.random.Generator, n_commands: int, *,
                   errors: bool = True) -> Program:
    """Lay out host memory and draw about ``n_commands`` commands (see the module docstring)."""
    b = Builder(params, rng)
    p = params
    malformed = _malformed(p)
    while len(b.prog.commands) < n_commands:
        r = rng.random()
        if r < 0.3:
            b.matmul(b.dense[int(rng.integers(0, len(b.dense)))])
        elif r < 0.5:
            b.demand_and_matmul((int(rng.integers(0, p.n_layers)),
                                 int(rng.integers(0, p.n_experts))))
        elif r < 0.66:
            if b.pinned:
                b.run(Release(b.pinned[int(rng.integers(0, len(b.pinned)))]))
        elif r < 0.7:
            b.run(Prefetch(int(rng.integers(0, p.n_layers)), int(rng.integers(0, p.n_experts))))
        elif r < 0.75:
            b.run(Fence())
        elif errors:
            kind = int(rng.integers(0, 6))
            if kind == 0:
                b.run(malformed[int(rng.integers(0, len(malformed)))])
            elif kind == 1:
                b.weight_read_error()
            elif kind == 2:
                b.acts_read_error()
            elif kind == 3:
                b.write_error()
            elif kind == 4:
                b.run(Demand(*b.bad_expert))
            else:
                b.bad_release()
    return b.finish()


def directed_program(params: AccelParams, rng: np.random.Generator) -> Program:
    """Every malformed command class and every bus error, each followed by a command that
    must succeed; a full cache; and a verify and a draft pass of the same matrix from host
    memory and from a slot, back to back (their bytes must be 4:1)."""
    b = Builder(params, rng)
    p = params
    good = b.dense[2]

    def then_good():
        assert b.matmul(good).ok
    for cmd in _malformed(p):
        assert not b.run(cmd).ok, cmd
        then_good()
    other = 8 if b.model.acts_k == 4 else 4
    assert b.run(Matmul("verify", 4, other, DENSE_BASE, DENSE_BASE, OUT_BASE, 0)).cause == "ACTS"
    then_good()
    for fail in (b.weight_read_error, b.acts_read_error, b.write_error,
                 lambda: b.run(Demand(*b.bad_expert)), b.bad_release):
        assert not fail().ok
        then_good()
    tags = [t for t in b.experts if t != b.bad_expert]
    if len(tags) <= p.slots:
        raise ValueError("the directed program needs more good experts than slots")
    for tag in tags[:p.slots]:                 # fill the cache with pinned experts
        assert b.run(Demand(*tag)).ok
    assert b.run(Demand(*tags[p.slots])).cause == "FULL"
    b.finish()
    for tag in ((0, 0),):
        for mode in ("verify", "draft"):
            b.matmul(good, mode=mode)
        o = b.run(Demand(*tag))
        for mode in ("verify", "draft"):
            b.matmul(b.experts[tag], slot=o.resp[0], mode=mode)
    return b.finish()


def _malformed(p: AccelParams) -> list:
    line = p.line
    return [
        Raw((0,) * 8), Raw((11, 1, 2, 3, 4, 5, 6, 7)),
        Matmul("verify", 0, 8, DENSE_BASE, DENSE_BASE, OUT_BASE, 0),
        Matmul("draft", p.n_max + 1, 8, DENSE_BASE, DENSE_BASE, OUT_BASE, 0),
        Matmul("verify", 4, 6, DENSE_BASE, DENSE_BASE, OUT_BASE, 0),
        Matmul("verify", 4, p.k_max + 4, DENSE_BASE, DENSE_BASE, OUT_BASE, 0),
        Matmul("verify", 4, 8, DENSE_BASE + 2, DENSE_BASE, OUT_BASE, 0),
        Matmul("draft", 4, 8, DENSE_BASE, DENSE_BASE, OUT_BASE, line + 2),
        Matmul("verify", 4, 8, 0, 0, OUT_BASE, 0, slot=p.slots),
        Matmul("verify", 4, 8, p.expert_bytes, 0, OUT_BASE, 0, slot=0),
        LoadActs(0, 8, ACTS_BASE, 0), LoadActs(5, 8, ACTS_BASE, 0),
        LoadActs(1, p.k_max + 4, ACTS_BASE, 0), LoadActs(1, 8, ACTS_BASE + 4, 0),
        SetTables((0, 3, 8, 12, 16, 20, 24, 28), (4,) * 8, (0,) * 8),
        SetTables(tuple(range(0, 32, 4)), (4,) * 8, (0x7C00,) + (0,) * 7),
        Release(p.slots), Demand(p.n_layers, 0), Prefetch(0, p.n_experts),
    ]
