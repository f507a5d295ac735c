"""The self-checking harness's program (golden side) and its run in Amaranth's simulator.

:func:`program` makes the passes that :class:`hw.selfcheck.SelfCheck` stores in ROM: a
verify pass and a draft pass of a random BSFP matrix, and a verify pass whose activations
are the FP16 edge values (zeros of both signs, subnormals, the largest finite value,
infinities, NaN), with every expected result from :mod:`golden.pe_array`.
"""

from __future__ import annotations

import numpy as np

from golden.bsfp import encode
from golden.pe_array import acts_stream, pe_tables, result_beats, weight_stream
from hw.selfcheck import Pass, SelfCheck
from sim.pe_stimulus import FP16_EDGES

K = 12


def _pass(mode: str, w, acts, rows: int, cols: int, g: int) -> Pass:
    words, last = weight_stream(mode, w, rows, cols, g)
    a = acts_stream(mode, acts, w.shape[0], rows, cols, g)
    base, lut = pe_tables(w)
    expected = result_beats(mode, w, acts, rows, cols, g)
    return Pass(mode=mode, base=tuple(int(x) for x in base), lut=tuple(int(x) for x in lut),
                words=tuple(tuple(int(x) for x in row) for row in words),
                last=tuple(bool(x) for x in last), acts=tuple(tuple(int(x) for x in row) for row in a),
                expected=tuple(tuple(int(x) for x in row) for row in expected))


def program(rows: int, cols: int, seed: int, interleave: int = 1) -> list[Pass]:
    """Three passes for a ``rows x cols`` array whose beats interleave *interleave* tiles:
    verify, draft, verify with edge values."""
    rng = np.random.default_rng(seed)
    pes = rows * cols
    n_verify, n_draft = 2 * pes, 4 * pes
    w = encode(rng.normal(0, 0.05, (max(n_verify, n_draft), K)).astype(np.float16))
    wv = encode(rng.normal(0, 0.05, (n_verify, K)).astype(np.float16))
    acts4 = rng.normal(0, 1, (4, K)).astype(np.float16)
    acts1 = rng.normal(0, 1, K).astype(np.float16)
    edges = np.resize(FP16_EDGES, 4 * K).reshape(4, K).view(np.float16)
    return [_pass("verify", wv, acts4, rows, cols, interleave),
            _pass("draft", w, acts1, rows, cols, interleave),
            _pass("verify", wv, edges, rows, cols, interleave)]


def simulate_selfcheck(dut: SelfCheck, max_cycles: int = 20000) -> dict:
    """Run the harness until ``done`` (or *max_cycles*); return done, passed, errors, cycles."""
    from amaranth.sim import Simulator

    out = {}

    async def testbench(ctx):
        cycles = 0
        while not ctx.get(dut.done) and cycles < max_cycles:
            await ctx.tick()
            cycles += 1
        out.update(done=bool(ctx.get(dut.done)), passed=bool(ctx.get(dut.passed)),
                   errors=int(ctx.get(dut.errors)), results=int(ctx.get(dut.results)),
                   cycles=cycles)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return out
