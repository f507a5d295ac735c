"""``speqmoe bench``: run every benchmark section and write one flat JSON object.

A section is a module in :mod:`speqmoe.benches` with a ``run(ctx) -> dict`` function
returning named numbers. The union is written to ``<out>/results.json``; beside it,
``<out>/provenance.json`` says for every key which section produced it and the command
that reproduces it. Running only some sections (``--only``) updates those keys and
keeps the others.
"""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import speqmoe.benches as _benches
from speqmoe.errors import UserError
from speqmoe.progress import Progress


@dataclass
class BenchContext:
    out_dir: Path
    progress: Progress
    build_dir: Path = field(default_factory=lambda: Path("build"))


def available_sections() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(_benches.__path__))


def run_benches(out_dir: Path, only: list[str] | None = None, *, quiet: bool = False) -> dict:
    sections = available_sections()
    if only:
        unknown = sorted(set(only) - set(sections))
        if unknown:
            raise UserError(f"unknown bench section(s) {', '.join(unknown)}; "
                            f"available: {', '.join(sections)}")
        sections = [s for s in sections if s in only]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.json"
    prov_path = out_dir / "provenance.json"
    results = json.loads(results_path.read_text()) if results_path.exists() and only else {}
    provenance = json.loads(prov_path.read_text()) if prov_path.exists() and only else {}
    progress = Progress("bench", quiet=quiet)
    for name in sections:
        module = importlib.import_module(f"speqmoe.benches.{name}")
        progress(f"section {name} ...")
        start = time.perf_counter()
        ctx = BenchContext(out_dir=out_dir, progress=progress.child(f"bench/{name}"))
        values = module.run(ctx)
        for key, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise RuntimeError(f"bench section {name} produced a non-finite {key}={value}")
            results[key] = value
            provenance[key] = {"section": name,
                               "command": f"python -m speqmoe bench --only {name}"}
        progress(f"section {name} done in {time.perf_counter() - start:.1f}s")
        results_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        prov_path.write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return results
