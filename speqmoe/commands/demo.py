"""speqmoe demo: generate, simulate, synthesize and evaluate the default configuration."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("demo", help="the main job: Verilog, simulation, synthesis, report",
                       description=__doc__)
    p.add_argument("--out", type=Path, default=Path("build/report"), help="report folder")
    p.add_argument("--build", type=Path, default=Path("build"), help="build folder")
    p.add_argument("--config", type=Path, default=None, help="configuration TOML")
    p.add_argument("--only", default=None, help="comma-separated demo sections")
    p.add_argument("--list", action="store_true", help="list the sections (in run order) and exit")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from speqmoe.config import load_config
    from speqmoe.demo import available_sections, run_demo

    if args.list:
        import speqmoe.demos
        from speqmoe.sections import listing

        print(listing(speqmoe.demos, [name for _, name in available_sections()]))
        return 0
    config = load_config(args.config)
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    sections = run_demo(args.out, args.build, config=config, only=only)
    print()
    print("speqmoe demo summary")
    print("====================")
    for s in sections:
        print(f"{s.title}:")
        for line in s.summary:
            print(f"  {line}")
    print(f"report: {args.out / 'report.md'}")
    return 0 if all(s.ok for s in sections) else 1
