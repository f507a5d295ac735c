"""Interface files (speqmoe/interface.py) against the port list of the generated Verilog."""

from __future__ import annotations

import json
import re

import pytest

from hw import never_built
from speqmoe import designs
from speqmoe.cli import main
from speqmoe.config import AccelConfig, CacheConfig, Config, load_config
from speqmoe.interface import interface

# Every design but the large ones whose conversion takes long (their interfaces are those of
# pe_array_2x2 and accel_2x2 with other widths).
DESIGNS = [n for n in designs.DESIGNS if n not in ("pe_array_4x4", "pe_array", "accel_4x4")]
# [cache] and [accel] at small sizes (the same generators; their default memories take long).
SMALL = Config(cache=CacheConfig(slots=4, expert_bytes=2560),
               accel=AccelConfig(rows=2, cols=2, slots=4, expert_bytes=256, k_max=64, n_max=64,
                                 fifo_lines=32))


def verilog_ports(text: str, module: str) -> dict[str, tuple[str, int]]:
    """name -> (direction, width) of the ports of *module* in Verilog *text*."""
    body = text[text.index(f"module {module}("):]
    body = body[:body.index("endmodule")]
    found = {}
    for direction, msb, lsb, name in re.findall(
            r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):(\d+)\]\s+)?\\?([\w$]+)\s*;", body, re.M):
        found[name] = (direction, int(msb) - int(lsb) + 1 if msb else 1)
    return found


@pytest.mark.parametrize("name", DESIGNS)
def test_interface_matches_the_generated_port_list(name):
    cfg = SMALL
    component, text = designs.netlist(name, cfg)
    desc = interface(component, name, designs.describe(name, cfg))
    want = verilog_ports(text, name)
    got = {p["name"]: (p["direction"], p["width"]) for p in desc["ports"]}
    assert got == want
    for p in desc["ports"]:
        if "fields" in p:                 # fields tile the payload: no gap, no overlap
            bits = sorted((f["lsb"], f["msb"]) for f in p["fields"])
            assert bits[0][0] == 0 and bits[-1][1] == p["width"] - 1, p["name"]
            assert all(b[0] == a[1] + 1 for a, b in zip(bits, bits[1:])), p["name"]


def test_array_payload_fields_name_each_pe_word_and_the_last_flag():
    cfg = load_config(None)
    array = designs.build("pe_array_2x2", cfg)
    never_built(array)  # only its signature is read, never elaborated
    desc = interface(array, "pe_array_2x2", "")
    weights = next(p for p in desc["ports"] if p["name"] == "weights__payload")
    fields = {f["field"]: (f["msb"], f["lsb"]) for f in weights["fields"]}
    assert fields == {"words[0]": (15, 0), "words[1]": (31, 16), "words[2]": (47, 32),
                      "words[3]": (63, 48), "last": (64, 64)}
    config = next(p for p in desc["ports"] if p["name"] == "config__payload")
    mode = next(f for f in config["fields"] if f["field"] == "mode")
    assert mode["values"] == {"VERIFY": 0, "DRAFT": 1} and config["width"] == 161


def test_verilog_command_writes_header_json_and_markdown(tmp_path, capsys):
    assert main(["verilog", "--designs", "fp16_pe", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "fp16_pe.v").read_text()
    assert text.startswith("// fp16_pe: FP16-only PE")
    assert "rst: synchronous, active high" in text.split("module")[0]
    desc = json.loads((tmp_path / "fp16_pe.json").read_text())
    assert [p["name"] for p in desc["ports"]][:3] == ["weights__payload", "weights__valid",
                                                      "weights__ready"]
    md = (tmp_path / "fp16_pe.md").read_text()
    assert "| `results__payload` | output | 128 |" in md


def test_every_design_the_demo_writes_is_in_the_list():
    """The demo's Verilog comes from the same registry (designs.write) as `speqmoe verilog`."""
    import ast
    from pathlib import Path

    import speqmoe.demos

    written = set()
    for path in Path(speqmoe.demos.__path__[0]).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "write_verilog":
                raise AssertionError(f"{path.name} writes Verilog outside designs.write")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "write" \
                    and getattr(node.func.value, "id", "") == "designs":
                written |= {a.value for a in ast.walk(node) if isinstance(a, ast.Constant)
                            and isinstance(a.value, str)}
    assert {"reconfigurable_pe", "fp16_pe", "expert_cache_demo"} <= written
    assert written - {"verilog"} <= set(designs.DESIGNS)
