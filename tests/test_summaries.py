"""Summaries and figures that read on their own: the synthesis and FPGA summary JSON, the
block diagram drawn from the accelerator top, the per-step windows of the cache trace."""

from __future__ import annotations

import json

import pytest

from hw import never_built


def _synth(name, transistors, cells, seconds=12.3456, parameters=None):
    from speqmoe.synth import SynthResult

    return SynthResult(design=name, cells=cells, transistors=transistors, logic_depth=40,
                       flip_flops=10, seconds=seconds, cell_types={"$_AND_": cells},
                       parameters=parameters or {})


TOOLS = {"yosys": "Yosys 0.70", "amaranth": "0.5.10", "python": "3.11.7"}


def test_synth_summary_has_units_definitions_ratios_and_rounding(tmp_path):
    from speqmoe.synth import write_summary

    path = tmp_path / "summary.json"
    designs = write_summary(path, {"reconfigurable_pe": _synth("reconfigurable_pe", 110018, 9000,
                                                               parameters={"mul_stages": 3})},
                            tools=TOOLS)
    assert set(designs) == {"reconfigurable_pe"}
    write_summary(path, {"fp16_pe": _synth("fp16_pe", 100910, 8000)}, tools=TOOLS)
    s = json.loads(path.read_text())
    assert set(s["designs"]) == {"reconfigurable_pe", "fp16_pe"}       # merged, not replaced
    r = s["designs"]["reconfigurable_pe"]
    assert r["seconds"] == 12.3 and r["parameters"] == {"mul_stages": 3}
    assert s["ratios"]["transistors_reconfigurable_pe_over_fp16_pe"] == 1.090
    assert s["ratios"]["cells_reconfigurable_pe_over_fp16_pe"] == 1.125
    numeric = {k for k, v in r.items() if isinstance(v, (int, float))}
    assert numeric <= set(s["units"]), numeric - set(s["units"])
    assert "ltp" in s["definitions"]["logic_depth"]
    assert "stat -tech cmos" in s["definitions"]["transistors"]
    assert s["tools"] == TOOLS


def test_synth_summary_reads_the_earlier_flat_format(tmp_path):
    from speqmoe.synth import load_designs, write_summary

    path = tmp_path / "summary.json"
    old = _synth("fp16_pe", 100, 10).to_json()
    path.write_text(json.dumps({"fp16_pe": old}))
    assert load_designs(path)["fp16_pe"]["transistors"] == 100
    write_summary(path, {"reconfigurable_pe": _synth("reconfigurable_pe", 115, 11)}, tools=TOOLS)
    assert set(json.loads(path.read_text())["designs"]) == {"fp16_pe", "reconfigurable_pe"}


def test_parameters_and_tool_versions_come_from_the_design_and_the_tools():
    import platform
    from importlib.metadata import version

    from hw.pe import ReconfigurablePE
    from speqmoe.synth import component_parameters, tool_versions

    pe = ReconfigurablePE(mul_stages=1, add_stages=2)
    never_built(pe)
    params = component_parameters(pe)
    assert params["mul_stages"] == 1 and params["add_stages"] == 2
    assert params["latency"] == pe.latency
    tools = tool_versions()
    assert tools["python"] == platform.python_version()
    assert tools["amaranth"] == version("amaranth")
    assert tools["yosys"].startswith("Yosys 0.")


def test_fpga_summary_rounds_and_defines_its_figures(tmp_path):
    from speqmoe.fpga import FpgaResult, write_summary

    def result(name, lut4, fmax):
        return FpgaResult(design=name, board="ulx3s_85f", device="LFE5U-85F", package="BG381",
                          speed="6", fits=True, lut4=lut4, ff=100, dsp=4, ebr=0, fmax_mhz=fmax,
                          device_lut4=83640, harness_ff=16, seed=1, seconds=50.91,
                          target_mhz=150.0)

    path = tmp_path / "summary.json"
    write_summary(path, {"reconfigurable_pe": result("reconfigurable_pe", 5898, 115.23)},
                  tools=TOOLS, parameters={"reconfigurable_pe": {"mul_stages": 3}})
    s = write_summary(path, {"fp16_pe": result("fp16_pe", 5422, 114.56)}, tools=TOOLS)
    pe = s["designs"]["reconfigurable_pe"]
    assert (pe["fmax_mhz"], pe["seconds"], pe["lut4_share"]) == (115.2, 50.9, 0.071)
    assert pe["parameters"] == {"mul_stages": 3} and s["designs"]["fp16_pe"]["parameters"] == {}
    assert s["ratios"]["lut4_reconfigurable_pe_over_fp16_pe"] == 1.088
    assert {"lut4", "fmax_mhz", "seconds"} <= set(s["units"]) and "fmax_mhz" in s["definitions"]


def test_block_diagram_of_the_top_is_read_from_the_design(tmp_path):
    from speqmoe import designs
    from speqmoe.blockdiagram import TOP_LOGIC, draw, extract
    from speqmoe.config import Config

    d = extract(designs.build("accel_2x2", Config()), "accel_2x2")
    assert {"csr", "cache", "streamer", "actbuf", "array", "writer", "arbiter", "queue",
            TOP_LOGIC} <= set(d.blocks)
    assert d.blocks["array"].kind == "PEArray"
    assert ("weights", "in", 67, "stream, 65-bit payload") in d.blocks["array"].ports
    links = {(l.src, l.src_port, l.dst, l.dst_port): l for l in d.links}
    # The three wiring.connect streams of Accelerator.elaborate, forward bits and ready back.
    for key in (("streamer", "beats", "array", "weights"), ("actbuf", "acts", "array", "acts"),
                ("array", "results", "writer", "results")):
        assert key in links and links[key].back_bits == 1, key
    assert links[("array", "results", "writer", "results")].bits == 130
    # The read masters go through the arbiter to the top's AXI4 master.
    assert ("actbuf", "m_axi", "arbiter", "s2") in links
    assert any(l.src == "arbiter" and l.dst == "m_axi (outputs)" for l in d.links)
    draw(d, tmp_path / "blocks.png", "accel_2x2")
    assert (tmp_path / "blocks.png").stat().st_size > 10_000


def test_cache_trace_windows_are_differences_of_the_cumulative_timeline():
    from speqmoe.demos.cache import windows

    timeline = [{"step": 0, "cycles": 100, "hits": 2, "misses": 2, "beats": 40,
                 "bus_busy_cycles": 50},
                {"step": 1, "cycles": 130, "hits": 5, "misses": 2, "beats": 40,
                 "bus_busy_cycles": 50},
                {"step": 2, "cycles": 150, "hits": 5, "misses": 2, "beats": 40,
                 "bus_busy_cycles": 50}]
    w = windows(timeline)
    assert [x["hit_rate"] for x in w] == [0.5, 1.0, None]
    assert [x["bus_efficiency"] for x in w] == [0.8, None, None]
    assert [x["cycles"] for x in w] == [100, 30, 20]
