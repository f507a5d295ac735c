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

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    @property
    def line(self) -> int:
        return 2 * self.pes

    def model(self, mem: bytearray, **kw) -> AccelModel:
        return AccelModel(self.rows, self.cols, mem, slots=self.slots,
                          expert_bytes=self.expert_bytes, n_layers=self.n_layers,
                          n_experts=self.n_experts, policy=self.policy,
                          queue_depth=self.queue_depth, expert_base=EXPERT_BASE,
                          k_max=self.k_max, n_max=self.n_max, **kw)


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


def _place(mem, w, pes, addr) -> Placed:
    layout = tensor_layout(w, pes)
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


def random_program(params: AccelParams, rng: np.random.Generator, n_commands: int, *,
                   errors: bool = True) -> Program:
    """Lay out host memory and draw about ``n_commands`` commands (see the module docstring)."""
    p = params
    mem = bytearray(rng.integers(0, 256, MEM_BYTES, dtype=np.uint8).tobytes())
    mem[OUT_BASE:OUT_BASE + OUT_BYTES] = bytes(OUT_BYTES)
    dense = []
    addr = DENSE_BASE + p.line * int(rng.integers(0, 64))
    for i in range(6):
        n = int(rng.integers(1, p.n_max + 1)) if i else p.n_max
        k = 4 * int(rng.integers(1, p.k_max // 4 + 1)) if i else p.k_max
        placed = _place(mem, _matrix(rng, n, k), p.pes, addr)
        dense.append(placed)
        size = verify_tiles(n, p.pes) * k * p.line
        addr += size + p.line * int(rng.integers(0, 40))
    assert addr < POISON_BASE, "dense matrices overflow their area"
    experts = {}
    for layer in range(p.n_layers):
        for e in range(p.n_experts):
            n, k = _expert_shape(rng, p)
            base = EXPERT_BASE + (layer * p.n_experts + e) * p.expert_bytes
            placed = _place(mem, _matrix(rng, n, k), p.pes, base)
            experts[layer, e] = Placed(placed.w, placed.draft - base, placed.resid - base)
    poison = _place(mem, _matrix(rng, 2 * p.pes, 8), p.pes, POISON_BASE)
    bad_reads = [(poison.resid + p.line, poison.resid + 2 * p.line),
                 (ACTS_BASE + 0x8000, ACTS_BASE + 0x8000 + p.line)]
    bad_layer, bad_expert = p.n_layers - 1, p.n_experts - 1
    bad_base = EXPERT_BASE + (bad_layer * p.n_experts + bad_expert) * p.expert_bytes
    bad_reads.append((bad_base + p.expert_bytes - p.line, bad_base + p.expert_bytes))
    prog = Program(p, mem, [], bad_reads, [BAD_OUT])
    model = prog.model()
    cmds = prog.commands

    def run(cmd):
        cmds.append(cmd)
        return model.run(cmd)

    def ensure(k, tables_of, tokens=None):
        if model.acts_k != k or (tokens is not None and model.acts_tokens != tokens):
            t = tokens or int(rng.integers(1, 5))
            stride = p.line * int(rng.integers(-(-2 * k // p.line), 40))
            run(LoadActs(t, k, ACTS_BASE + p.line * int(rng.integers(0, 32)), stride))
        if model.tables != SetTables.of(tables_of):
            run(SetTables.of(tables_of))

    def out_args(n, fp16):
        e = 2 if fp16 else 4
        stride = p.line * -(-(n * e) // p.line) + p.line * int(rng.integers(0, 4))
        if 4 * stride > OUT_BYTES:
            stride = p.line * -(-(n * e) // p.line)
        start = OUT_BASE + p.line * int(rng.integers(0, (OUT_BYTES - 4 * stride) // p.line))
        return start, stride

    def matmul(placed, slot=None):
        w = placed.w
        n, k = w.shape
        ensure(k, w)
        fp16 = bool(rng.random() < 0.4)
        out, stride = out_args(n, fp16)
        mode = "draft" if rng.random() < 0.5 else "verify"
        run(Matmul(mode, n, k, placed.draft, placed.resid, out, stride, fp16, slot))

    pinned: list[int] = []
    prefetch_pending = False
    malformed = _malformed(p)
    while len(cmds) < n_commands:
        r = rng.random()
        if r < 0.3:
            matmul(dense[int(rng.integers(0, len(dense)))])
        elif r < 0.5:
            if prefetch_pending:
                run(Fence())
                prefetch_pending = False
            tag = (int(rng.integers(0, p.n_layers)), int(rng.integers(0, p.n_experts)))
            o = run(Demand(*tag))
            if o.ok:
                pinned.append(o.resp[0])
                matmul(experts[tag], slot=o.resp[0])
        elif r < 0.66:
            if pinned:
                run(Release(pinned.pop(int(rng.integers(0, len(pinned))))))
        elif r < 0.7:
            if prefetch_pending:
                run(Fence())
            run(Prefetch(int(rng.integers(0, p.n_layers)), int(rng.integers(0, p.n_experts))))
            prefetch_pending = True
        elif r < 0.75:
            run(Fence())
            prefetch_pending = False
        elif errors:
            kind = int(rng.integers(0, 6))
            if kind == 5:                           # a release of an unpinned slot
                free = [s for s in range(p.slots) if model.cache.slot_state(s).pins == 0]
                if free:
                    run(Release(free[int(rng.integers(0, len(free)))]))
            elif kind == 0:
                run(malformed[int(rng.integers(0, len(malformed)))])
            elif kind == 1:                         # read error on weights
                ensure(8, poison.w)
                out, stride = out_args(poison.w.shape[0], False)
                run(Matmul("verify", poison.w.shape[0], 8, poison.draft, poison.resid, out,
                           stride))
            elif kind == 2:                         # read error on activations, then recover
                run(LoadActs(2, 8, ACTS_BASE + 0x8000, 4 * p.line))
            elif kind == 3:                         # write error
                w = dense[1].w
                ensure(w.shape[1], w)
                run(Matmul("draft", w.shape[0], w.shape[1], dense[1].draft, dense[1].resid,
                           BAD_OUT[0], 0))
            else:                                   # a fill that fails
                if prefetch_pending:
                    run(Fence())
                    prefetch_pending = False
                run(Demand(bad_layer, bad_expert))
    for slot in pinned:
        run(Release(slot))
    run(Fence())
    return prog


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
