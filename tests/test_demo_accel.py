"""The ``accel`` demo section without a simulator: diagram, golden predictions, fallback path."""

from __future__ import annotations

import json
import math

from speqmoe.benches.accel import PARAMS
from speqmoe.demos import accel as demo


def test_golden_predictions_follow_the_layout():
    for n, k in ((128, 256), (100, 64), (1, 4)):
        g = demo.golden_predictions(PARAMS, n, k)
        p = PARAMS.pes
        t = math.ceil(n / p)
        assert g["draft"]["bytes"] == t * k // 4 * 2 * p
        assert g["verify"]["bytes"] == 4 * g["draft"]["bytes"]
        assert g["draft_bytes_ratio"] == 0.25
        for mode in demo.MODES:
            assert 0 < g[mode]["utilization_bound"] <= 1


def test_block_diagram_names_the_parameters():
    text = demo.block_diagram(PARAMS, 24)
    assert text.startswith("```\n") and text.endswith("\n```")
    assert f"PEArray {PARAMS.rows}x{PARAMS.cols}" in text
    assert "256-bit" in text and f"{PARAMS.slots} x 16 KiB" in text
    lines = text.splitlines()
    # The two feeder branches join the verify stream in one column.
    cols = {line.index(c) for line in lines for c in "┐┤┴" if c in line}
    assert len(cols) == 1


def test_section_without_verilator(tmp_path, monkeypatch):
    import sim.runner
    from speqmoe.demo import DemoContext
    from speqmoe.progress import Progress

    monkeypatch.setattr(sim.runner, "simulator_missing", lambda name: "no simulator in this test")
    ctx = DemoContext(out_dir=tmp_path, build_dir=tmp_path / "build",
                      progress=Progress("test", quiet=True), quick=True)
    s = demo.run(ctx)
    assert not s.ok
    assert "Simulation skipped: no simulator in this test" in s.markdown
    assert "PEArray 4x4" in s.markdown
    assert (tmp_path / "accel_draft_verify.png").stat().st_size > 0
    json.dumps(s.figures)
