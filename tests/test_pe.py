"""The PEs against the golden model: construction, Amaranth simulator, cocotb on Verilator and Icarus."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Value

from golden.fp import NAN32
from hw import never_built
from golden.pe import decode_draft, decode_verify, pe_dot
from golden.seed import base_seed
from sim.amaranth_pe import simulate_pe
from sim.pe_stimulus import (EDGE_LUT, FULL_BASE, beats_of, edge_batches, encode_full_table,
                             interleaved, pe_batches, random_tables, random_verify_words)
from sim.pe_flow import run_pe_cocotb
from sim.netlist import convert
from sim.runner import simulator_missing

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "tests"

# At least 10,000 random dot products per mode on each simulator (the floor);
# SPEQMOE_PE_SEQUENCES raises it for longer soak runs.
COCOTB_SEQUENCES = max(10_000, int(os.environ.get("SPEQMOE_PE_SEQUENCES", "10000")))


def _latency(**depth) -> int:
    """The latency a ReconfigurablePE of this depth states (the PE is only asked, not built)."""
    from hw.pe import ReconfigurablePE

    pe = ReconfigurablePE(**depth)
    never_built(pe)
    return pe.latency


def _assert_results(results, batches):
    expected = [e for b in batches for e in b.expected]
    assert len(results) == len(expected), f"{len(results)} results, expected {len(expected)}"
    for i, (got, exp) in enumerate(zip(results, expected)):
        assert np.array_equal(np.asarray(got, np.uint32), np.asarray(exp, np.uint32)), (
            f"result {i}: got {[f'{v:08x}' for v in got]}, golden {[f'{v:08x}' for v in exp]}")


# --- golden model of the PE --------------------------------------------------------------

def test_verify_decode_rebuilds_fp16_for_every_pattern():
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    assert np.array_equal(decode_verify(encode_full_table(every), FULL_BASE), every)


def test_draft_decode_takes_lane_j_from_nibble_j():
    word = 0xF8A1  # lanes: 0x1, 0xA, 0x8, 0xF
    lanes = decode_draft(np.array([word], dtype=np.uint16), EDGE_LUT)[0]
    assert list(lanes) == [EDGE_LUT[1], 0x8000 | EDGE_LUT[2], 0x8000 | EDGE_LUT[0],
                           0x8000 | EDGE_LUT[7]]


def test_golden_pe_matches_float32_accumulation(rng):
    base, size, lut = random_tables(rng)
    k = 37
    words = random_verify_words(rng, size, k)
    acts = (rng.normal(size=(k, 4)).astype(np.float16)).view(np.uint16)
    got = pe_dot("verify", words, acts, base, lut).view(np.float32)
    w = decode_verify(words, base).view(np.float16).astype(np.float32)
    ref = np.zeros(4, dtype=np.float32)
    for i in range(k):
        ref = (ref + w[i] * acts[i].view(np.float16).astype(np.float32)).astype(np.float32)
    # numpy's NaN payloads are not canonical; the PE's NaN is exactly NAN32.
    want = np.where(np.isnan(ref), np.uint32(NAN32), ref.view(np.uint32))
    assert np.array_equal(got.view(np.uint32), want)


@pytest.mark.parametrize("bad", [dict(words=[]), dict(acts_shape=(3, 3)),
                                 dict(base=[0] * 7), dict(lut=[0x8000] * 8), dict(mode="int4")])
def test_golden_pe_rejects_malformed_input(bad):
    words = np.array(bad.get("words", [1, 2, 3]), dtype=np.uint16)
    acts = np.zeros(bad.get("acts_shape", (words.size, 4)), dtype=np.uint16)
    with pytest.raises(ValueError):
        pe_dot(bad.get("mode", "verify"), words, acts, bad.get("base", FULL_BASE),
               bad.get("lut", EDGE_LUT))


# --- construction ------------------------------------------------------------------------

def test_pes_construct_with_defaults_and_state_latency():
    from hw.pe import Fp16PE, ReconfigurablePE

    for cls in (ReconfigurablePE, Fp16PE):
        pe = cls()
        never_built(pe)             # only its parameters and signature are read
        assert (pe.latency, pe.interleave) == (3, 1)
        assert set(pe.signature.members) >= {"weights", "acts", "results"}
        if cls is ReconfigurablePE:
            assert {"mode", "base", "lut_write"} <= set(pe.signature.members)


# --- Amaranth simulator ------------------------------------------------------------------

@pytest.mark.parametrize("kind,modes", [("reconfigurable", ["verify", "draft"]), ("fp16", ["fp16"])])
def test_pe_edge_cases_in_amaranth_sim(kind, modes, seed):
    batches = [b for m in modes for b in edge_batches(m)]
    results, _, _ = simulate_pe(kind, batches, stall=0.3, backpressure=0.3, seed=seed)
    _assert_results(results, batches)


@pytest.mark.parametrize("kind", ["reconfigurable", "fp16"])
def test_pe_random_sequences_with_stalls_in_amaranth_sim(kind, seed):
    batches = pe_batches(kind, ["verify", "draft"], 100, seed)
    results, _, _ = simulate_pe(kind, batches, stall=0.3, backpressure=0.4, seed=seed + 1)
    _assert_results(results, batches)


def test_pe_runs_one_beat_per_cycle_without_stalls(seed):
    # 100 dot products of K=8 back to back: 800 beats, one per cycle, and the last
    # result is taken `latency` cycles after the last beat.
    from hw.pe import ReconfigurablePE
    from sim.pe_stimulus import Batch

    rng = np.random.default_rng(seed)
    b = Batch("verify", FULL_BASE.copy(), EDGE_LUT.copy())
    for _ in range(100):
        b.add(encode_full_table(rng.integers(0, 1 << 16, 8)), rng.integers(0, 1 << 16, (8, 4)))
    results, cycles, _ = simulate_pe("reconfigurable", [b], stall=0.0, backpressure=0.0, seed=seed)
    _assert_results(results, [b])
    assert cycles == 800 + _latency()


# --- pipeline depth ----------------------------------------------------------------------
# The adder's stages make the accumulation loop longer; the PE then interleaves
# add_stages + 1 dot products, and every one of them must still equal sequential binary32
# accumulation in increasing k (golden.pe.pe_dot). The depths give 1, 2, 3 and 7 extra
# stages; the other multiplier depths are in the ECP5 test below (2) and in test_fp (every
# depth of the multiplier alone), adder depth 2 in the array's tests (tests/test_array.py).

DEPTHS = [(1, 0), (1, 1), (0, 3), (4, 3)]


@pytest.mark.parametrize("mul_stages,add_stages", DEPTHS)
def test_pipelined_pe_is_bit_exact_with_stalls_in_amaranth_sim(mul_stages, add_stages, seed):
    from hw.pe import ReconfigurablePE

    pe = ReconfigurablePE(mul_stages=mul_stages, add_stages=add_stages)
    never_built(pe)             # simulate_pe builds its own
    assert (pe.latency, pe.interleave) == (3 + mul_stages + add_stages, add_stages + 1)
    batches = interleaved(edge_batches("verify") + edge_batches("draft")
                          + pe_batches("reconfigurable", ["verify", "draft"], 80, seed), pe.interleave)
    results, _, _ = simulate_pe("reconfigurable", batches, stall=0.3, backpressure=0.4,
                                seed=seed + 1, mul_stages=mul_stages, add_stages=add_stages)
    _assert_results(results, batches)


@pytest.mark.parametrize("add_stages", [1, 3])
def test_pipelined_fp16_pe_is_bit_exact_in_amaranth_sim(add_stages, seed):
    batches = interleaved(pe_batches("fp16", ["fp16"], 100, seed), add_stages + 1)
    results, _, _ = simulate_pe("fp16", batches, stall=0.3, backpressure=0.3, seed=seed,
                                mul_stages=1, add_stages=add_stages)
    _assert_results(results, batches)


@pytest.mark.parametrize("mul_stages,add_stages", [(0, 1), (2, 3)])
def test_pipelined_pe_keeps_one_beat_per_cycle(mul_stages, add_stages, seed):
    from hw.pe import ReconfigurablePE
    from sim.pe_stimulus import Batch

    rng = np.random.default_rng(seed)
    g = add_stages + 1
    b = Batch("verify", FULL_BASE.copy(), EDGE_LUT.copy())
    for _ in range(40 * g):
        b.add(encode_full_table(rng.integers(0, 1 << 16, 8)), rng.integers(0, 1 << 16, (8, 4)))
    results, cycles, _ = simulate_pe("reconfigurable", [b], stall=0.0, backpressure=0.0,
                                     seed=seed, mul_stages=mul_stages, add_stages=add_stages)
    _assert_results(results, [b])
    assert cycles == 320 * g + _latency(mul_stages=mul_stages, add_stages=add_stages)


@pytest.mark.parametrize("mul_stages,add_stages", [(0, 0), (0, 1), (4, 3)])
def test_one_beat_dot_products_run_one_per_cycle(mul_stages, add_stages, seed):
    # Every beat closes a dot product and every result is taken at once: the PE must keep
    # accepting a beat per cycle, which takes a result queue of latency + 1 (one less and
    # the count of outstanding dot products reaches the depth and blocks the input).
    from hw.pe import ReconfigurablePE
    from sim.pe_stimulus import Batch

    rng = np.random.default_rng(seed)
    n = 60 * (add_stages + 1)
    b = Batch("verify", FULL_BASE.copy(), EDGE_LUT.copy())
    for _ in range(n):
        b.add(encode_full_table(rng.integers(0, 1 << 16, 1)), rng.integers(0, 1 << 16, (1, 4)))
    results, cycles, _ = simulate_pe("reconfigurable", [b], stall=0.0, backpressure=0.0,
                                     seed=seed, mul_stages=mul_stages, add_stages=add_stages)
    _assert_results(results, [b])
    pe = ReconfigurablePE(mul_stages=mul_stages, add_stages=add_stages)
    never_built(pe)
    assert pe.result_depth == pe.latency + 1
    assert cycles == n + pe.latency


def test_interleaved_stimulus_groups_equal_lengths_k_major():
    from sim.pe_stimulus import Batch

    b = pe_batches("fp16", ["fp16"], 30, 7)[0]
    (g,) = interleaved([b], 3)
    assert len(g.words) % 3 == 0 and len(g.words) >= len(b.words)
    beats = beats_of([g], 3)
    first = g.words[0].size
    assert [x.word for x in beats[:3]] == [int(g.words[j][0]) for j in range(3)]
    assert [x.last for x in beats[3 * first - 3:3 * first]] == [True] * 3
    odd = Batch(b.mode, b.base, b.lut, b.words[:5], b.acts[:5], b.expected[:5])
    with pytest.raises(ValueError, match="multiple of the interleave"):
        beats_of([odd], 2)


@pytest.mark.parametrize("bad", [dict(mul_stages=5), dict(add_stages=4), dict(add_stages=-1),
                                 dict(mul_stages=True)])
def test_pe_depths_out_of_range_are_rejected(bad):
    from hw.pe import Fp16PE, ReconfigurablePE

    for cls in (ReconfigurablePE, Fp16PE):
        with pytest.raises(ValueError, match="stages must be an integer"):
            cls(**bad)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "4"])
def test_result_depth_must_be_a_positive_integer(bad):
    from hw.pe import ReconfigurablePE

    with pytest.raises(ValueError, match="result_depth must be a positive integer"):
        ReconfigurablePE(result_depth=bad)


def test_array_pe_holds_as_many_tiles_as_the_array_lets_be_outstanding():
    """The array counts a tile from its own handshake, a cycle before the PEs see it
    (hw.array.INPUT_STAGES): its PEs' queues hold one more than a lone PE's."""
    from hw.array import INPUT_STAGES, PEArray, array_pe
    from hw.pe import ReconfigurablePE, result_depth

    for ms, ad in ((0, 0), (4, 3), (2, 1)):
        pe = array_pe(ms, ad)
        array = PEArray(2, 2, mul_stages=ms, add_stages=ad)
        lone = ReconfigurablePE(mul_stages=ms, add_stages=ad)
        for c in (pe, array, lone):
            never_built(c)
        assert lone.result_depth == result_depth(ms, ad) == lone.latency + 1
        assert pe.result_depth == array.result_depth == lone.result_depth + INPUT_STAGES
        assert array.latency == lone.latency + INPUT_STAGES + PEArray.DRAIN_STAGES


def test_normalised_inputs_must_be_a_bool_and_change_only_the_ports():
    from hw.pe import ReconfigurablePE

    with pytest.raises(ValueError, match="normalised_inputs must be True or False"):
        ReconfigurablePE(normalised_inputs="yes")
    plain, array = ReconfigurablePE(), ReconfigurablePE(normalised_inputs=True)
    never_built(plain)
    never_built(array)
    assert not plain.normalised_inputs and array.normalised_inputs
    assert plain.latency == array.latency and plain.result_depth == array.result_depth
    assert len(Value.cast(array.acts)) == 4 * 17 and len(array.lut_write.data) == 16
    assert len(plain.acts.payload.as_value()) == 4 * 16 and len(plain.lut_write.data) == 15


# --- the result queue ----------------------------------------------------------------------

@pytest.mark.parametrize("depth", [1, 2, 4, 5])
def test_result_queue_behaves_as_a_sync_fifo_cycle_by_cycle(depth, seed):
    """hw.pe._ResultQueue registers its memory's write; outside it must be SyncFIFO: the same
    r_rdy, level and head every cycle, under random writes (also into a full queue, which
    both ignore) and reads. Depths 2 and 4 are the PE's (add_stages 1 and 3)."""
    from amaranth import Module
    from amaranth.lib.fifo import SyncFIFO
    from amaranth.sim import Simulator

    from hw.pe import _ResultQueue

    m = Module()
    m.submodules.dut = dut = _ResultQueue(32, depth)
    m.submodules.ref = ref = SyncFIFO(width=32, depth=depth)
    rng = np.random.default_rng(seed)
    checked = {"heads": 0, "full": 0}

    async def testbench(ctx):
        for cycle in range(3000):
            w_en, r_en = int(rng.random() < 0.55), int(rng.random() < 0.5)
            data = int(rng.integers(0, 1 << 32))
            for q in (dut, ref):
                ctx.set(q.w_en, w_en)
                ctx.set(q.w_data, data)
                ctx.set(q.r_en, r_en)
            got = [ctx.get(x) for x in (dut.r_rdy, dut.level)]
            want = [ctx.get(x) for x in (ref.r_rdy, ref.level)]
            assert got == want, f"cycle {cycle}: r_rdy, level {got}, SyncFIFO {want}"
            if want[0]:
                assert ctx.get(dut.r_data) == ctx.get(ref.r_data), f"cycle {cycle}: head differs"
                checked["heads"] += 1
            checked["full"] += want[1] == depth and w_en
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert checked["heads"] > 500 and checked["full"] > 0, checked


# --- cocotb on the generated Verilog -----------------------------------------------------
# Verilator runs the mixed length profile (K up to 64); Icarus, ten times slower, runs
# the short profile (K up to 16) so that its ten thousand dot products per mode fit the
# time budget of `make test`.

def _cocotb_pe(simulator: str, kind: str, modes: str, sequences: int, tag: str, **depths):
    reason = simulator_missing(simulator)
    if reason:
        pytest.skip(reason)
    icarus = simulator == "icarus"
    report = run_pe_cocotb(simulator, kind, modes, sequences, BUILD / f"pe_{tag}" / simulator,
                           seed=base_seed(), stall=0.15 if icarus else 0.25,
                           backpressure=0.15 if icarus else 0.25,
                           lengths="short" if icarus else "mixed", **depths)
    assert report.passed, (f"{simulator} {kind} PE ({modes}) differs from the golden model: "
                           f"see {BUILD / f'pe_{tag}' / simulator / 'sim.log'}")
    return report


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_reconfigurable_pe_verilog_matches_golden_in_both_modes_switching_mid_stream(simulator):
    # Both modes in one run, batch by batch, so that mode and tables switch while earlier
    # dot products are still in the pipeline; the floor holds for each mode.
    report = _cocotb_pe(simulator, "reconfigurable", "verify,draft", COCOTB_SEQUENCES, "reconf")
    assert min(report.per_mode.get(m, 0) for m in ("verify", "draft")) >= COCOTB_SEQUENCES, \
        report.per_mode


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_pipelined_pe_verilog_matches_golden(simulator):
    # The deepest pipeline on both simulators, modes switching mid-stream.
    report = _cocotb_pe(simulator, "reconfigurable", "verify,draft", 1000, "reconf_deep",
                        mul_stages=4, add_stages=3)
    assert report.sequences >= 2000


@pytest.mark.parametrize("mul_stages", [4, 2])
def test_pe_elaborated_for_ecp5_uses_the_dsp_registers_and_matches_golden(mul_stages):
    # What the FPGA flow builds: each lane's significand registers inside its MULT18X18D,
    # simulated with the block's model (sim/models/MULT18X18D.v). Icarus, which builds in a
    # second, at both depths that use the block's registers (the model is plain Verilog,
    # and Verilator runs the same PE without them in the tests above).
    from hw.pe import LANES, ReconfigurablePE
    from speqmoe.fpga import board

    tag = f"reconf_ecp5_m{mul_stages}"
    report = _cocotb_pe("icarus", "reconfigurable", "verify,draft", 500, tag,
                        mul_stages=mul_stages, add_stages=3, platform=board("ulx3s_85f"))
    assert report.sequences >= 1000
    verilog = (BUILD / f"pe_{tag}" / "icarus" / "reconfigurable_pe.v").read_text()
    assert len(re.findall(r"^\s*MULT18X18D\s*#\(", verilog, re.M)) == LANES
    generic = convert(ReconfigurablePE(mul_stages=mul_stages, add_stages=3), "reconfigurable_pe")
    assert "MULT18X18D" not in generic


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_fp16_pe_verilog_matches_golden(simulator):
    report = _cocotb_pe(simulator, "fp16", "fp16", COCOTB_SEQUENCES, "fp16")
    assert report.sequences >= COCOTB_SEQUENCES
