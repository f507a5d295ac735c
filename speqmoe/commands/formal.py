"""speqmoe formal: prove the DMA and expert-cache invariants with SymbiYosys (BMC, yices).

Each proof prints one line: name, depth, PASS/FAIL, run time and, on failure, the
counterexample VCD and the failed assertions. The exit status is 1 if any proof fails.
See sim/formal.py for the harnesses, the properties and the environment assumptions.
"""

from __future__ import annotations

from pathlib import Path

from speqmoe.errors import UserError


def add_parser(sub):
    p = sub.add_parser("formal", help="prove DMA / expert-cache invariants with SymbiYosys",
                       description=__doc__)
    p.add_argument("--proofs", default=None,
                   help="comma-separated proof names (default: all but the negative control "
                        "dma_broken); see --list")
    p.add_argument("--depth", type=int, default=None,
                   help="BMC depth in cycles (default: each proof's own, larger than the tests')")
    p.add_argument("--out", type=Path, default=Path("build/formal"), help="work folder")
    p.add_argument("--timeout", type=float, default=None, help="seconds per proof")
    p.add_argument("--list", action="store_true", help="list the proofs and exit")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from sim.formal import PROOFS, run_proof

    if args.list:
        for name, (_, test_depth, depth) in PROOFS.items():
            print(f"{name:<14} depth {depth} (tests: {test_depth})")
        return 0
    if args.proofs:
        names = [n.strip() for n in args.proofs.split(",") if n.strip()]
        unknown = [n for n in names if n not in PROOFS]
        if unknown:
            raise UserError(f"unknown proof(s) {', '.join(unknown)}; "
                            f"known: {', '.join(PROOFS)}")
    else:
        names = [n for n in PROOFS if not n.endswith("_broken")]
    if args.depth is not None and args.depth < 1:
        raise UserError(f"--depth must be at least 1, not {args.depth}")
    failed = 0
    for name in names:
        depth = args.depth or PROOFS[name][2]
        try:
            result = run_proof(name, depth, args.out, timeout=args.timeout)
        except RuntimeError as exc:
            raise UserError(str(exc)) from exc
        print(result.line(), flush=True)
        if result.status not in ("PASS", "FAIL", "TIMEOUT"):
            print("\n".join(result.log.splitlines()[-20:]))
        failed += not result.passed
    return 1 if failed else 0
