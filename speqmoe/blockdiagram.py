"""A block diagram of a component, read from the elaborated design and drawn with matplotlib.

:func:`extract` elaborates a :class:`amaranth.lib.wiring.Component` and returns its blocks
and links:

* **blocks**: the component's submodules (Amaranth's fragment hierarchy), each with its class
  and the members of its signature (direction and width in bits; interfaces such as streams
  and AXI ports as one entry with the sum of their bits);
* **links**: which blocks share nets, from the RTLIL netlist Amaranth converts the component
  to (the netlist that becomes the Verilog): every net that a submodule's output port, a top
  port or the top's own logic drives and that another of them reads. Nets are grouped by
  the pair of ports (``streamer.beats -> array.weights``), their bits counted in each
  direction; the side that drives more bits is the source.

The top's own logic (the command sequencer, counters and checks written in the top's
``elaborate``) is one block, ``top logic``; the top's ports are the blocks ``m_axi`` etc.

:func:`draw` lays the blocks out in columns by their distance from the top's input ports
and draws every link as an arrow labelled with its ports and widths. Nothing in the picture
is typed in by hand: a change of the design changes the diagram.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["Block", "Link", "Diagram", "extract", "draw"]

TOP_LOGIC = "top logic"
_SKIP_PORTS = {"clk", "rst"}
_TOKEN = re.compile(r"([\\$][^\s\[\]{}]+)(?:\s*\[(\d+)(?::(\d+))?\])?")


@dataclass
class Block:
    name: str
    kind: str                         # class name, "port" (a top port) or "logic"
    ports: list = field(default_factory=list)     # (name, "in"/"out", bits, what)


@dataclass
class Link:
    src: str
    src_port: str
    dst: str
    dst_port: str
    bits: int                         # bits driven from src to dst
    back_bits: int = 0                # bits driven from dst to src (e.g. a stream's ready)


@dataclass
class Diagram:
    name: str
    blocks: dict                      # name -> Block
    links: list                       # Link


def _member_ports(component) -> list:
    """(name, direction, bits, what) of every member of *component*'s signature."""
    from amaranth.hdl import Shape
    from amaranth.lib import stream, wiring

    out = []
    for name, member in component.signature.members.items():
        direction = "in" if member.flow == wiring.In else "out"
        if member.is_port:
            out.append((name, direction, Shape.cast(member.shape).width, "signal"))
            continue
        sig = member.signature
        bits = sum(Shape.cast(m.shape).width
                   for _, m, _ in sig.flatten(getattr(component, name)))
        if isinstance(sig, stream.Signature):
            what = f"stream, {Shape.cast(sig.members['payload'].shape).width}-bit payload"
        else:
            plain = sig.flip() if isinstance(sig, wiring.FlippedSignature) else sig
            what = type(plain).__name__.removesuffix("Signature") or "interface"
        out.append((name, direction, bits, what))
    return out


def _interface(port: str) -> str:
    """The signature member a netlist port belongs to: ``beats__valid`` -> ``beats``."""
    port = re.sub(r"\$\d+$", "", port)
    if port.startswith("port$"):
        return "(internal)"
    return port.split("__")[0]


def _bits(width: dict, name: str, hi, lo) -> int:
    if hi is None:
        return width.get(name, 0)
    return int(hi) - int(lo if lo is not None else hi) + 1


def _parse_rtlil(text: str, top: str):
    """Wires, ports and cells of module *top*, and the port directions of every module."""
    modules: dict = {}
    current = None
    cell = None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("module "):
            current = modules.setdefault(s.split()[1].lstrip("\\"), {
                "width": {}, "inputs": set(), "outputs": set(), "cells": [], "glue": [],
                "aliases": []})
            continue
        if current is None:
            continue
        if s == "end" and cell is not None:
            cell = None
            continue
        if s.startswith("wire "):
            parts = s.split()
            width = int(parts[parts.index("width") + 1]) if "width" in parts else 1
            name = parts[-1]
            current["width"][name] = width
            if "input" in parts:
                current["inputs"].add(name)
            if "output" in parts:
                current["outputs"].add(name)
            continue
        if s.startswith("cell "):
            kind, inst = s.split()[1:3]
            cell = {"type": kind.lstrip("\\"), "name": inst.lstrip("\\"), "conns": [],
                    "sub": kind.startswith("\\")}
            current["cells"].append(cell)
            continue
        if s.startswith(("attribute", "parameter")):
            continue
        if cell is not None and cell["sub"] and s.startswith("connect "):
            port, spec = s.split(None, 2)[1:]
            cell["conns"].append((port, spec))
        elif cell is None and s.startswith("connect "):
            current["aliases"].append(s)
        else:
            current["glue"].append(s)
    return modules


def extract(component, name: str = "top") -> Diagram:
    """The block diagram of *component* (a ``wiring.Component``) as Amaranth elaborates it."""
    from amaranth.back import rtlil
    from amaranth.hdl import Fragment
    from amaranth.lib import wiring

    fragment = Fragment.get(component, None)
    blocks: dict = {}
    for sub, sub_name, _ in fragment.subfragments:
        origin = (sub.origins or (None,))[0]
        if isinstance(origin, wiring.Component):
            blocks[sub_name] = Block(sub_name, type(origin).__name__, _member_ports(origin))
        else:
            blocks[sub_name] = Block(sub_name, type(origin).__name__ if origin else "module")
    top_ports = {p[0]: p for p in _member_ports(component)}
    blocks[TOP_LOGIC] = Block(TOP_LOGIC, "logic")

    modules = _parse_rtlil(rtlil.convert(component, name=name, emit_src=False), name)
    top = modules[name]
    width = top["width"]

    # Module-level `connect a b` makes two names of one net.
    parent: dict = {}

    def root(w):
        while parent.get(w, w) != w:
            w = parent[w]
        return w

    for line in top["aliases"]:
        # Only whole-wire aliases join nets; a part or a concatenation is a naming of bits
        # whose nets the cells' connections already name.
        sides = line.split()[1:]
        if len(sides) == 2 and all(_TOKEN.fullmatch(x) for x in sides):
            parent[root(sides[1])] = root(sides[0])

    def port_block(wire: str, direction: str) -> str:
        """The block standing for the top port *wire*'s nets of one direction."""
        iface = _interface(wire.lstrip("\\"))
        label = f"{iface} ({'inputs' if direction == 'in' else 'outputs'})"
        if label not in blocks:
            member = top_ports.get(iface, (iface, direction, 0, "signal"))
            blocks[label] = Block(label, "port", [(iface, direction, 0, member[3])])
        return label

    drivers: dict = defaultdict(list)     # net -> [(block, port, bits)]
    readers: dict = defaultdict(list)
    for table, wires, direction in ((drivers, top["inputs"], "in"),
                                    (readers, top["outputs"], "out")):
        for w in wires:
            if w.lstrip("\\") in _SKIP_PORTS:
                continue
            b = port_block(w, direction)
            blk = blocks[b]
            n, d, bits, what = blk.ports[0]
            blk.ports[0] = (n, d, bits + width[w], what)
            table[root(w)].append((b, _interface(w.lstrip("\\")), width[w]))
    for c in top["cells"]:
        if not c["sub"]:
            continue
        sub = modules.get(c["type"], {"outputs": set()})
        for port, spec in c["conns"]:
            if port.lstrip("\\") in _SKIP_PORTS:
                continue
            table = drivers if port in sub["outputs"] else readers
            for m in _TOKEN.finditer(spec):
                table[root(m.group(1))].append(
                    (c["name"], _interface(port.lstrip("\\")),
                     _bits(width, m.group(1), m.group(2), m.group(3))))
    glue_nets = {root(m.group(1)) for s in top["glue"] for m in _TOKEN.finditer(s)}

    flows: dict = defaultdict(int)         # (src, dst) -> bits
    ports: dict = defaultdict(set)         # (src, dst) -> {(src port, dst port)}
    for net in set(drivers) | set(readers):
        srcs = drivers.get(net) or ([(TOP_LOGIC, "", 0)] if net in glue_nets else [])
        dsts = list(readers.get(net, []))
        if net in glue_nets and drivers.get(net):
            dsts.append((TOP_LOGIC, "", 0))
        for sb, sp, sbits in srcs:
            for db, dp, dbits in dsts:
                if sb != db:
                    flows[(sb, db)] += dbits or sbits
                    ports[(sb, db)].add((sp, dp))
    links: dict = {}
    for (sb, db), bits in flows.items():
        key = frozenset([sb, db])
        if key in links:
            continue
        back = flows.get((db, sb), 0)
        if bits < back:
            sb, db, bits, back = db, sb, back, bits
        pairs = sorted(ports[(sb, db)] | {(d, s) for s, d in ports.get((db, sb), ())})
        links[key] = Link(sb, _names([p[0] for p in pairs]), db, _names([p[1] for p in pairs]),
                          bits, back)
    used = {b for link in links.values() for b in (link.src, link.dst)}
    blocks = {n: b for n, b in blocks.items() if n in used or b.kind not in ("port", "logic")}
    order = sorted(links.values(), key=lambda l: (l.src, l.dst))
    return Diagram(name=name, blocks=blocks, links=order)


def _names(ports: list) -> str:
    """Port names of one side of a link, shortened when there are many."""
    names = sorted({p for p in ports if p})
    if len(names) <= 2:
        return ",".join(names)
    common = names[0]
    for n in names[1:]:
        while not n.startswith(common):
            common = common[:-1]
    return f"{common}* ({len(names)})" if len(common) >= 3 else f"{len(names)} ports"


def _into_interface(diagram: Diagram, link: Link) -> bool:
    """Whether *link* ends at an interface of its destination (a stream, an AXI port, a
    memory port), not only at plain signals such as the inputs of status registers."""
    kinds = {p[0]: p[3] for p in diagram.blocks[link.dst].ports}
    return any(kinds.get(n, "signal") != "signal" for n in link.dst_port.split(","))


def _layers(diagram: Diagram) -> dict:
    """Column of each block: the top's input ports first, then each submodule at its longest
    distance along the links that end at an interface (data paths, not status signals),
    each block at most once on a path, then the top's output ports. The top's own logic has
    no column (it is drawn below)."""
    inner = [n for n, b in diagram.blocks.items() if b.kind not in ("port", "logic")]
    out = defaultdict(list)
    for link in diagram.links:
        if link.src in inner and link.dst in inner and _into_interface(diagram, link):
            out[link.src].append(link.dst)
    layer = {n: 1 for n in inner}

    def walk(node, path):
        for nxt in out[node]:
            if nxt not in path and layer[nxt] < layer[node] + 1:
                layer[nxt] = layer[node] + 1
                walk(nxt, path | {nxt})

    for n in inner:
        walk(n, {n})
    last = max(layer.values(), default=0) + 1
    for n, b in diagram.blocks.items():
        if b.kind == "port":
            layer[n] = 0 if b.ports[0][1] == "in" else last
    return layer


def _block_text(b: Block) -> str:
    if b.kind == "port":
        name, direction, bits, what = b.ports[0]
        return (f"{b.name}\nport of the top ({what})\n{bits} bits "
                f"{'into' if direction == 'in' else 'out of'} the top")
    if b.kind == "logic":
        return f"{b.name}\n(the top's own elaborate():\nsequencer, counters, checks)"
    lines = [f"{b.name}: {b.kind}"]
    for name, direction, bits, what in b.ports:
        if what == "signal" and bits <= 1:
            continue
        lines.append(f"{'in ' if direction == 'in' else 'out'} {name} {bits}b"
                     + ("" if what == "signal" else f" ({what.split(',')[0]})"))
    return "\n".join(lines[:9] + (["..."] if len(lines) > 9 else []))


def draw(diagram: Diagram, path, title: str) -> None:
    """Draw *diagram* into the PNG file *path*."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    layer = _layers(diagram)
    columns = defaultdict(list)
    for n in diagram.blocks:
        if n in layer:
            columns[layer[n]].append(n)
    ncol = max(columns) + 1
    nrow = max(len(v) for v in columns.values())
    col_w, row_h, box_w, box_h = 2.3, 1.55, 1.85, 1.25
    pos = {}
    for c, names in columns.items():
        names.sort()
        offset = (nrow - len(names)) * row_h / 2
        for r, n in enumerate(names):
            pos[n] = (c * col_w, -(offset + r * row_h))
    logic_y = -(nrow * row_h) - 0.2
    fig, ax = plt.subplots(figsize=(1.75 * ncol + 0.6, 1.2 * nrow + 2.4))
    colours = {"port": "#dfe8f5", "logic": "#f5e6c8"}
    for n, (x, y) in pos.items():
        b = diagram.blocks[n]
        ax.add_patch(plt.Rectangle((x - box_w / 2, y - box_h / 2), box_w, box_h,
                                   facecolor=colours.get(b.kind, "#e8f3e0"), edgecolor="k",
                                   lw=0.8, zorder=2))
        ax.text(x, y, _block_text(b), ha="center", va="center", fontsize=4.6, zorder=3,
                family="monospace")
    has_logic = TOP_LOGIC in diagram.blocks
    if has_logic:
        x0, x1 = 0.5 * col_w, (ncol - 1.5) * col_w
        ax.add_patch(plt.Rectangle((x0 - box_w / 2, logic_y - 0.3), x1 - x0 + box_w, 0.6,
                                   facecolor=colours["logic"], edgecolor="k", lw=0.8, zorder=2))
        ax.text((x0 + x1) / 2, logic_y, "top logic: the Accelerator's own elaborate() (command "
                "sequencer, checks, counters) - dotted lines: nets to and from it",
                ha="center", va="center", fontsize=5, zorder=3)
    styles = {"stream": ("#c0392b", "-"), "logic": ("#999999", ":"), "other": ("#1f4e99", "--")}

    def style(link):
        if TOP_LOGIC in (link.src, link.dst):
            return "logic"
        kinds = {p[0]: p[3] for b in (link.src, link.dst) for p in diagram.blocks[b].ports}
        names = link.src_port.split(",") + link.dst_port.split(",")
        return "stream" if any("stream" in kinds.get(n, "") for n in names) else "other"

    for i, link in enumerate(diagram.links):
        kind = style(link)
        colour, ls = styles[kind]
        if kind == "logic":
            other = link.dst if link.src == TOP_LOGIC else link.src
            if other not in pos:
                continue
            x, y = pos[other]
            x = min(max(x, 0.5 * col_w - box_w / 2 + 0.1), (ncol - 1.5) * col_w + box_w / 2 - 0.1)
            down = link.dst == TOP_LOGIC
            ends = ((x, y - box_h / 2), (x, logic_y + 0.3))
            ax.annotate("", xy=ends[1] if down else ends[0], xytext=ends[0] if down else ends[1],
                        zorder=1, arrowprops=dict(arrowstyle="-|>", color=colour, ls=ls, lw=0.6,
                                                  shrinkA=0, shrinkB=0))
            continue
        (x0, y0), (x1, y1) = pos[link.src], pos[link.dst]
        bend = 0.15 * ((i % 5) - 2) if abs(x1 - x0) > col_w * 1.5 or x0 == x1 else 0.0
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=1,
                    arrowprops=dict(arrowstyle="-|>", color=colour, ls=ls, lw=0.8,
                                    shrinkA=14, shrinkB=14,
                                    connectionstyle=f"arc3,rad={bend}"))
        label = f"{link.src_port}->{link.dst_port}\n{link.bits}b" + (
            f" ({link.back_bits}b back)" if link.back_bits else "")
        t = 0.5 if abs(x1 - x0) < 1e-6 else 0.5 * box_w / abs(x1 - x0) + 0.12 + 0.1 * (i % 3)
        ax.text(x0 + t * (x1 - x0), y0 + t * (y1 - y0), label, fontsize=3.8, ha="center",
                va="center", color=colour, zorder=4,
                bbox=dict(facecolor="white", edgecolor="none", pad=0.2, alpha=0.85))
    handles = [Line2D([], [], color=styles["stream"][0], ls="-",
                      label="nets of a stream (amaranth.lib.stream) port"),
               Line2D([], [], color=styles["other"][0], ls="--",
                      label="other nets (AXI channels, slot memory port, registers)")]
    if has_logic:
        handles.append(Line2D([], [], color=styles["logic"][0], ls=":",
                              label="nets to or from the top's own logic"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3,
              fontsize=5.5, frameon=False)
    ax.set_xlim(-box_w / 2 - 0.1, (ncol - 1) * col_w + box_w / 2 + 0.1)
    ax.set_ylim(logic_y - 0.45, box_h / 2 + 0.1)
    ax.set_axis_off()
    ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=200)
    plt.close(fig)
