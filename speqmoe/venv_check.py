"""Check the Python that ``make setup`` uses, and the ``.venv`` it would reuse.

Run by ``make setup`` with the system interpreter, before anything is installed, so it
uses only the standard library (and runs on interpreters too old for speqmoe, to say so):

    python3 speqmoe/venv_check.py .venv

It prints the interpreter it uses; exits 1 with one line if that interpreter's version is
outside ``requires-python`` of ``pyproject.toml``; and removes a ``.venv`` made by another
Python (another version, or one whose interpreter no longer runs) so that setup rebuilds it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def requires_python(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The ``requires-python`` specifier, e.g. ``">=3.11,<3.12"``."""
    found = re.search(r'^requires-python\s*=\s*"([^"]+)"', pyproject.read_text(), re.M)
    if not found:
        raise ValueError(f"{pyproject} has no requires-python")
    return found.group(1)


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def allowed(version: str, spec: str) -> bool:
    """Whether *version* (``"3.11.7"``) meets *spec*: comma-separated ``>=``, ``>``, ``<``,
    ``<=``, ``==`` or ``!=`` clauses on dotted versions (compared on the clause's length)."""
    have = _key(version)
    for clause in spec.split(","):
        op, want = re.fullmatch(r"\s*(>=|<=|==|!=|>|<)\s*([0-9.]+)\s*", clause).groups()
        want_key = _key(want)
        mine = have[:len(want_key)]
        ok = {">=": mine >= want_key, "<=": mine <= want_key, ">": mine > want_key,
              "<": mine < want_key, "==": mine == want_key, "!=": mine != want_key}[op]
        if not ok:
            return False
    return True


def venv_python_version(venv: Path) -> str | None:
    """``major.minor.micro`` of the interpreter of *venv*, or None if it does not run."""
    python = venv / "bin" / "python"
    try:
        out = subprocess.run([str(python), "-c", "import sys; print(*sys.version_info[:3], sep='.')"],
                             capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def stale_reason(venv: Path, current: str) -> str | None:
    """Why *venv* cannot be reused by Python *current*, or None (also when it does not exist)."""
    if not venv.exists():
        return None
    theirs = venv_python_version(venv)
    if theirs is None:
        return "its interpreter does not run"
    if _key(theirs)[:2] != _key(current)[:2]:
        return f"it was made by Python {theirs}"
    return None


def main(argv: list[str]) -> int:
    venv = Path(argv[1]) if len(argv) > 1 else ROOT / ".venv"
    current = ".".join(str(p) for p in sys.version_info[:3])
    spec = requires_python()
    if not allowed(current, spec):
        print(f"error: speqmoe needs Python {spec}, but {sys.executable} is {current}; "
              f"run e.g. 'make setup PYTHON_SYS=python3.11'", file=sys.stderr)
        return 1
    print(f"setup uses Python {current} ({sys.executable})")
    reason = stale_reason(venv, current)
    if reason:
        print(f"rebuilding {venv}: {reason}")
        shutil.rmtree(venv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
