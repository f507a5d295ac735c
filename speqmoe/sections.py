"""What a demo or bench section is about, read from its module docstring without importing it."""

from __future__ import annotations

import ast
import re
from pathlib import Path


def describe(package, name: str) -> str:
    """The first docstring line of section *name* of *package*, without its
    "Demo section ``name``:" / "Bench section ``name``:" prefix."""
    source = Path(package.__path__[0]) / f"{name}.py"
    doc = ast.get_docstring(ast.parse(source.read_text())) or ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    return re.sub(r"^(?:Demo|Bench) section(?: ``\w+``)?:\s*", "", first)


def listing(package, names) -> str:
    """One line per section: its name and what it is about."""
    width = max((len(n) for n in names), default=0)
    return "\n".join(f"{n:<{width}}  {describe(package, n)}" for n in names)
