"""speqmoe fpga: place and route on an ECP5 board (amaranth-boards, YoWASP nextpnr).

Builds each design out of context (registers around every port) for its LUT4, flip-flop,
DSP and block-RAM use and its Fmax; sweeps the PE's pipeline depth; and builds a bitstream
of the self-checking harness (a small PE array that runs a program from ROM and lights a
pass or fail LED). Writes <out>/summary.json (docs/fpga.md).
"""

from __future__ import annotations

import json
from pathlib import Path

# Out-of-context designs by default: the PEs, both arrays, a cache controller and the small
# accelerator top. (pe_array_4x4 is about as large as the LFE5U-85F; the flow reports it.)
DEFAULT_DESIGNS = ["reconfigurable_pe", "fp16_pe", "pe_array_2x2", "pe_array_4x4",
                   "expert_cache_w128_s16", "accel_2x2"]
# The PE pipeline-depth sweep: (mul_stages, add_stages).
SWEEP = [(0, 0), (1, 1), (1, 2), (2, 2), (2, 3), (3, 3), (4, 3)]
SELFCHECK_SHAPE = (2, 2)
# Builds side by side: one per core of the 2-core machines the flow's times are measured on.
DEFAULT_JOBS = 2
SELFCHECK_SEED = 11


def add_parser(sub):
    p = sub.add_parser("fpga", help="ECP5 place and route: utilisation, Fmax, a self-checking bitstream",
                       description=__doc__)
    p.add_argument("--out", type=Path, default=Path("build/fpga"), help="output folder")
    p.add_argument("--config", type=Path, default=None, help="configuration TOML ([fpga], [pe])")
    p.add_argument("--board", default=None,
                   help="amaranth-boards ECP5 board (default ulx3s_85f; --list-boards names them)")
    p.add_argument("--designs", default=None,
                   help=f"comma-separated designs (default: {','.join(DEFAULT_DESIGNS)}); "
                        "'none' builds none")
    p.add_argument("--no-sweep", action="store_true", help="skip the PE pipeline-depth sweep")
    p.add_argument("--no-bitstream", action="store_true", help="skip the self-checking bitstream")
    p.add_argument("--seed", type=int, default=None, help="nextpnr placement seed (default 1)")
    p.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                   help=f"builds run side by side (default {DEFAULT_JOBS})")
    p.add_argument("--target-mhz", type=float, default=None,
                   help="clock constraint of the out-of-context builds (default 150; the "
                        "bitstream keeps the board's clock)")
    p.add_argument("--list-boards", action="store_true", help="name the ECP5 boards and exit")
    p.add_argument("--max-minutes", type=float, default=75,
                   help="per design, stop nextpnr after this long and report the design's "
                        "utilisation without an Fmax (default 75: the 4x4 array takes about "
                        "an hour)")
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object instead of the table "
                        "(progress goes to stderr)")
    p.set_defaults(func=run)
    return p


def sweep_name(kind: str, mul_stages: int, add_stages: int) -> str:
    return f"{kind}_m{mul_stages}a{add_stages}"


def selfcheck_top(rows: int, cols: int, seed: int, cfg=None):
    """The self-checking harness (PEs of the ``[pe]`` depth) and its board wrapper (LEDs)."""
    from hw.selfcheck import SelfCheck
    from sim.selfcheck import program
    from speqmoe.config import Config
    from speqmoe.fpga import SelfCheckBoard

    pe = (cfg or Config()).pe
    depth = dict(mul_stages=pe.mul_stages, add_stages=pe.add_stages)
    check = SelfCheck(rows, cols, program(rows, cols, seed, interleave=pe.add_stages + 1), **depth)
    return check, SelfCheckBoard(check)


def run_fpga(cfg, out: Path, *, board: str, designs, sweep: bool, bitstream: bool, seed: int,
             jobs: int = 1, target_mhz: float | None = None, max_minutes: float = 75,
             progress=print) -> dict:
    """Build the designs (and the sweep and the bitstream), *jobs* at a time; return the summary."""
    from concurrent.futures import ThreadPoolExecutor

    from hw.pe import Fp16PE, ReconfigurablePE
    from speqmoe import designs as registry
    from speqmoe.fpga import OOC_TARGET_MHZ, out_of_context, place_and_route, write_summary
    from speqmoe.synth import component_parameters

    out = Path(out)
    target = target_mhz or OOC_TARGET_MHZ
    tasks = [(name, out / name, lambda name=name: registry.build(name, cfg)) for name in designs]
    if sweep:
        for kind, cls in (("reconfigurable_pe", ReconfigurablePE), ("fp16_pe", Fp16PE)):
            for ms, ad in SWEEP:
                tasks.append((sweep_name(kind, ms, ad), out / "sweep" / sweep_name(kind, ms, ad),
                              lambda cls=cls, ms=ms, ad=ad: cls(mul_stages=ms, add_stages=ad)))

    def build(task):
        name, folder, make = task
        progress(f"{name}: synthesis, place and route on {board} ...")
        component = make()
        return name, out_of_context(component, name, board, folder, seed=seed, target_mhz=target,
                                    route_timeout=60 * max_minutes), component_parameters(component)

    def bits():
        rows, cols = SELFCHECK_SHAPE
        name = f"selfcheck_{rows}x{cols}"
        progress(f"{name}: bitstream for {board} ...")
        check, top = selfcheck_top(rows, cols, SELFCHECK_SEED, cfg)
        return (name, place_and_route(top, name, board, out / name, seed=seed, bitstream=True),
                component_parameters(check))

    work = [lambda t=t: build(t) for t in tasks] + ([bits] if bitstream else [])
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for name, r, params in pool.map(lambda f: f(), work):
            fmax = f"{r.fmax_mhz:.1f} MHz" if r.fmax_mhz else "no Fmax"
            fit = f" (does not fit: {r.error})" if not r.fits else (f" ({r.error})" if r.error else "")
            progress(f"{name}: {r.lut4} LUT4, {r.ff} FF, {r.dsp} DSP, {r.ebr} EBR, {fmax}, "
                     f"{r.seconds:.0f} s{fit}")
            write_summary(out / "summary.json", {name: r}, parameters={name: params})
            if name.startswith("selfcheck"):
                progress(f"bitstream: {out / name / (name + '.bit')}")
    return json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}


def run(args) -> int:
    from speqmoe import designs as registry
    from speqmoe.config import load_config
    from speqmoe.errors import UserError
    from speqmoe.fpga import board as find_board, boards
    from speqmoe.progress import Progress

    if args.list_boards:
        for name, cls in boards().items():
            print(f"{name:28s} {cls.device} {cls.package} speed {cls.speed}")
        return 0
    cfg = load_config(args.config)
    board = args.board or cfg.fpga.board
    find_board(board)                               # unknown boards: one line, exit 2
    seed = cfg.fpga.seed if args.seed is None else args.seed
    if seed < 0:
        raise UserError(f"--seed must be >= 0, not {seed}")
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, not {args.jobs}")
    if not args.max_minutes > 0:
        raise UserError(f"--max-minutes must be positive, not {args.max_minutes}")
    if args.target_mhz is not None and not 1 <= args.target_mhz <= 1000:
        raise UserError(f"--target-mhz must be 1..1000, not {args.target_mhz}")
    names = [] if args.designs == "none" else registry.select(args.designs, DEFAULT_DESIGNS)
    progress = Progress("fpga")
    try:
        summary = run_fpga(cfg, args.out, board=board, designs=names, sweep=not args.no_sweep,
                           bitstream=not args.no_bitstream, seed=seed, jobs=args.jobs,
                           target_mhz=args.target_mhz, max_minutes=args.max_minutes,
                           progress=progress)
    except RuntimeError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return 0
    print(f"{'design':28s} {'LUT4':>7s} {'FF':>7s} {'DSP':>4s} {'EBR':>4s} {'Fmax MHz':>9s} {'s':>6s}")
    for name, r in summary.get("designs", {}).items():
        fmax = (f"{r['fmax_mhz']:.1f}" if r.get("fmax_mhz") else
                "no fit" if not r["fits"] else "unrouted")
        print(f"{name:28s} {r['lut4']:7d} {r['ff']:7d} {r['dsp']:4d} {r['ebr']:4d} {fmax:>9s} "
              f"{r['seconds']:6.0f}")
    print(f"wrote {args.out / 'summary.json'}")
    return 0
