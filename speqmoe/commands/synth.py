"""speqmoe synth: synthesize the designs with Yosys; write build/synth/summary.json."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("synth", help="Yosys synthesis: cells, transistors, logic depth",
                       description=__doc__)
    p.add_argument("--out", type=Path, default=Path("build/synth"), help="output folder")
    p.add_argument("--config", type=Path, default=None, help="configuration TOML")
    p.add_argument("--designs", default=None,
                   help="comma-separated design names (default: the PEs, the two expert-cache "
                        "configurations and accel_2x2; the arrays and accel_4x4 take many "
                        "minutes: pe_array_2x2, pe_array_4x4, accel_4x4)")
    p.set_defaults(func=run)
    return p


def synth_designs(names, cfg, out: Path, progress=print) -> dict:
    """Synthesize *names* into *out*; merge them into ``out/summary.json`` and return its
    designs (name -> figures)."""
    from speqmoe import designs
    from speqmoe.synth import synthesize, write_summary

    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names:
        progress(f"synthesizing {name} ...")
        r = synthesize(designs.build(name, cfg), name, out)
        results[name] = r
        progress(f"{name}: {r.cells} cells, {r.transistors} transistors, "
                 f"logic depth {r.logic_depth}, {r.seconds:.1f}s")
    return write_summary(out / "summary.json", results)


def run(args) -> int:
    from speqmoe import designs
    from speqmoe.config import load_config
    from speqmoe.progress import Progress

    cfg = load_config(args.config)
    summary = synth_designs(designs.select(args.designs), cfg, args.out, Progress("synth"))
    print(f"{'design':24s} {'cells':>8s} {'transistors':>12s} {'depth':>6s}")
    for name, r in summary.items():
        print(f"{name:24s} {r['cells']:8d} {r['transistors']:12d} {r['logic_depth']:6d}")
    print(f"wrote {args.out / 'summary.json'}")
    return 0
