"""Waveforms of cocotb runs (``waves=``, ``SPEQMOE_WAVES``): VCD from Icarus, FST from Verilator,
beside the run's log; a failing run names both.

The smallest hw/fp.py component (``Fp32ToFp16``, ports ``a`` and ``o``) runs ``sim/tb_fp.py``
with a few vectors; the waveform is opened and must hold the top level's ports, and ``a`` must
change value. VCD is parsed as text; FST by its block structure (its hierarchy block is LZ4- or
gzip-compressed; the LZ4 block format is decoded below, 20 lines).
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import pytest

from hw.fp import Fp32ToFp16
from sim.runner import run_cocotb, simulator_missing, write_verilog

NAME = "fp32_to_fp16"
PORTS = {"a", "o"}


def _lz4_block(data: bytes, size: int) -> bytes:
    """Decompress one LZ4 block (the format FST writes its hierarchy in)."""
    out = bytearray()
    i = 0
    while i < len(data):
        token = data[i]
        i += 1
        n = token >> 4
        if n == 15:
            while data[i] == 255:
                n += 255
                i += 1
            n += data[i]
            i += 1
        out += data[i:i + n]
        i += n
        if i >= len(data):
            break
        offset = data[i] | data[i + 1] << 8
        i += 2
        m = token & 15
        if m == 15:
            while data[i] == 255:
                m += 255
                i += 1
            m += data[i]
            i += 1
        for _ in range(m + 4):
            out.append(out[-offset])
    assert len(out) == size, (len(out), size)
    return bytes(out)


def fst_names(path: Path) -> set[str]:
    """The scope and variable names in an FST file's hierarchy block."""
    data = path.read_bytes()
    assert data[0] == 0, "an FST file starts with its header block"
    i = 0
    while i < len(data):
        kind, length = data[i], struct.unpack(">Q", data[i + 1:i + 9])[0]
        body = data[i + 9:i + 1 + length]
        if kind in (4, 6):         # FST_BL_HIER (gzip), FST_BL_HIER_LZ4
            size = struct.unpack(">Q", body[:8])[0]
            raw = zlib.decompress(body[8:], 31) if kind == 4 else _lz4_block(body[8:], size)
            # scope and variable records hold their name NUL-terminated ("a [31:0]\0")
            return {s.decode() for s in
                    re.findall(rb"([A-Za-z_][A-Za-z0-9_$]*)(?: \[\d+:\d+\])?\x00", raw)}
        i += 1 + length
    raise AssertionError(f"{path} has no hierarchy block")


def vcd_signals(path: Path) -> tuple[set[str], dict[str, int]]:
    """``(names declared, {name: value changes})`` of a VCD file."""
    names, codes = set(), {}
    changes: dict[str, int] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\s*\$var\s+\S+\s+\d+\s+(\S+)\s+(\S+)", line)
        if m:
            names.add(m.group(2))
            codes.setdefault(m.group(1), m.group(2))
            continue
        m = re.match(r"^(?:[01xz]|b[01xz]+ )(\S+)$", line)
        if m and m.group(1) in codes:
            changes[codes[m.group(1)]] = changes.get(codes[m.group(1)], 0) + 1
    return names, changes


def _run(simulator, build, **kw):
    reason = simulator_missing(simulator)
    if reason:
        pytest.skip(reason)
    verilog = write_verilog(Fp32ToFp16(), NAME, build / f"{NAME}.v")
    return run_cocotb(simulator=simulator, verilog_path=verilog, toplevel=NAME,
                      test_module="sim.tb_fp", build_dir=build,
                      extra_env={"FP_COMPONENT": NAME, "FP_VECTORS": 20,
                                 "FP_STATS": build / "stats.json"}, **kw)


def test_icarus_waves_are_a_vcd_beside_the_log_with_the_ports(tmp_path):
    result = _run("icarus", tmp_path, waves=True)
    assert result.waves == tmp_path / f"{NAME}.vcd" and result.log.parent == tmp_path
    names, changes = vcd_signals(result.waves)
    assert PORTS <= names, names
    assert changes.get("a", 0) > 20, changes


def test_verilator_waves_are_fst_with_the_ports(tmp_path):
    result = _run("verilator", tmp_path, waves=True)
    assert result.waves is not None and result.waves.parent == tmp_path
    if result.waves.suffix == ".fst":
        names = fst_names(result.waves)
        assert PORTS | {NAME} <= names, names
    else:       # no lz4 headers here: Verilator fell back to VCD (it says so on stderr)
        names, changes = vcd_signals(result.waves)
        assert PORTS <= names and changes.get("a", 0) > 20


def test_failing_run_keeps_its_log_and_waveform_and_names_them(tmp_path, monkeypatch):
    # A cocotb test that fails after driving the design: the environment variable asks for
    # the waveform, the error message must name both files, and both must be there.
    (tmp_path / "tb_waves_fail.py").write_text(
        "import cocotb\n"
        "from cocotb.triggers import Timer\n\n"
        "@cocotb.test()\n"
        "async def fails(dut):\n"
        "    dut.a.value = 0x3F800000\n"
        "    await Timer(10, 'ns')\n"
        "    assert int(dut.o.value) == 0, 'deliberate failure'\n")
    monkeypatch.syspath_prepend(str(tmp_path))     # cocotb passes sys.path on
    monkeypatch.setenv("SPEQMOE_WAVES", "1")
    build = tmp_path / "build"
    reason = simulator_missing("icarus")
    if reason:
        pytest.skip(reason)
    verilog = write_verilog(Fp32ToFp16(), NAME, build / f"{NAME}.v")
    with pytest.raises(AssertionError) as info:
        run_cocotb(simulator="icarus", verilog_path=verilog, toplevel=NAME,
                   test_module="tb_waves_fail", build_dir=build)
    text = str(info.value)
    log, wave = build / "sim.log", build / f"{NAME}.vcd"
    assert f"log: {log}" in text and f"waveform: {wave}" in text, text
    assert "deliberate failure" in log.read_text()
    assert PORTS <= vcd_signals(wave)[0]


def test_a_failing_run_without_waves_says_how_to_record_them(tmp_path, monkeypatch):
    monkeypatch.delenv("SPEQMOE_WAVES", raising=False)
    with pytest.raises(AssertionError, match="rerun with SPEQMOE_WAVES=1 for a waveform"):
        _run("icarus", tmp_path, waves=False, testcase="no_such_test")


@pytest.mark.parametrize("opt", ["-O9", "-march=native", "O1"])
def test_an_unknown_verilator_optimisation_level_is_refused(tmp_path, monkeypatch, opt):
    from sim.runner import VERILATOR_OPT

    if simulator_missing("verilator"):
        pytest.skip(simulator_missing("verilator"))
    monkeypatch.setenv(VERILATOR_OPT, opt)
    with pytest.raises(ValueError, match=f"{VERILATOR_OPT} must be one of -O0, "):
        run_cocotb(simulator="verilator", verilog_path=tmp_path / "none.v", toplevel="none",
                   test_module="sim.tb_fp", build_dir=tmp_path / "b")
