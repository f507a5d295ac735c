"""SymbiYosys BMC proofs of the DMA and expert-cache invariants (sim/formal.py).

Small depths here; ``speqmoe formal`` runs them deeper. The negative control checks that
the machinery can fail: a deliberately wrong property must FAIL with a counterexample VCD.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from sim.formal import PROOFS, run_proof

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(
    not all((BIN / t).exists() or shutil.which(t) for t in ("yowasp-sby", "yices-smt2")),
    reason="yowasp-sby / yices-smt2 not installed (make setup)")


def _run(tmp_path, name):
    result = run_proof(name, PROOFS[name][1], tmp_path, timeout=600)
    print(result.line())
    return result


def test_expert_cache_invariants_hold(tmp_path):
    result = _run(tmp_path, "expert_cache")
    assert result.passed, result.line() + "\n" + result.log[-3000:]


def test_dma_invariants_hold(tmp_path):
    result = _run(tmp_path, "dma")
    assert result.passed, result.line() + "\n" + result.log[-3000:]


def test_broken_property_fails_with_counterexample(tmp_path):
    result = _run(tmp_path, "dma_broken")
    assert result.status == "FAIL", result.log[-3000:]
    assert not result.passed
    assert result.vcd is not None and result.vcd.is_file(), result.log[-3000:]
    assert result.vcd.read_text().startswith("$")      # a VCD header
    assert result.failed and "sim/formal.py" in result.failed[0]


def test_cli_formal_reports_pass_and_fail(tmp_path, capsys):
    from speqmoe.cli import main
    assert main(["formal", "--proofs", "dma_broken", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "dma_broken" in out and "FAIL" in out and ".vcd" in out
    assert main(["formal", "--proofs", "nope"]) == 2
