"""Configuration of the generated hardware and its flows, read from TOML.

Every table and key is optional; unknown tables or keys are errors (a typo must not
silently fall back to a default). Example::

    [sim]
    seed = 7
    pe_sequences = 2000

    [array]
    rows = 4
    cols = 4
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from speqmoe.errors import UserError


@dataclass
class SimConfig:
    """Simulation settings of the flows (not of the tests)."""
    seed: int = 20261128
    pe_sequences: int = 500
    simulators: tuple[str, ...] = ("verilator",)

    def validate(self, where: str) -> None:
        if self.pe_sequences < 1:
            raise UserError(f"{where}.pe_sequences must be at least 1, not {self.pe_sequences}")
        bad = [s for s in self.simulators if s not in ("verilator", "icarus")]
        if bad or not self.simulators:
            raise UserError(f"{where}.simulators must name verilator and/or icarus, not "
                            f"{list(self.simulators)!r}")


@dataclass
class ArrayConfig:
    rows: int = 4
    cols: int = 4

    def validate(self, where: str) -> None:
        for key in ("rows", "cols"):
            if getattr(self, key) < 1:
                raise UserError(f"{where}.{key} must be at least 1, not {getattr(self, key)}")


@dataclass
class Config:
    sim: SimConfig = field(default_factory=SimConfig)
    array: ArrayConfig = field(default_factory=ArrayConfig)


def _reject_unknown(given, known, what: str, where: str) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise UserError(f"{where}: unknown {what} {', '.join(unknown)}; known: {', '.join(known)}")


def _fill(cls, table: dict, where: str):
    """Build a *cls* from a TOML table; every value must have its default's type exactly
    (a list for a tuple; ``true`` is not an integer)."""
    obj = cls()
    _reject_unknown(table, [f.name for f in fields(cls)], "key(s)", where)
    for key, value in table.items():
        default = getattr(obj, key)
        if isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise UserError(f"{where}.{key} must be a list of strings, not {value!r}")
            value = tuple(value)
        elif type(value) is not type(default):
            raise UserError(f"{where}.{key} must be {type(default).__name__}, not {value!r}")
        setattr(obj, key, value)
    obj.validate(where)
    return obj


def load_config(path: Path | None) -> Config:
    """Read a TOML configuration; ``None`` gives the default configuration."""
    if path is None:
        return Config()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"configuration file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    _reject_unknown(data, [f.name for f in fields(Config)], "table(s)", str(path))
    cfg = Config()
    for name, value in data.items():
        if not isinstance(value, dict):
            raise UserError(f"{path}: [{name}] must be a table")
        setattr(cfg, name, _fill(type(getattr(cfg, name)), value, f"{path}: [{name}]"))
    return cfg
