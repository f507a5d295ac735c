"""golden.accel: tensor layout, command encoding and the command model."""

from __future__ import annotations

import numpy as np
import pytest

from golden import bsfp, pe_array
from golden.accel import (CAUSES, AccelModel, Demand, Fence, LoadActs, Matmul, Prefetch, Raw,
                          Release, SetTables, decode, stream_words, tables_error, tensor_layout,
                          verify_tiles)
from golden.fp import fp32_to_fp16

SHAPES = [(2, 2, 16, 8), (2, 2, 5, 12), (4, 4, 100, 16), (4, 4, 64, 32), (2, 4, 17, 4),
          (4, 4, 300, 8), (4, 4, 1, 4)]


def _matrix(rng, n, k):
    return bsfp.encode((rng.standard_normal((n, k)) * 0.5).astype(np.float16))


@pytest.mark.parametrize("interleave", [1, 2, 4])
@pytest.mark.parametrize("rows,cols,n,k", SHAPES)
def test_layout_streams_equal_the_array_weight_streams(rng, rows, cols, n, k, interleave):
    # Tile counts 1..19: full and short last groups, padding tiles in both modes.
    w = _matrix(rng, n, k)
    layout = tensor_layout(w, rows * cols, interleave)
    line = 2 * rows * cols
    assert len(layout.draft) == layout.draft_lines * line
    assert len(layout.residual) == layout.residual_lines * line
    assert len(layout.residual) == 3 * len(layout.draft)
    for mode in ("draft", "verify"):
        words, _ = pe_array.weight_stream(mode, w, rows, cols, interleave)
        np.testing.assert_array_equal(stream_words(mode, layout), words)


def test_layout_groups_are_k_major_and_a_draft_tile_line_is_one_line_per_k(rng):
    # P = 4, G = 4, N = 20: verify tiles 0..4, group 0 = tiles 0..3, group 1 = tile 4 alone.
    p, k, n = 4, 8, 20
    w = _matrix(rng, n, k)
    lay = tensor_layout(w, p, 4)
    draft = np.frombuffer(lay.draft, "<u2")
    plane = w.draft_plane()                              # (ceil(N/4), K): row groups
    for kk in range(k):
        # Line kk of group 0 holds row groups 0..3 (tiles 0..3, one word each) at kk.
        np.testing.assert_array_equal(draft[kk * p:(kk + 1) * p], plane[0:4, kk])
        # Group 1 (one tile) holds a quarter per k, right after group 0's K lines.
        assert draft[k * p + kk] == plane[4, kk]
    assert draft.size == 5 * k                           # no padding tile stored
    resid = bsfp.unpack_residual_plane(np.frombuffer(lay.residual, np.uint8).copy(), (n * k,))
    np.testing.assert_array_equal(resid[:4 * p].reshape(4, p),
                                  (w.words[0:16, 0] & 0xFFF).reshape(4, p))


def test_layout_with_interleave_1_is_tile_after_tile(rng):
    p, k, n = 8, 12, 19
    w = _matrix(rng, n, k)
    lay = tensor_layout(w, p, 1)
    draft = np.frombuffer(lay.draft, "<u2").reshape(3, k, p // 4)      # (tile, k, quarter)
    np.testing.assert_array_equal(draft[1, :, 0], w.draft_plane()[2, :])


def test_layout_rejects_k_not_multiple_of_4_and_pes_not_multiple_of_4(rng):
    with pytest.raises(ValueError, match="multiple of 4"):
        tensor_layout(_matrix(rng, 4, 6), 4)
    with pytest.raises(ValueError, match="multiple of 4"):
        tensor_layout(_matrix(rng, 4, 8), 2)
    with pytest.raises(ValueError, match="1, 2 or 4"):
        tensor_layout(_matrix(rng, 4, 8), 4, 3)
    with pytest.raises(ValueError, match="1, 2 or 4"):
        AccelModel(2, 2, bytearray(64), add_stages=2)


def _random_command(rng):
    kind = int(rng.integers(0, 8))
    r = lambda bits: int(rng.integers(0, 1 << bits))  # noqa: E731
    if kind == 0:
        return LoadActs(int(rng.integers(0, 8)), r(16), r(32), r(32))
    if kind == 1:
        return SetTables(tuple(r(5) for _ in range(8)), tuple(r(2) + 1 for _ in range(8)),
                         tuple(r(16) for _ in range(8)))
    if kind == 2:
        slot = r(8) if rng.random() < 0.5 else None
        return Matmul(("draft", "verify")[r(1)], r(16), r(16), r(32), r(32), r(32), r(32),
                      bool(r(1)), slot)
    if kind == 3:
        return Demand(r(16), r(16))
    if kind == 4:
        return Prefetch(r(16), r(16))
    if kind == 5:
        return Release(r(8))
    if kind == 6:
        return Fence()
    return Raw((int(rng.choice([0, 8, 9, 15])),) + tuple(r(32) for _ in range(7)))


def test_every_command_survives_encode_then_decode(rng):
    for _ in range(2000):
        c = _random_command(rng)
        words = c.encode()
        assert len(words) == 8 and all(0 <= x < 1 << 32 for x in words)
        assert decode(words) == c


def test_encode_rejects_fields_that_do_not_fit():
    with pytest.raises(ValueError, match="N must be"):
        Matmul("verify", 1 << 16, 4, 0, 0, 0).encode()
    with pytest.raises(ValueError, match="tokens"):
        LoadActs(8, 4, 0, 0).encode()


def test_tables_error_names_each_bsfp_rule():
    ok = SetTables(tuple(range(0, 32, 4)), (4,) * 8, (0x3C00,) * 8)
    assert tables_error(ok) is None
    assert "overlap" in tables_error(SetTables((0, 3) + tuple(range(8, 32, 4)),
                                               (4,) * 8, (0,) * 8))
    assert "reaches exponent" in tables_error(SetTables((0, 4, 8, 12, 16, 20, 24, 30),
                                                        (4,) * 8, (0,) * 8))
    assert "negative" in tables_error(SetTables(ok.base, ok.size, (0x8000,) + (0,) * 7))
    assert "finite" in tables_error(SetTables(ok.base, ok.size, (0x7C00,) + (0,) * 7))


class Setup:
    """A host memory with one matrix (dense and as expert (1, 2)) and activations."""

    def __init__(self, rng, rows=2, cols=2, n=10, k=8, tokens=3, add_stages=0):
        self.p = rows * cols
        self.line = 2 * self.p
        self.mem = bytearray(1 << 20)
        self.w = _matrix(rng, n, k)
        self.layout = tensor_layout(self.w, self.p, add_stages + 1)
        self.d_addr, self.r_addr = 0x1000, 0x2000
        self.mem[0x1000:0x1000 + len(self.layout.draft)] = self.layout.draft
        self.mem[0x2000:0x2000 + len(self.layout.residual)] = self.layout.residual
        self.expert_bytes = 4096
        ex = (1 * 16 + 2) * self.expert_bytes
        self.e_draft, self.e_resid = 0, 2048
        self.mem[ex:ex + len(self.layout.draft)] = self.layout.draft
        self.mem[ex + 2048:ex + 2048 + len(self.layout.residual)] = self.layout.residual
        self.acts = (rng.standard_normal((tokens, k))).astype(np.float16)
        for t in range(tokens):
            self.mem[0x3000 + t * 64:0x3000 + t * 64 + 2 * k] = self.acts[t].tobytes()
        self.n, self.k, self.tokens = n, k, tokens
        self.model = AccelModel(rows, cols, self.mem, expert_bytes=self.expert_bytes,
                                mul_stages=add_stages, add_stages=add_stages)

    def prologue(self):
        assert self.model.run(LoadActs(self.tokens, self.k, 0x3000, 64)).ok
        assert self.model.run(SetTables.of(self.w)).ok

    def out(self, addr, tokens, fp16=False):
        e = 2 if fp16 else 4
        raw = bytes(self.mem[addr:addr + tokens * 64])
        dt = "<u2" if fp16 else "<u4"
        return np.frombuffer(raw, dt).reshape(tokens, 64 // e)[:, :self.n]


@pytest.mark.parametrize("add_stages", [0, 3])
@pytest.mark.parametrize("fp16", [False, True])
@pytest.mark.parametrize("source", ["dense", "slot"])
def test_matmul_writes_the_array_results_token_major(rng, fp16, source, add_stages):
    s = Setup(rng, add_stages=add_stages)
    s.prologue()
    slot = None
    d, r = s.d_addr, s.r_addr
    if source == "slot":
        o = s.model.run(Demand(1, 2))
        assert o.ok and o.resp == (0, False, False)
        slot, d, r = 0, s.e_draft, s.e_resid
    assert s.model.run(Matmul("verify", s.n, s.k, d, r, 0x4000, 64, fp16, slot)).ok
    assert s.model.run(Matmul("draft", s.n, s.k, d, r, 0x5000, 64, fp16, slot)).ok
    ver = pe_array.matmul("verify", s.w, s.acts).view(np.uint32)
    dra = pe_array.matmul("draft", s.w, s.acts[0]).view(np.uint32)[None, :]
    if fp16:
        ver, dra = fp32_to_fp16(ver), fp32_to_fp16(dra)
    np.testing.assert_array_equal(s.out(0x4000, s.tokens, fp16), ver)
    np.testing.assert_array_equal(s.out(0x5000, 1, fp16), dra)
    # Padding rows are never written.
    e = 2 if fp16 else 4
    assert not any(s.mem[0x4000 + s.n * e:0x4000 + 64])


@pytest.mark.parametrize("add_stages", [0, 3])
def test_draft_pass_reads_a_quarter_of_the_verify_bytes_dense_and_slot(rng, add_stages):
    for n in (1, 5, 16, 33, 100):
        s = Setup(rng, n=n, k=12, add_stages=add_stages)
        s.prologue()
        c = s.model.counters
        s.model.run(Matmul("verify", n, 12, s.d_addr, s.r_addr, 0x4000, 64))
        verify = c["bytes_dense"]
        s.model.run(Matmul("draft", n, 12, s.d_addr, s.r_addr, 0x4000, 64))
        assert 4 * (c["bytes_dense"] - verify) == verify
        assert verify == verify_tiles(n, 4) * 12 * 8
        s.model.run(Demand(1, 2))
        s.model.run(Matmul("verify", n, 12, 0, 2048, 0x4000, 64, slot=0))
        s.model.run(Matmul("draft", n, 12, 0, 2048, 0x4000, 64, slot=0))
        assert c["bytes_slot"] == verify + verify // 4


@pytest.mark.parametrize("add_stages,run_tiles", [(0, 5), (1, 6), (3, 8)])
def test_counters_count_bytes_macs_and_commands(rng, add_stages, run_tiles):
    # N = 70 on 16 PEs: 5 verify tiles, run as 5, 6 or 8 (padding tiles count MACs, not bytes).
    s = Setup(rng, rows=4, cols=4, n=70, k=16, tokens=2, add_stages=add_stages)
    s.prologue()
    s.model.run(Matmul("verify", 70, 16, s.d_addr, s.r_addr, 0x4000, 256, fp16=True))
    c = s.model.counters
    assert c["bytes_acts"] == 2 * 32
    assert c["bytes_dense"] == 5 * 16 * 32
    assert c["macs"] == 4 * 16 * run_tiles * 16
    assert c["bytes_written"] == 2 * 70 * 2
    assert c["cmds_done"] == 3 and c["errors"] == 0


def _cause(model, cmd):
    return model.run(cmd).cause


def test_each_malformed_command_fails_with_its_cause_and_the_next_one_runs(rng):
    s = Setup(rng)
    m = s.model
    good = Matmul("verify", s.n, s.k, s.d_addr, s.r_addr, 0x4000, 64)
    assert _cause(m, good) == "TABLES"              # no tables yet
    assert _cause(m, SetTables.of(s.w)) is None
    assert _cause(m, good) == "ACTS"                # no activations yet
    s.model.run(LoadActs(s.tokens, s.k, 0x3000, 64))
    cases = [
        (Raw((0,) * 8), "OPCODE"), (Raw((9,) + (0,) * 7), "OPCODE"),
        (Matmul("verify", 0, 8, 0x1000, 0x2000, 0x4000, 64), "DIMS"),
        (Matmul("verify", 4, 0, 0x1000, 0x2000, 0x4000, 64), "DIMS"),
        (Matmul("verify", 4, 6, 0x1000, 0x2000, 0x4000, 64), "DIMS"),
        (Matmul("verify", 4, 2048, 0x1000, 0x2000, 0x4000, 64), "DIMS"),
        (Matmul("verify", 2000, 8, 0x1000, 0x2000, 0x4000, 64), "DIMS"),
        (Matmul("verify", 4, 8, 0x1004, 0x2000, 0x4000, 64), "ALIGN"),
        (Matmul("verify", 4, 8, 0x1000, 0x2000, 0x4000, 60), "ALIGN"),
        (Matmul("verify", 4, 16, 0x1000, 0x2000, 0x4000, 64), "ACTS"),
        (Matmul("verify", 4, 8, 0, 0, 0x4000, 64, slot=0), "SLOT"),      # not pinned
        (Matmul("verify", 4, 8, 0, 0, 0x4000, 64, slot=9), "SLOT"),      # no such slot
        (LoadActs(0, 8, 0x3000, 64), "DIMS"), (LoadActs(5, 8, 0x3000, 64), "DIMS"),
        (LoadActs(1, 8, 0x3001, 64), "ALIGN"),
        (SetTables((0, 3, 8, 12, 16, 20, 24, 28), (4,) * 8, (0,) * 8), "TABLES"),
        (Release(0), "RELEASE"), (Release(4), "SLOT"),
        (Demand(4, 0), "EXPERT"), (Prefetch(0, 16), "EXPERT"),
    ]
    for cmd, cause in cases:
        before = bytes(s.mem)
        assert _cause(m, cmd) == cause, cmd
        assert bytes(s.mem) == before
    assert _cause(m, good) == "TABLES"          # the bad SET_TABLES invalidated the tables
    assert _cause(m, SetTables.of(s.w)) is None
    assert _cause(m, good) is None
    assert m.first_error[1] == "TABLES" and m.last_error[1] is not None
    assert m.counters["errors"] == 3 + len(cases)
    assert set(c for _, c in cases) | {"TABLES", "ACTS"} <= set(CAUSES)


def test_read_errors_fail_the_command_and_leave_its_output_undefined(rng):
    s = Setup(rng)
    s.model.bad_read_ranges = [(0x2000, 0x2008)]
    s.prologue()
    o = s.model.run(Matmul("verify", s.n, s.k, s.d_addr, s.r_addr, 0x4000, 64))
    assert o.cause == "READ" and o.undefined
    # The draft pass does not read the residual region.
    assert s.model.run(Matmul("draft", s.n, s.k, s.d_addr, s.r_addr, 0x5000, 64)).ok
    s.model.bad_read_ranges = [(0x3040, 0x3048)]
    assert s.model.run(LoadActs(s.tokens, s.k, 0x3000, 64)).cause == "READ"
    assert s.model.run(Matmul("draft", s.n, s.k, s.d_addr, s.r_addr, 0x5000, 64)).cause == "ACTS"
    ex = (1 * 16 + 2) * 4096
    s.model.bad_read_ranges = [(ex, ex + 8)]
    o = s.model.run(Demand(1, 2))
    assert o.cause == "FILL" and o.resp == (0, False, True)
    assert s.model.cache.counters.errors == 1
    assert s.model.run(Demand(1, 3)).ok


def test_demand_on_a_full_cache_fails_instead_of_waiting(rng):
    s = Setup(rng)
    for e in range(4):
        assert s.model.run(Demand(0, e)).ok
    assert s.model.run(Demand(0, 5)).cause == "FULL"
    assert s.model.run(Demand(0, 1)).resp == (1, True, False)     # a hit is still served
    assert s.model.run(Release(2)).ok
    assert s.model.run(Demand(0, 5)).resp == (2, False, False)


def test_write_errors_fail_the_matmul_and_skip_the_bad_lines(rng):
    s = Setup(rng)
    s.model.bad_write_ranges = [(0x4040, 0x4048)]
    s.prologue()
    o = s.model.run(Matmul("verify", s.n, s.k, s.d_addr, s.r_addr, 0x4000, 64))
    assert o.cause == "WRITE" and (0x4040, 0x4048) in o.undefined
    assert not any(s.mem[0x4040:0x4048])


def test_overflow_takes_an_index(rng):
    s = Setup(rng)
    assert s.model.run(Fence()).index == 0
    assert s.model.drop(Fence()).cause == "OVERFLOW"
    assert s.model.run(Fence()).index == 2
    assert s.model.counters["cmds_done"] == 2


@pytest.mark.parametrize("mul_stages,add_stages", [(0, 0), (4, 3), (2, 1)])
def test_min_cycles_follow_the_pipeline_depth(mul_stages, add_stages):
    model = AccelModel(4, 4, bytearray(64), mul_stages=mul_stages, add_stages=add_stages)
    g, latency = add_stages + 1, 7 + mul_stages + add_stages
    for mode, n in (("verify", 70), ("draft", 300)):
        cmd = Matmul(mode, n, 32, 0, 0, 0)
        assert model.min_cycles(cmd) == pe_array.cycles(mode, n, 32, 4, 4, interleave=g,
                                                        latency=latency)
    # 5 verify tiles run as 8 at G = 4: (K - 1) G + L + (groups - 1) G max(K, P) + G P.
    if add_stages == 3:
        assert model.min_cycles(Matmul("verify", 70, 32, 0, 0, 0)) == 31 * 4 + latency + 4 * 32 + 64
