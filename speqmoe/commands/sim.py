"""speqmoe sim: simulate the generated PE Verilog against the golden model (cocotb)."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("sim", help="cocotb simulation of the PEs vs the golden model",
                       description=__doc__)
    p.add_argument("--out", type=Path, default=Path("build/sim"), help="build folder")
    p.add_argument("--config", type=Path, default=None, help="configuration TOML ([sim])")
    p.add_argument("--sequences", type=int, default=None,
                   help="random dot products per mode (default: [sim] pe_sequences)")
    p.add_argument("--simulator", action="append", choices=["verilator", "icarus"], default=None,
                   help="simulator(s) to use (default: [sim] simulators)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from sim.pe_flow import run_pe_cocotb
    from speqmoe.config import load_config
    from speqmoe.errors import UserError
    from speqmoe.progress import Progress

    cfg = load_config(args.config)
    sequences = args.sequences if args.sequences is not None else cfg.sim.pe_sequences
    if sequences < 1:
        raise UserError(f"--sequences must be at least 1, not {sequences}")
    progress = Progress("sim")
    ok = True
    for simulator in args.simulator or list(cfg.sim.simulators):
        for kind, modes in (("reconfigurable", "verify,draft"), ("fp16", "fp16")):
            progress(f"{simulator}: {kind} PE, {sequences} random dot products per mode ...")
            try:
                r = run_pe_cocotb(simulator, kind, modes, sequences,
                                  args.out / f"pe_{kind}" / simulator, seed=cfg.sim.seed,
                                  mul_stages=cfg.pe.mul_stages, add_stages=cfg.pe.add_stages)
            except RuntimeError as exc:
                raise UserError(str(exc)) from None
            verdict = "bit-exact" if r.passed else "MISMATCH (see the sim.log)"
            print(f"{simulator:9s} {kind:15s} {r.sequences:6d} dot products, {r.cycles:7d} cycles, "
                  f"{r.cycles_per_s:8.0f} cycles/s: {verdict}")
            ok &= r.passed
    return 0 if ok else 1
