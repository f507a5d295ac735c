"""Simulation flow of the co-simulation: harness, Verilog, cocotb run, results.

:class:`CosimHarness` is the accelerator top with two host memories behind its AXI4 master,
chosen by the input ``ext_mem``:

* ``ext_mem = 0``: :class:`sim.hostmem.AxiMemory`, a memory inside the simulated Verilog with
  ``latency`` cycles of read latency and ``bandwidth`` bytes per cycle of read bandwidth, loaded
  and read by the host through VPI (fast: Verilator runs without Python between commands);
* ``ext_mem = 1``: the AXI4 port ``m_axi``, for cocotbext-axi's ``AxiRam`` (the reference model,
  with random pauses on every channel), through :class:`hw.axi.AxiReadLatency` with the same
  read latency.

:func:`run_cosim` writes the harness (the PE written once and instantiated ``rows * cols``
times), builds it with Verilator and runs :mod:`sim.tb_cosim` on a list of decoding runs.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

from amaranth import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.axi import AxiLiteSignature, AxiReadLatency, AxiSignature
from sim.accel_flow import READ_FIELDS, accelerator, hierarchical
from sim.accel_program import AccelParams
from sim.hostmem import STORAGE, STORAGE_MODULE

DEFAULT_LATENCY = 64         # cycles from AR to the first R beat, in host memory
HARNESS = "cosim_tb"
PUBLIC = [(STORAGE_MODULE, STORAGE)]     # what the testbench reaches besides ports


@dataclasses.dataclass(frozen=True)
class MemoryParams:
    """Host memory of a co-simulation: ``size`` bytes, read ``latency`` cycles, read
    ``bandwidth`` bytes per cycle (None: one bus line per cycle)."""
    size: int
    latency: int = DEFAULT_LATENCY
    bandwidth: int | None = None


class CosimHarness(wiring.Component):
    """The accelerator with its host memory (see the module docstring)."""

    def __init__(self, params: AccelParams, memory: MemoryParams, *, pe_module: str | None = None):
        from sim.hostmem import AxiMemory

        self._accel = accelerator(params, pe_module=pe_module)
        self._mul_stages, self._add_stages = params.mul_stages, params.add_stages
        a = self._accel
        self._mem = AxiMemory(size=memory.size, data_width=a.bus_bits, addr_width=a.addr_width,
                              id_width=4, latency=memory.latency, bandwidth=memory.bandwidth,
                              verilog_storage=True)
        self._latency = memory.latency
        super().__init__({
            "m_axi": Out(AxiSignature(addr_width=a.addr_width, data_width=a.bus_bits,
                                      id_width=4)),
            "s_axil": In(AxiLiteSignature(addr_width=12)),
            "irq": Out(1),
            "ext_mem": In(1),
        })

    mul_stages = property(lambda self: self._mul_stages)
    add_stages = property(lambda self: self._add_stages)

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = a = self._accel
        m.submodules.hostmem = mem = self._mem
        m.submodules.latency = lat = AxiReadLatency(
            latency=self._latency, addr_width=a.addr_width, data_width=a.bus_bits, id_width=4,
            depth=32)
        wiring.connect(m, wiring.flipped(self.s_axil), a.s_axil)
        m.d.comb += self.irq.eq(a.irq)
        ext = self.ext_mem

        def gate(name, sig, on):
            return sig & on if name.endswith(("valid", "ready")) else sig

        for name, member in a.m_axi.signature.members.items():
            src, internal = getattr(a.m_axi, name), getattr(mem.s, name)
            outer = getattr(self.m_axi, name)
            ext_port = getattr(lat.s, name) if name in READ_FIELDS else outer
            if member.flow == Out:
                m.d.comb += [internal.eq(gate(name, src, ~ext)), ext_port.eq(gate(name, src, ext))]
            else:
                m.d.comb += src.eq(Mux(ext, ext_port, internal))
            if name in READ_FIELDS:
                if member.flow == Out:
                    m.d.comb += outer.eq(getattr(lat.m, name))
                else:
                    m.d.comb += getattr(lat.m, name).eq(outer)
        return m


def harness_verilog(params: AccelParams, memory: MemoryParams) -> str:
    from sim.hostmem import storage_verilog

    return (hierarchical(CosimHarness(params, memory, pe_module=f"{HARNESS}_pe"), HARNESS)
            + storage_verilog())


@dataclasses.dataclass
class RunSpec:
    """One decoding run of a co-simulation (see :mod:`sim.tb_cosim`)."""
    prompt: str                    # hex of the prompt bytes
    tokens: int
    mode: str
    gamma: int = 3
    tau: float = 0.5
    memory: str = "rtl"            # "rtl" (AxiMemory) or "axiram" (cocotbext-axi)
    pauses: float = 0.0            # AXI pause probability (axiram only)
    lockstep: bool = True          # check every command against golden.accel.AccelModel
    seed: int = 0


def run_cosim(params: AccelParams, memory: MemoryParams, weights: Path, runs: list[RunSpec],
              build_dir, *, progress=None, clock_ns: float = 10.0, check: bool = True,
              waves: bool | str | None = None):
    """Build the harness and decode ``runs`` on it; returns ``(failed tests, [result dict or
    None per run])``. With ``check`` a failed cocotb test raises ``AssertionError`` naming its log.

    ``progress(run_index, byte)`` is called (from a watcher thread) as bytes are decoded.
    ``waves``: see :func:`sim.runner.run_cocotb` (one waveform per testcase; with both memory
    models the second run's replaces the first's)."""
    from sim.runner import run_cocotb

    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    path = build_dir / f"{HARNESS}.v"
    stamp = build_dir / f"{HARNESS}.stamp"
    key = _design_key(params, memory)
    if not path.exists() or not stamp.exists() or stamp.read_text() != key:
        # converting the expert cache's slot memory takes a minute or two: only when the
        # parameters or the hardware's sources changed
        path.write_text(harness_verilog(params, memory))
        stamp.write_text(key)
    results = build_dir / "results"
    results.mkdir(exist_ok=True)
    for f in list(results.glob("*.json")) + list(results.glob("*.progress")):
        f.unlink()
    env = {"COSIM_PARAMS": json.dumps(dataclasses.asdict(params)),
           "COSIM_MEMORY": json.dumps(dataclasses.asdict(memory)),
           "COSIM_WEIGHTS": str(Path(weights).resolve()),
           "COSIM_RUNS": json.dumps([dataclasses.asdict(r) for r in runs]),
           "COSIM_RESULTS": str(results), "COSIM_CLOCK_NS": str(clock_ns)}
    stop = threading.Event()
    watcher = None
    if progress is not None:
        watcher = threading.Thread(target=_watch, args=(results, len(runs), progress, stop),
                                   daemon=True)
        watcher.start()
    try:
        testcases = sorted({"decode_on_axiram" if r.memory == "axiram" else "decode_on_rtl_memory"
                            for r in runs})
        failed = 0
        for case in testcases:
            result = run_cocotb(simulator="verilator", verilog_path=path, toplevel=HARNESS,
                                test_module="sim.tb_cosim", build_dir=build_dir, extra_env=env,
                                testcase=case, check=check, public=PUBLIC, waves=waves)
            failed += result.failed
    finally:
        stop.set()
        if watcher is not None:
            watcher.join()
    out = []
    for i in range(len(runs)):
        f = results / f"run{i}.json"
        out.append(json.loads(f.read_text()) if f.exists() else None)
    return failed, out


def _design_key(params: AccelParams, memory: MemoryParams) -> str:
    """Parameters and a hash of every source the harness's Verilog depends on."""
    import hashlib

    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for f in sorted((root / "hw").glob("*.py")) + [root / "sim" / n for n in
                                                   ("hostmem.py", "cosim_flow.py",
                                                    "accel_flow.py")]:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return json.dumps({"params": dataclasses.asdict(params),
                       "memory": dataclasses.asdict(memory), "sources": h.hexdigest()})


def _watch(folder: Path, n: int, progress, stop: threading.Event) -> None:
    seen = [0] * n
    while True:
        done = stop.is_set()
        for i in range(n):
            f = folder / f"run{i}.progress"
            if f.exists():
                data = f.read_bytes()
                for b in data[seen[i]:]:
                    progress(i, b)
                seen[i] = len(data)
        if done:
            return
        time.sleep(0.2)


def prepare(model, *, rows: int = 4, cols: int = 4, slots: int = 8, policy: str = "lru",
            latency: int = DEFAULT_LATENCY, bandwidth: int | None = None):
    """``(memory map, accelerator parameters, host memory parameters)`` for ``model``."""
    from sim.cosim import MemoryMap, accel_params

    mmap = MemoryMap.build(model, rows * cols)
    params = accel_params(model, mmap, rows, cols, slots=slots, policy=policy)
    return mmap, params, MemoryParams(size=mmap.size, latency=latency, bandwidth=bandwidth or None)


def summarize(record: dict, clock_hz: float) -> dict:
    """The figures of one run's record (see :mod:`sim.tb_cosim`): per-token bytes and cache
    counts of the decode phase, and tokens per second at ``clock_hz``."""
    n = len(bytes.fromhex(record["bytes_hex"]))
    c = record["decode_counters"]
    per = (lambda v: v / n) if n else (lambda v: float("nan"))
    cpt = record["cycles_per_token"]
    return {
        "tokens": n,
        "cycles": record["cycles"],
        "cycles_per_token": cpt,
        "prefill_cycles": record["prefill_cycles"],
        "bytes_per_token": {"dense": per(c["bytes_dense"]), "expert_slots": per(c["bytes_slot"]),
                            "expert_fills": per(c["bytes_fill"]),
                            "activations": per(c["bytes_acts"]),
                            "written": per(c["bytes_written"])},
        "cache": {k[6:]: c[k] for k in ("cache_demands", "cache_hits", "cache_misses",
                                       "cache_prefetches_issued", "cache_prefetches_useful",
                                       "cache_evictions")},
        "busy_fraction": c["busy_cycles"] / record["cycles"] if record["cycles"] else float("nan"),
        "clock_hz": clock_hz,
        "tokens_per_s": clock_hz / cpt if n else float("nan"),
        "tokens_per_min_wall": (60 * n / record["decode_seconds"] if record["decode_seconds"]
                                else float("nan")),
    }
