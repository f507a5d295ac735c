"""speqmoe bench: measure speed, area and accuracy figures into results.json."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("bench", help="run benchmarks, write build/bench/results.json",
                       description=__doc__)
    p.add_argument("--out", type=Path, default=Path("build/bench"), help="output folder")
    p.add_argument("--only", default=None,
                   help="comma-separated sections to run (others keep their last values)")
    p.add_argument("--list", action="store_true", help="list the sections and exit")
    p.add_argument("--config", type=Path, default=None, help="configuration TOML (unused by benches)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from speqmoe.bench import available_sections, run_benches

    if args.list:
        import speqmoe.benches
        from speqmoe.sections import listing

        print(listing(speqmoe.benches, available_sections()))
        return 0
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    results = run_benches(args.out, only)
    print(json.dumps(results, indent=2, sort_keys=True))
    print(f"wrote {args.out / 'results.json'}")
    return 0
