"""PEArray vs the golden model: construction, Amaranth simulator, cocotb (Verilator, Icarus)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Fragment

from golden import pe_array
from golden.seed import base_seed, derived_seed
from sim.array_flow import (ARRAY_COUNTERS, mismatches, random_job, run_array_cocotb, simulate_array,
                            standard_jobs)
from sim.runner import simulator_missing

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "tests"


STALL_COUNTERS = ARRAY_COUNTERS


def no_stall_counters(jobs) -> dict | None:
    """The counters of a run with no injected stall, one job at a time (``overlap=False``).

    Per job (``P`` PEs, ``nt`` tiles of ``K >= P`` beats): one cycle loads the configuration
    (starved), and :attr:`hw.array.PEArray.LUT_LOAD_CYCLES` more write its ``lut`` if it
    differs from the previous job's (``lut_cycles``); then :func:`golden.pe_array.cycles`
    cycles from the first beat to the last result, ``nt * K`` of which accept a beat (busy)
    and the rest none, with nothing left to offer (starved). Tiles of ``K >= P`` beats
    finish no faster than the drain takes their results, so fewer than
    :attr:`hw.array.PEArray.result_depth` are ever outstanding and the array never blocks.

    With ``K < P`` the drain is the bottleneck and the array blocks whenever that many tiles
    are outstanding, offered a beat or not; there is no closed form here (None), the flow
    model checks those counters cycle by cycle.
    """
    out = dict.fromkeys(STALL_COUNTERS, 0)
    out["lut_cycles"] = lut_load_cycles(jobs)
    for j in jobs:
        if j.k < j.words.shape[1]:
            return None
        out["busy_cycles"] += j.beats
        out["starved_cycles"] += 1 + j.cycles - j.beats
    return out


def lut_load_cycles(jobs, loaded=(0,) * 8) -> int:
    """Cycles the array spends writing a new ``lut`` for *jobs* run in order (the table
    after reset, or of the job before them, is *loaded*)."""
    from hw.array import PEArray

    n = 0
    for j in jobs:
        lut = tuple(int(x) for x in j.lut)
        n += PEArray.LUT_LOAD_CYCLES * (lut != tuple(loaded))
        loaded = lut
    return n


def _check(run, jobs, *, timing: bool):
    bad = mismatches(run, jobs)
    assert not bad, "; ".join(bad)
    if timing:
        got = [s.cycles for s in run.stats]
        want = [j.cycles for j in jobs]
        assert got == want, f"cycles: rtl {got}, golden {want}"
        assert run.cycles == sum(j.cycles + 1 for j in jobs) + lut_load_cycles(jobs)
        want = no_stall_counters(jobs)
        if want is not None:
            assert {k: run.counters[k] for k in STALL_COUNTERS} == want
    # Every cycle is exactly one of busy, starved, blocked; and each counter equals what
    # the testbench's flow model counted from the handshakes it drove and saw.
    assert sum(run.counters[k] for k in STALL_COUNTERS) == run.cycles
    assert {k: run.counters[k] for k in STALL_COUNTERS} == run.model_counters
    assert run.counters["busy_cycles"] == sum(j.beats for j in jobs)
    assert run.counters["macs"] == sum(j.macs for j in jobs)


# --- construction ------------------------------------------------------------------------

@pytest.mark.parametrize("rows,cols", [(0, 1), (1, 0), (-2, 2), (2.0, 2), (True, 1)])
def test_array_rejects_bad_shape(rows, cols):
    from hw.array import PEArray

    with pytest.raises(ValueError, match="positive integer"):
        PEArray(rows, cols)


def test_array_interface_scales_with_the_number_of_pes():
    from hw.array import PEArray

    a = PEArray(2, 3)
    assert (a.rows, a.cols, a.pes, a.latency) == (2, 3, 6, 7)
    members = a.signature.members
    assert {"config", "weights", "acts", "results", "macs", *ARRAY_COUNTERS} <= set(members)
    assert members["weights"].signature.members["payload"].shape.size == 16 * 6 + 1
    Fragment.get(a, None)   # elaborates: 6 PEs, each with its own result register


def test_array_rejects_bad_pe_module_name():
    from hw.array import PEArray

    with pytest.raises(ValueError, match="Verilog module name"):
        PEArray(1, 1, pe_module="not a name")


def test_array_verilog_defines_the_pe_once_and_instantiates_it_per_pe():
    import re

    from hw.array import PEArray, array_pe
    from sim.netlist import convert

    text = convert(PEArray(1, 3, pe_module="arr_pe"), "arr", pe=array_pe())
    assert re.findall(r"^module (arr_pe)\b", text, re.M) == ["arr_pe"]
    assert len(re.findall(r"^\s*arr_pe pe\d+ \(", text, re.M)) == 3


# --- Amaranth simulator ------------------------------------------------------------------

@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 2)])
def test_array_runs_back_to_back_at_golden_cycle_count_in_amaranth_sim(rows, cols, seed):
    rng = np.random.default_rng(seed)
    p = rows * cols
    jobs = [random_job(rng, "draft", 16, 8, rows, cols),
            random_job(rng, "verify", 4 * p + 1, 6, rows, cols, tokens=3),
            random_job(rng, "draft", 32 * p + 4, 2, rows, cols)]     # K < P on 2x2: stalls
    run = simulate_array(rows, cols, jobs, stall=0.0, backpressure=0.0, seed=seed,
                         overlap=False)
    _check(run, jobs, timing=True)
    # The last job's 9 tiles (K = 2) are shorter than the 4-PE drain, more than
    # result_depth (6) of them are outstanding: the array blocks (the flow model, which the
    # driver checks every cycle, says when).
    if p > 2:
        assert run.counters["blocked_cycles"] > 0


# 2x3: the result drain's groups of 4 PEs end with a group of 2 (hw.array.PEArray._drain).
@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 2), (2, 3)])
def test_array_bit_exact_with_stalls_and_backpressure_in_amaranth_sim(rows, cols, seed):
    rng = np.random.default_rng(seed)
    jobs = [random_job(rng, "verify", 9, 5, rows, cols, tokens=t, edges=True) for t in (1, 4)]
    jobs.insert(1, random_job(rng, "draft", 20, 7, rows, cols, edges=True))
    jobs.append(random_job(rng, "draft", 3, 1, rows, cols))
    run = simulate_array(rows, cols, jobs, stall=0.3, backpressure=0.4, seed=seed + 1,
                         overlap=True)
    _check(run, jobs, timing=False)


# Tiles of one or two beats with no idle input: the result drain is the bottleneck, so
# results.ready decides when the array blocks. Backpressure holds the output register; the
# drain moves on into its output queue, deciding each move two cycles ahead
# (hw.array.PEArray._drain), and the flow model must follow it cycle by cycle (a model with
# a queue one beat longer fails here).
@pytest.mark.parametrize("rows,cols,mul_stages,add_stages",
                         [(1, 1, 0, 0), (1, 2, 0, 0), (2, 2, 0, 0), (2, 3, 0, 0), (2, 2, 1, 1)])
def test_drain_bound_array_under_backpressure_follows_the_flow_model(rows, cols, mul_stages,
                                                                     add_stages, seed):
    rng = np.random.default_rng(seed)
    depth = dict(mul_stages=mul_stages, add_stages=add_stages)
    p = rows * cols
    jobs = [random_job(rng, "draft", 64 * p, 1, rows, cols, **depth),
            random_job(rng, "verify", 30, 2, rows, cols, tokens=2, **depth)]
    run = simulate_array(rows, cols, jobs, stall=0.0, backpressure=0.5, seed=seed + 2,
                         overlap=True, **depth)
    _check(run, jobs, timing=False)
    assert run.counters["blocked_cycles"] > 0


# Pipelined PEs: the beats interleave add_stages + 1 tiles (golden.pe_array.weight_stream),
# results stay bit-exact and in tile order, and the no-stall cycle count follows the depth.
ARRAY_DEPTHS = [(1, 1), (0, 2), (4, 3)]


@pytest.mark.parametrize("mul_stages,add_stages", ARRAY_DEPTHS)
def test_pipelined_array_runs_at_golden_cycle_count_in_amaranth_sim(mul_stages, add_stages, seed):
    rng = np.random.default_rng(seed)
    depth = dict(mul_stages=mul_stages, add_stages=add_stages)
    jobs = [random_job(rng, "draft", 40, 8, 2, 2, **depth),
            random_job(rng, "verify", 4 * 4 + 1, 6, 2, 2, tokens=3, **depth),
            random_job(rng, "verify", 9, 4, 2, 2, tokens=2, **depth)]
    run = simulate_array(2, 2, jobs, stall=0.0, backpressure=0.0, seed=seed, overlap=False,
                         **depth)
    _check(run, jobs, timing=True)
    # K < P: the drain is the bottleneck and the array blocks; the golden count still holds.
    short = [random_job(rng, "verify", 72, 2, 2, 2, tokens=2, **depth),
             random_job(rng, "draft", 300, 3, 2, 2, **depth)]
    run = simulate_array(2, 2, short, stall=0.0, backpressure=0.0, seed=seed, overlap=False,
                         **depth)
    _check(run, short, timing=True)
    assert run.counters["blocked_cycles"] > 0


@pytest.mark.parametrize("mul_stages,add_stages", ARRAY_DEPTHS)
def test_pipelined_array_bit_exact_with_stalls_in_amaranth_sim(mul_stages, add_stages, seed):
    rng = np.random.default_rng(seed)
    depth = dict(mul_stages=mul_stages, add_stages=add_stages)
    jobs = [random_job(rng, "verify", 9, 5, 2, 2, tokens=t, edges=True, **depth) for t in (1, 4)]
    jobs.insert(1, random_job(rng, "draft", 20, 7, 2, 2, edges=True, **depth))
    jobs.append(random_job(rng, "draft", 3, 1, 2, 2, **depth))
    run = simulate_array(2, 2, jobs, stall=0.3, backpressure=0.4, seed=seed + 1, overlap=True,
                         **depth)
    _check(run, jobs, timing=False)


def test_array_4x4_bit_exact_on_16x32_in_amaranth_sim(seed):
    rng = np.random.default_rng(seed)
    jobs = [random_job(rng, "draft", 16, 32, 4, 4, edges=True),
            random_job(rng, "verify", 16, 32, 4, 4, tokens=4, edges=True),
            random_job(rng, "verify", 20, 3, 4, 4, tokens=1)]
    run = simulate_array(4, 4, jobs, stall=0.2, backpressure=0.3, seed=seed, overlap=True)
    _check(run, jobs, timing=False)


# --- cocotb on the generated Verilog -----------------------------------------------------
# Each configuration is built once (one build folder) and runs every listed shape twice:
# with no injected stall, one job at a time, comparing each job's cycle count with the
# golden prediction; and with random idle inputs and backpressure on every stream, jobs
# overlapping (the next configuration loads while the previous job drains).

def _cocotb(simulator, rows, cols, jobs, tag, flat=False, **depth):
    reason = simulator_missing(simulator)
    if reason:
        pytest.skip(reason)
    build = BUILD / f"array_{tag}" / simulator
    exact = run_array_cocotb(simulator, rows, cols, jobs, build, seed=base_seed(),
                             stall=0.0, backpressure=0.0, overlap=False, flat=flat, **depth)
    _check(exact, jobs, timing=True)
    stressed = run_array_cocotb(simulator, rows, cols, jobs, build, seed=base_seed(),
                                stall=0.25, backpressure=0.25, overlap=True, flat=flat, **depth)
    _check(stressed, jobs, timing=False)
    assert stressed.counters["starved_cycles"] > exact.counters["starved_cycles"]


@pytest.mark.slow
def test_pipelined_array_verilog_matches_golden_on_verilator():
    # The deepest PE pipeline, 2x2, hierarchical Verilog.
    depth = dict(mul_stages=4, add_stages=3)
    jobs = standard_jobs(2, 2, derived_seed("array_verilator_deep"), **depth)
    _cocotb("verilator", 2, 2, jobs, "2x2_deep", **depth)


@pytest.mark.slow
@pytest.mark.parametrize("rows,cols", [(1, 1), (4, 4)])
def test_array_verilog_matches_golden_on_verilator(rows, cols):
    # One PE module instantiated rows * cols times (sim.netlist.convert). The 2x2 array runs
    # on Verilator at the default depth (above), on Icarus (below) and in the accelerator.
    jobs = standard_jobs(rows, cols, derived_seed(f"array_verilator_{rows}x{cols}"))
    _cocotb("verilator", rows, cols, jobs, f"{rows}x{cols}")


def test_array_verilog_matches_golden_on_icarus():
    # The flat conversion of PEArray (every PE elaborated in place).
    rows, cols = 2, 2
    rng = np.random.default_rng(derived_seed("array_icarus"))
    jobs = [random_job(rng, "draft", 16, 32, rows, cols, edges=True),
            random_job(rng, "verify", 16, 32, rows, cols, tokens=4, edges=True),
            random_job(rng, "draft", 4 * 4 + 4, 100, rows, cols),
            random_job(rng, "verify", 4 * 4 + 4, 20, rows, cols, tokens=2)]
    _cocotb("icarus", rows, cols, jobs, f"{rows}x{cols}", flat=True)



def test_array_writes_a_new_lut_in_lut_load_cycles_and_a_loaded_one_in_none():
    """A configuration beat with a new lut: config.ready and the beat handshake stay low for
    exactly LUT_LOAD_CYCLES cycles, counted in lut_cycles; one with the loaded lut (a mode
    change) is taken without a cycle lost; one offered during a load waits for it."""
    from amaranth.sim import Simulator

    from hw.array import PEArray
    from hw.pe import PeMode

    dut = PEArray(1, 1)
    seen = {}

    async def bench(ctx):
        def config(mode, lut):
            ctx.set(dut.config.payload.mode, mode)
            for d in range(8):
                ctx.set(dut.config.payload.lut[d], lut[d])
        ctx.set(dut.results.ready, 1)
        ctx.set(dut.weights.valid, 1)
        ctx.set(dut.acts.valid, 1)
        ctx.set(dut.weights.payload.last, 1)
        config(PeMode.DRAFT, [0x3C00 + d for d in range(8)])
        ctx.set(dut.config.valid, 1)
        assert ctx.get(dut.config.ready)                    # nothing loading yet
        await ctx.tick()
        config(PeMode.DRAFT, [0x4000 + d for d in range(8)])  # a second new table waits
        blocked = 0
        while not ctx.get(dut.config.ready):
            assert not ctx.get(dut.weights.ready)
            blocked += 1
            await ctx.tick()
        seen["first"] = blocked
        await ctx.tick()                                    # second table accepted
        ctx.set(dut.config.valid, 0)
        blocked = 0
        while not ctx.get(dut.weights.ready):
            blocked += 1
            await ctx.tick()
        seen["second"] = blocked
        config(PeMode.VERIFY, [0x4000 + d for d in range(8)])  # the loaded table: no load
        ctx.set(dut.config.valid, 1)
        assert ctx.get(dut.config.ready)
        await ctx.tick()
        ctx.set(dut.config.valid, 0)
        seen["third"] = int(not ctx.get(dut.weights.ready) or not ctx.get(dut.config.ready))
        seen["lut_cycles"] = ctx.get(dut.lut_cycles)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == {"first": PEArray.LUT_LOAD_CYCLES, "second": PEArray.LUT_LOAD_CYCLES,
                    "third": 0, "lut_cycles": 2 * PEArray.LUT_LOAD_CYCLES}, seen
