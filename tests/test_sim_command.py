"""`speqmoe sim`: design selection and --waves (the designs' own cocotb benches are tested in
test_pe.py, test_array.py, test_expert_cache_rtl.py and test_accel.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from speqmoe.cli import main
from sim.runner import simulator_missing
from test_waves import vcd_signals


def test_unknown_design_is_one_line_and_status_2(capsys):
    assert main(["sim", "--designs", "reconfigurable_pe,pe_array_9x9"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pe_array_9x9" in err and "accel_2x2" in err


def test_sim_with_waves_writes_a_vcd_of_the_pe_on_icarus(tmp_path, capsys):
    reason = simulator_missing("icarus")
    if reason:
        pytest.skip(reason)
    assert main(["sim", "--designs", "fp16_pe", "--simulator", "icarus", "--sequences", "3",
                 "--waves", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fp16_pe" in out and "matches the golden model" in out, out
    wave = Path(re.search(r"waveform: (\S+)", out).group(1))
    assert wave == tmp_path / "fp16_pe" / "icarus" / "fp16_pe.vcd"
    names, changes = vcd_signals(wave)
    assert {"clk", "rst", "weights__valid", "weights__payload", "acts__payload",
            "results__valid", "results__payload"} <= names, names
    assert changes.get("clk", 0) > 20 and changes.get("results__valid", 0) > 0, changes
