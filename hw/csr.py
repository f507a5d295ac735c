"""Control and status registers: a register map described in Python, the AXI4-Lite slave
built from it, and its Markdown documentation.

A :class:`RegisterMap` lists 32-bit :class:`Register` s at word-aligned byte offsets, each
``"ro"`` (read by the host, driven by the hardware), ``"rw"`` (written and read back by the
host, read by the hardware) or ``"wo"`` (a write strobe to the hardware, e.g. a command
push). Fields only document the bits. :class:`AxiLiteCsr` turns a map into a component
with one port per register; :meth:`RegisterMap.markdown` documents the same map.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.axi import AxiLiteSignature

__all__ = ["ACCESS", "Field", "Register", "RegisterMap", "AxiLiteCsr", "OKAY", "SLVERR"]

ACCESS = ("ro", "rw", "wo")
OKAY, SLVERR = 0, 2
_NAME = re.compile(r"^[A-Za-z][0-9A-Za-z_]*$")


def _check_name(what, name):
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a string, not {type(name).__name__}")
    if not _NAME.match(name) or keyword.iskeyword(name) or name == "signature":
        raise ValueError(f"{what} name {name!r} must be an identifier: a letter, then letters, "
                         f"digits or '_' (not a Python keyword nor 'signature')")


def _check_int(what, value):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, not {type(value).__name__}")


def _check_doc(what, doc):
    if not isinstance(doc, str):
        raise TypeError(f"{what} doc must be a string, not {type(doc).__name__}")


@dataclass(frozen=True)
class Field:
    """Bits ``lsb .. lsb + width - 1`` of a register (documentation only).

    Parameters
    ----------
    name : str
        An identifier.
    lsb : int
        Lowest bit, 0..31.
    width : int
        Bits, >= 1, with ``lsb + width <= 32``.
    doc : str
        One-line description.
    """

    name: str
    lsb: int
    width: int
    doc: str = ""

    def __post_init__(self):
        _check_name("field", self.name)
        _check_int(f"field {self.name} lsb", self.lsb)
        _check_int(f"field {self.name} width", self.width)
        _check_doc(f"field {self.name}", self.doc)
        if self.lsb < 0 or self.width < 1 or self.lsb + self.width > 32:
            raise ValueError(f"field {self.name} [{self.lsb + self.width - 1}:{self.lsb}] must "
                             f"have width >= 1 and lie inside bits 31..0")

    @property
    def msb(self) -> int:
        return self.lsb + self.width - 1

    @property
    def mask(self) -> int:
        """The field's bits in the register word."""
        return ((1 << self.width) - 1) << self.lsb

    @property
    def bits(self) -> str:
        """``[msb:lsb]``, or ``[lsb]`` for one bit."""
        return f"[{self.lsb}]" if self.width == 1 else f"[{self.msb}:{self.lsb}]"


@dataclass(frozen=True)
class Register:
    """One 32-bit register.

    Parameters
    ----------
    name : str
        An identifier; also the name of the register's port on :class:`AxiLiteCsr`.
    offset : int
        Byte offset, a multiple of 4.
    access : str
        ``"ro"``, ``"rw"`` or ``"wo"``.
    doc : str
        One-line description.
    fields : tuple of Field
        Named bit ranges, not overlapping (a list is converted to a tuple).
    """

    name: str
    offset: int
    access: str
    doc: str
    fields: tuple[Field, ...] = ()

    def __post_init__(self):
        _check_name("register", self.name)
        _check_int(f"register {self.name} offset", self.offset)
        _check_doc(f"register {self.name}", self.doc)
        if self.offset < 0 or self.offset % 4:
            raise ValueError(f"register {self.name} offset {self.offset:#x} must be a "
                             f"non-negative multiple of 4")
        if self.access not in ACCESS:
            raise ValueError(f"register {self.name} access must be one of {ACCESS}, "
                             f"not {self.access!r}")
        if isinstance(self.fields, (str, bytes)) or not hasattr(self.fields, "__iter__"):
            raise TypeError(f"register {self.name} fields must be a tuple of Field")
        fields = tuple(self.fields)
        object.__setattr__(self, "fields", fields)
        names, used = set(), 0
        for f in fields:
            if not isinstance(f, Field):
                raise TypeError(f"register {self.name} fields must be Field, not {type(f).__name__}")
            if f.name in names:
                raise ValueError(f"register {self.name} has two fields named {f.name}")
            if used & f.mask:
                raise ValueError(f"register {self.name} field {f.name} {f.bits} overlaps "
                                 f"another field")
            names.add(f.name)
            used |= f.mask

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name!r}")


class RegisterMap:
    """An ordered, validated collection of registers.

    Parameters
    ----------
    registers : iterable of Register
        Unique names, unique offsets; kept in the order given.

    Attributes
    ----------
    registers : tuple of Register
    size : int
        Bytes spanned: highest offset + 4 (0 when empty).
    """

    def __init__(self, registers):
        regs = tuple(registers)
        names, offsets = {}, {}
        for r in regs:
            if not isinstance(r, Register):
                raise TypeError(f"registers must be Register, not {type(r).__name__}")
            if r.name in names:
                raise ValueError(f"two registers named {r.name}")
            if r.offset in offsets:
                raise ValueError(f"registers {offsets[r.offset]} and {r.name} share offset "
                                 f"{r.offset:#x}")
            names[r.name] = r
            offsets[r.offset] = r.name
        self._registers = regs
        self._by_name = names

    registers = property(lambda self: self._registers)

    @property
    def size(self) -> int:
        return max((r.offset for r in self._registers), default=-4) + 4

    def __iter__(self):
        return iter(self._registers)

    def __len__(self):
        return len(self._registers)

    def __contains__(self, name):
        return name in self._by_name

    def __getitem__(self, name: str) -> Register:
        return self._by_name[name]

    def as_dict(self) -> dict:
        """A JSON-able description: ``{"registers": [{name, offset, access, doc, fields}]}``."""
        return {"registers": [
            {"name": r.name, "offset": r.offset, "access": r.access, "doc": r.doc,
             "fields": [{"name": f.name, "lsb": f.lsb, "width": f.width, "doc": f.doc}
                        for f in r.fields]}
            for r in self._registers]}

    def markdown(self, title: str = "Registers") -> str:
        """A Markdown section: a table of offset, name, access, fields and description."""
        digits = max(3, (max(self.size - 1, 0).bit_length() + 3) // 4)

        def cell(text):
            return text.replace("|", "\\|").replace("\n", " ")

        lines = [f"## {title}", "",
                 "| offset | name | access | fields | description |",
                 "|---|---|---|---|---|"]
        for r in sorted(self._registers, key=lambda r: r.offset):
            fields = "<br>".join(
                f"`{f.name}` {f.bits}" + (f": {cell(f.doc)}" if f.doc else "") for f in r.fields)
            lines.append(f"| `0x{r.offset:0{digits}X}` | `{r.name}` | {r.access} | {fields} | "
                         f"{cell(r.doc)} |")
        return "\n".join(lines) + "\n"


class AxiLiteCsr(wiring.Component):
    """AXI4-Lite slave exposing a :class:`RegisterMap`.

    Parameters
    ----------
    regmap : RegisterMap
        The registers; every offset must lie below ``2**addr_width``.
    addr_width : int
        AXI4-Lite address width, 3..32.

    Attributes
    ----------
    s_axil : In(AxiLiteSignature(addr_width=addr_width))
        The host's port. Address bits [1:0] are ignored.
    <name> : In(32), for each ``"ro"`` register
        The value the host reads.
    <name> : Out(32), for each ``"rw"`` register
        The register (reset 0), written by the host byte-wise under ``wstrb``.
    <name> : Out(Signature({"stb": Out(1), "data": Out(32)})), for each ``"wo"`` register
        ``stb`` is high for one cycle per host write, with ``data`` the written word
        (bytes whose strobe is clear are 0).

    Responses: a write to a ``"ro"`` register or an unmapped address answers BRESP
    SLVERR and changes nothing; a read of a ``"wo"`` register answers 0 OKAY, of an
    unmapped address 0 SLVERR.

    Timing: one read and one write may proceed at the same time, each one transaction at
    a time. Read: ``arready`` is high while no R response waits; an AR accepted in cycle
    ``c`` returns the value of cycle ``c`` (``"ro"`` input or ``"rw"`` register before any
    write completing at the same edge) with ``rvalid`` from ``c + 1``. Write: AW and W are
    accepted in either order or together (``awready``/``wready`` are high while that
    channel's half is not held and no B response waits); the write takes effect at the
    clock edge ending the cycle ``c`` in which both halves are present, ``bvalid`` and a
    ``"wo"`` register's ``stb`` are high from ``c + 1``. Throughput: one read and one write
    every 2 cycles when the host keeps ``rready``/``bready`` high.
    """

    def __init__(self, regmap: RegisterMap, *, addr_width: int = 12):
        if not isinstance(regmap, RegisterMap):
            raise TypeError(f"regmap must be a RegisterMap, not {type(regmap).__name__}")
        _check_int("addr_width", addr_width)
        if not 3 <= addr_width <= 32:
            raise ValueError(f"addr_width must be in 3..32, not {addr_width}")
        if regmap.size > 1 << addr_width:
            raise ValueError(f"register map spans {regmap.size:#x} bytes, more than the "
                             f"{1 << addr_width:#x} of addr_width {addr_width}")
        members = {"s_axil": In(AxiLiteSignature(addr_width=addr_width))}
        for r in regmap:
            if r.name in members or hasattr(type(self), r.name):
                raise ValueError(f"register name {r.name!r} clashes with an attribute of "
                                 f"AxiLiteCsr")
            if r.access == "ro":
                members[r.name] = In(32)
            elif r.access == "rw":
                members[r.name] = Out(32)
            else:
                members[r.name] = Out(wiring.Signature({"stb": Out(1), "data": Out(32)}))
        self._regmap = regmap
        self._addr_width = addr_width
        super().__init__(members)

    regmap = property(lambda self: self._regmap)
    addr_width = property(lambda self: self._addr_width)

    def elaborate(self, platform):
        m = Module()
        bus = self.s_axil
        regs = list(self._regmap)

        # -- reads --------------------------------------------------------------------
        ar_fire = Signal()
        m.d.comb += [bus.arready.eq(~bus.rvalid), ar_fire.eq(bus.arvalid & bus.arready)]
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        with m.If(ar_fire):
            m.d.sync += [bus.rvalid.eq(1), bus.rdata.eq(0), bus.rresp.eq(SLVERR)]
            with m.Switch(bus.araddr[2:]):
                for r in regs:
                    with m.Case(r.offset >> 2):
                        m.d.sync += bus.rresp.eq(OKAY)
                        if r.access != "wo":
                            m.d.sync += bus.rdata.eq(getattr(self, r.name))

        # -- writes -------------------------------------------------------------------
        aw_held, w_held = Signal(), Signal()
        aw_addr = Signal(self._addr_width)
        w_data, w_strb = Signal(32), Signal(4)
        m.d.comb += [bus.awready.eq(~aw_held & ~bus.bvalid),
                     bus.wready.eq(~w_held & ~bus.bvalid)]
        aw_fire, w_fire = Signal(), Signal()
        m.d.comb += [aw_fire.eq(bus.awvalid & bus.awready), w_fire.eq(bus.wvalid & bus.wready)]
        addr, wdata, wstrb = Signal.like(aw_addr), Signal(32), Signal(4)
        m.d.comb += [
            addr.eq(Mux(aw_held, aw_addr, bus.awaddr)),
            wdata.eq(Mux(w_held, w_data, bus.wdata)),
            wstrb.eq(Mux(w_held, w_strb, bus.wstrb)),
        ]
        write = Signal()
        m.d.comb += write.eq((aw_held | aw_fire) & (w_held | w_fire))
        mask = Signal(32)
        m.d.comb += mask.eq(Cat(b.replicate(8) for b in wstrb))

        with m.If(aw_fire):
            m.d.sync += [aw_held.eq(1), aw_addr.eq(bus.awaddr)]
        with m.If(w_fire):
            m.d.sync += [w_held.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)
        for r in regs:
            if r.access == "wo":
                m.d.sync += getattr(self, r.name).stb.eq(0)
        with m.If(write):
            m.d.sync += [aw_held.eq(0), w_held.eq(0), bus.bvalid.eq(1), bus.bresp.eq(SLVERR)]
            with m.Switch(addr[2:]):
                for r in regs:
                    if r.access == "ro":
                        continue
                    with m.Case(r.offset >> 2):
                        m.d.sync += bus.bresp.eq(OKAY)
                        port = getattr(self, r.name)
                        if r.access == "rw":
                            m.d.sync += port.eq((port & ~mask) | (wdata & mask))
                        else:
                            m.d.sync += [port.stb.eq(1), port.data.eq(wdata & mask)]
        return m
