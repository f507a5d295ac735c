"""The generated Verilog reads as a hierarchy a user can integrate (sim/netlist.py)."""

import re

import pytest
from amaranth import Module, Signal
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sim.netlist import convert, name_ports, plain_name
from speqmoe import designs
from speqmoe.config import Config


def _modules(text):
    return re.findall(r"^module (\S+?)\(", text, re.M)


def _instances(text):
    return re.findall(r"^  (\S+) (\S+) \($", text, re.M)


def _ports(text):
    return re.findall(r"^\s*(?:input|output|inout)\s+(?:\[\d+:\d+\]\s+)?(\S+)\s*;", text, re.M)


@pytest.mark.parametrize("name,pes", [("pe_array_2x2", 4), ("accel_2x2", 4)])
def test_arrays_instantiate_one_pe_module_per_pe(name, pes):
    _, text = designs.netlist(name, Config())
    modules = _modules(text)
    assert modules.count(f"{name}_pe") == 1
    assert [t for t, _ in _instances(text)].count(f"{name}_pe") == pes
    assert not [m for m in modules if re.fullmatch(rf"{name}__(.*__)?pe\d+", m)]


@pytest.mark.parametrize("name,unnamed", [("reconfigurable_pe", 0), ("pe_array_2x2", 0),
                                          ("expert_cache_demo", 0), ("accel_2x2", 1)])
def test_module_instance_and_port_names_are_plain_identifiers(name, unnamed):
    # accel_2x2 keeps one generated port name: a 6-bit output that no signal carries on
    # either side of the instance (docs/integration.md).
    _, text = designs.netlist(name, Config())
    for module in _modules(text):
        assert re.fullmatch(r"[A-Za-z_]\w*", module), module
    for cell_type, instance in _instances(text):
        if not cell_type.startswith("\\$"):          # Yosys' own cells keep their names
            assert re.fullmatch(r"[A-Za-z_]\w*", cell_type), cell_type
            assert re.fullmatch(r"[A-Za-z_]\w*", instance), instance
    assert len([p for p in _ports(text) if "$" in p or p.startswith("\\")]) == unnamed


class _Leaf(wiring.Component):
    a: In(4)
    b: In(4)
    y: Out(4)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.y.eq(self.a + self.b)
        return m


class _Top(wiring.Component):
    x: In(8)
    y: Out(4)

    def elaborate(self, platform):
        m = Module()
        m.submodules.leaf = leaf = _Leaf()
        both = Signal(8)
        m.d.sync += both.eq(self.x)
        # The leaf's two inputs are the two halves of one parent register: Amaranth joins
        # them into one port it cannot name.
        m.d.comb += [leaf.a.eq(both[:4]), leaf.b.eq(both[4:]), self.y.eq(leaf.y)]
        return m


def test_a_port_amaranth_cannot_name_takes_its_signal_name():
    text = rtlil.convert(_Top(), name="top", emit_src=False)
    assert re.search(r"wire width 8 input \d+\s+\\port\$", text)   # what Amaranth writes
    named = name_ports(text)
    assert "port$" not in named
    assert re.search(r"wire width 8 input \d+\s+\\both$", named, re.M)
    verilog = convert(_Top(), "top")
    assert re.search(r"\.both\(", verilog)                         # the instance's connection
    assert _modules(verilog) == ["top", "top__leaf"]


def test_plain_name_rejects_what_verilog_cannot_name():
    assert plain_name("\\a.b.c") == "a__b__c"
    with pytest.raises(ValueError, match="no plain Verilog form"):
        plain_name("\\a.b-c")
