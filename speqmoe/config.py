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


@dataclass
class ArrayConfig:
    rows: int = 4
    cols: int = 4


@dataclass
class Config:
    sim: SimConfig = field(default_factory=SimConfig)
    array: ArrayConfig = field(default_factory=ArrayConfig)


def _fill(cls, table: dict, where: str):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    obj = cls()
    for key, value in table.items():
        default = getattr(obj, key)
        if isinstance(default, tuple):
            if not isinstance(value, list):
                raise UserError(f"{where}.{key} must be a list, not {value!r}")
            value = tuple(value)
        elif isinstance(default, bool) or not isinstance(value, type(default)):
            if not (isinstance(default, bool) and isinstance(value, bool)):
                raise UserError(f"{where}.{key} must be {type(default).__name__}, not {value!r}")
        setattr(obj, key, value)
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
    sections = {f.name: f for f in fields(Config)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise UserError(f"{path}: unknown table(s) {', '.join(unknown)}; known: {', '.join(sections)}")
    cfg = Config()
    for name, value in data.items():
        if not isinstance(value, dict):
            raise UserError(f"{path}: [{name}] must be a table")
        setattr(cfg, name, _fill(type(getattr(cfg, name)), value, f"{path}: [{name}]"))
    return cfg
