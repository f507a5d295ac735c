"""speqmoe sim: simulate the generated Verilog against the golden models (cocotb).

Each design runs its cocotb testbench on the chosen simulators and is compared with its golden
model: the PEs on random dot products in both modes (bit-exact results), the PE array on the
standard layer shapes in draft and verify mode with random stalls and backpressure (bit-exact
results, and its busy/starved/blocked counters against the testbench's flow model), the expert
cache in lockstep with golden.expert_cache (every response, victim, slot content and counter),
the accelerator top on a random command program against golden.accel (every result, response,
error and counter). Exit status 1 if any design differs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

# What each name simulates (`--designs`); the names are those of `speqmoe verilog --list`.
SIM_DESIGNS = ("reconfigurable_pe", "fp16_pe", "pe_array_2x2", "pe_array_4x4", "pe_array",
               "expert_cache_demo", "accel_2x2")
DEFAULT_SIM = ("reconfigurable_pe", "fp16_pe", "pe_array_2x2", "expert_cache_demo", "accel_2x2")

CACHE_OPS = 300          # lockstep requests of the expert cache
ACCEL_COMMANDS = 60      # commands of the accelerator's random program


def add_parser(sub):
    p = sub.add_parser("sim", help="cocotb simulation of the PEs, the PE array, the expert cache "
                                   "and the accelerator top vs the golden models",
                       description=__doc__)
    p.add_argument("--out", type=Path, default=Path("build/sim"), help="build folder")
    p.add_argument("--config", type=Path, default=None,
                   help="configuration TOML ([sim], [pe], [array])")
    p.add_argument("--designs", default=None,
                   help=f"comma-separated designs (default: {','.join(DEFAULT_SIM)}); "
                        f"available: {', '.join(SIM_DESIGNS)}")
    p.add_argument("--sequences", type=int, default=None,
                   help="random dot products per mode of the PEs (default: [sim] pe_sequences)")
    p.add_argument("--simulator", action="append", choices=["verilator", "icarus"], default=None,
                   help="simulator(s) to use (default: [sim] simulators)")
    p.add_argument("--waves", action="store_true",
                   help="record a waveform of every run beside its sim.log: FST from Verilator, "
                        "VCD from Icarus (also SPEQMOE_WAVES=1)")
    p.set_defaults(func=run)
    return p


@dataclass
class Outcome:
    what: str                 # stimulus, in words
    cycles: int               # simulated clock cycles (0 if unknown)
    seconds: float            # wall time, build included
    passed: bool
    detail: str = ""          # the first difference, or where the log is
    waves: Path | None = None


def _select(names: str | None) -> list[str]:
    from speqmoe.errors import UserError

    if not names:
        return list(DEFAULT_SIM)
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in SIM_DESIGNS]
    if unknown or not chosen:
        raise UserError(f"unknown design(s) for `speqmoe sim`: {', '.join(unknown) or names!r}; "
                        f"available: {', '.join(SIM_DESIGNS)}")
    return chosen


def _pe(name, simulator, build, cfg, sequences, waves) -> Outcome:
    from sim.pe_flow import run_pe_cocotb

    kind, modes = ("reconfigurable", "verify,draft") if name == "reconfigurable_pe" else \
        ("fp16", "fp16")
    start = time.perf_counter()
    r = run_pe_cocotb(simulator, kind, modes, sequences, build, seed=cfg.sim.seed,
                      mul_stages=cfg.pe.mul_stages, add_stages=cfg.pe.add_stages, waves=waves)
    return Outcome(what=f"{r.sequences} dot products ({modes})", cycles=r.cycles,
                   seconds=time.perf_counter() - start, passed=r.passed,
                   detail="" if r.passed else f"see {r.log}", waves=r.waves)


def _array(name, simulator, build, cfg, sequences, waves) -> Outcome:
    from sim.array_flow import ARRAY_COUNTERS, mismatches, run_array_cocotb, standard_jobs

    rows, cols = (cfg.array.rows, cfg.array.cols) if name == "pe_array" else \
        tuple(int(x) for x in name.rsplit("_", 1)[1].split("x"))
    depth = dict(mul_stages=cfg.pe.mul_stages, add_stages=cfg.pe.add_stages)
    jobs = standard_jobs(rows, cols, cfg.sim.seed, **depth)
    start = time.perf_counter()
    # Verilator builds the hierarchical Verilog (one PE module); Icarus the flat conversion.
    run = run_array_cocotb(simulator, rows, cols, jobs, build, seed=cfg.sim.seed, stall=0.2,
                           backpressure=0.2, overlap=True, flat=simulator == "icarus",
                           waves=waves, **depth)
    bad = mismatches(run, jobs)
    if not bad and {k: run.counters[k] for k in ARRAY_COUNTERS} != run.model_counters:
        bad = [f"counters {run.counters}, flow model {run.model_counters}"]
    if not bad and run.counters["macs"] != sum(j.macs for j in jobs):
        bad = [f"macs {run.counters['macs']}, golden {sum(j.macs for j in jobs)}"]
    return Outcome(what=f"{rows}x{cols}: {len(jobs)} layer passes (draft and verify, 1-4 "
                        f"tokens), random stalls", cycles=run.cycles,
                   seconds=time.perf_counter() - start, passed=not bad,
                   detail="; ".join(bad[:2]), waves=run.waves)


def _cache(name, simulator, build, cfg, sequences, waves) -> Outcome:
    from sim.cache_flow import CACHE_CONFIGS, run_cache_cocotb

    c = CACHE_CONFIGS["demo"]
    start = time.perf_counter()
    result, stats = run_cache_cocotb(simulator, c, build, seed=cfg.sim.seed, ops=CACHE_OPS,
                                     check=False, waves=waves)
    lock = stats.get("lockstep", {})
    passed = result.tests > 0 and result.failed == 0 and bool(lock)
    return Outcome(what=f"{CACHE_OPS} requests in lockstep ({c.slots} slots of "
                        f"{c.expert_bytes} B, {c.data_width}-bit AXI, {c.policy.upper()})",
                   cycles=int(lock.get("cycles", 0)), seconds=time.perf_counter() - start,
                   passed=passed, detail="" if passed else _where(result), waves=result.waves)


def _accel(name, simulator, build, cfg, sequences, waves) -> Outcome:
    from sim.accel_flow import run_accel_cocotb
    from sim.accel_program import AccelParams

    p = AccelParams()
    start = time.perf_counter()
    result, stats = run_accel_cocotb(simulator, p, build, seed=cfg.sim.seed,
                                     commands=ACCEL_COMMANDS, pauses=0.2, latency=12,
                                     testcase="random_program_matches_golden_model",
                                     check=False, waves=waves)
    prog = stats.get("random_program", {})
    passed = result.tests > 0 and result.failed == 0 and bool(prog)
    return Outcome(what=f"{p.rows}x{p.cols}, {p.slots} slots of {p.expert_bytes} B: "
                        f"{prog.get('commands', ACCEL_COMMANDS)} random commands, AXI pauses",
                   cycles=0, seconds=time.perf_counter() - start, passed=passed,
                   detail="" if passed else _where(result), waves=result.waves)


def _where(result) -> str:
    from sim.runner import where

    return f"{result.failed} of {result.tests} cocotb tests failed; {where(result)}"


RUNNERS = {"reconfigurable_pe": _pe, "fp16_pe": _pe, "pe_array_2x2": _array,
           "pe_array_4x4": _array, "pe_array": _array, "expert_cache_demo": _cache,
           "accel_2x2": _accel}


def run(args) -> int:
    from speqmoe.config import load_config
    from speqmoe.errors import UserError
    from speqmoe.progress import Progress

    cfg = load_config(args.config)
    sequences = args.sequences if args.sequences is not None else cfg.sim.pe_sequences
    if sequences < 1:
        raise UserError(f"--sequences must be at least 1, not {sequences}")
    chosen = _select(args.designs)
    waves = True if args.waves else None        # None: SPEQMOE_WAVES decides
    progress = Progress("sim")
    ok = True
    total = time.perf_counter()
    for simulator in args.simulator or list(cfg.sim.simulators):
        for name in chosen:
            progress(f"{simulator}: {name} ...")
            try:
                r = RUNNERS[name](name, simulator, args.out / name / simulator, cfg, sequences,
                                  waves)
            except RuntimeError as exc:         # simulator missing
                raise UserError(str(exc)) from None
            except AssertionError as exc:       # a check inside the testbench failed
                r = Outcome(what="", cycles=0, seconds=0.0, passed=False,
                            detail=str(exc).splitlines()[0])
            verdict = "matches the golden model" if r.passed else f"MISMATCH: {r.detail}"
            rate = f", {r.cycles:,} cycles" if r.cycles else ""
            print(f"{simulator:9s} {name:17s} {r.what}{rate}, {r.seconds:.1f} s: {verdict}")
            if r.waves is not None:
                print(f"{'':9s} {'':17s} waveform: {r.waves}")
            ok &= r.passed
    print(f"{'all designs match' if ok else 'MISMATCH'} ({time.perf_counter() - total:.0f} s)")
    return 0 if ok else 1
