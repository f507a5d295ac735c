"""The accelerator top: parameters, register map, and cocotb runs of random command programs
against golden.accel on Verilator (2x2 and 4x4) and Icarus (2x2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from golden.accel import CAUSES as GOLDEN_CAUSES, OPCODES as GOLDEN_OPCODES
from hw.accel import CAUSES, OPCODES, Accelerator, register_doc, register_map
from sim.accel_flow import run_accel_cocotb
from sim.accel_program import AccelParams
from sim.runner import simulator_missing

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "tests"

SMALL = AccelParams()                                      # 2x2, 64-bit, 4 slots
LARGE = AccelParams(rows=4, cols=4, slots=8, expert_bytes=4096, n_experts=8, k_max=128,
                    n_max=128)


def test_hardware_and_golden_share_opcodes_and_causes():
    assert OPCODES == GOLDEN_OPCODES
    assert CAUSES == GOLDEN_CAUSES


def test_register_doc_is_current():
    assert (ROOT / "docs" / "registers.md").read_text() == register_doc()


def test_register_map_has_every_counter_once():
    names = [r.name for r in register_map().registers]
    assert len(names) == len(set(names))
    for name in ("BYTES_DENSE", "BYTES_FILL", "BYTES_ACTS", "BYTES_WRITTEN", "MACS_LO",
                 "MEM_STALL_CYCLES", "WB_STALL_CYCLES", "CACHE_HITS", "CACHE_MISSES"):
        assert name in names


@pytest.mark.parametrize("kwargs,match", [
    (dict(rows=1, cols=2), "power of two"),
    (dict(rows=3, cols=4), "power of two"),
    (dict(rows=2, cols=2, bus_bits=128), "16 \\* rows \\* cols"),
    (dict(rows=8, cols=4), "64, 128 or 256"),
    (dict(rows=2, cols=2, expert_bytes=100), "multiple of the bus width"),
    (dict(rows=2, cols=2, k_max=30), "multiple of 4"),
    (dict(rows=2, cols=2, policy="mru"), "policy"),
    (dict(rows=2, cols=2, slots=0), "slots"),
    (dict(rows=2, cols=2, add_stages=2), "add_stages must be 0, 1 or 3"),
    (dict(rows=2, cols=2, mul_stages=5), "mul_stages"),
])
def test_invalid_parameters_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Accelerator(**kwargs)


def test_wrong_parameter_types_are_type_errors():
    with pytest.raises(TypeError, match="rows"):
        Accelerator(2.0, 2)


def _run(simulator, params, name, seed, **kw):
    reason = simulator_missing(simulator)
    if reason:
        pytest.skip(reason)
    result, stats = run_accel_cocotb(simulator, params, BUILD / name, seed=seed, **kw)
    return result, stats


@pytest.mark.slow
def test_accel_2x2_verilator_random_programs_match_golden(seed):
    result, stats = _run("verilator", SMALL, "accel_2x2_verilator", seed, commands=150,
                         pauses=0.2, latency=12)
    assert result.failed == 0 and result.tests == 4
    causes = stats["random_program"]["causes"]
    assert causes["ok"] > 50 and len(causes) > 4, causes


@pytest.mark.slow
def test_accel_4x4_verilator_random_programs_match_golden(seed):
    result, stats = _run("verilator", LARGE, "accel_4x4_verilator", seed, commands=100,
                         pauses=0.2, latency=24, extra={"ACCEL_BENCH": "64,64"})
    assert result.failed == 0
    assert stats["bench"]["draft_bytes_ratio"] == 0.25


@pytest.mark.slow
def test_accel_2x2_icarus_random_programs_match_golden(seed):
    result, _ = _run("icarus", SMALL, "accel_2x2_icarus", seed, commands=40, pauses=0.2,
                     latency=4, testcase="random_program_matches_golden_model")
    assert result.failed == 0


@pytest.mark.parametrize("mul_stages,add_stages", [(4, 3), (0, 0), (1, 1)])
def test_top_in_the_amaranth_simulator_matches_golden(seed, mul_stages, add_stages):
    """A short program in the Amaranth simulator: tables (all 8 lut entries reach the array),
    dense and slot MATMULs in both modes, an FP16 store, a bad release, an unknown opcode;
    at the default pipeline depth (4 tiles interleaved), unpipelined, and interleave 2."""
    import dataclasses

    import numpy as np

    from golden.accel import Demand, Matmul, Raw, Release
    from sim.accel_flow import accelerator
    from sim.accel_program import EXPERT_BASE, Builder
    from sim.amaranth_accel import simulate_accel

    rng = np.random.default_rng(seed)
    params = dataclasses.replace(SMALL, mul_stages=mul_stages, add_stages=add_stages)
    b = Builder(params, rng)
    good = b.dense[3]
    for mode, fp16 in (("verify", False), ("draft", True)):
        b.matmul(good, mode=mode, fp16=fp16)
    tag = (0, 1)
    o = b.run(Demand(*tag))
    b.matmul(b.experts[tag], slot=o.resp[0], mode="draft")
    b.run(Release(o.resp[0]))
    b.run(Release(o.resp[0]))
    b.run(Raw((12,) + (0,) * 7))
    prog = b.finish()
    mem = bytearray(prog.mem)
    model = prog.model()

    def check(i, cmd, regs):
        outcome = model.run(cmd)
        where = f"command {i} {cmd}"
        if outcome.cause:
            assert regs["ERR_LAST"] & 15 == GOLDEN_CAUSES[outcome.cause], where
            assert regs["ERR_LAST_INDEX"] == outcome.index, where
        assert regs["ERR_COUNT"] == model.counters["errors"], where
        for name in ("bytes_dense", "bytes_slot", "bytes_fill", "bytes_acts", "bytes_written"):
            assert regs[name.upper()] == model.counters[name], (where, name)
        assert regs["MACS_LO"] == model.counters["macs"], where
        assert mem == model.mem, f"{where}: host memory differs from golden"

    simulate_accel(accelerator(params), mem, prog.commands, check=check, seed=seed,
                   expert_base=EXPERT_BASE, bad_reads=prog.bad_read_ranges,
                   bad_writes=prog.bad_write_ranges, idle=0.2)
    assert model.counters["cmds_done"] == len(prog.commands)
    assert {model.last_error[1], model.first_error[1]} == {"OPCODE", "RELEASE"}
