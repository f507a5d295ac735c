"""Configuration of the generated hardware and its flows, read from TOML.

Every table and key is optional; unknown tables or keys are errors (a typo must not
silently fall back to a default). Example::

    [sim]
    seed = 7
    pe_sequences = 2000

    [array]
    rows = 4
    cols = 4

    [cache]
    slots = 32
    policy = "lfu"
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
class CosimConfig:
    """The accelerator and host memory of ``speqmoe cosim`` (docs/cosim.md).

    ``bandwidth`` is read bytes per cycle (0: one bus line per cycle); ``clock_mhz`` only
    converts cycles into seconds and is an assumption until an FPGA or ASIC flow measures it.
    """
    rows: int = 4
    cols: int = 4
    slots: int = 16
    policy: str = "lru"
    latency: int = 64
    bandwidth: int = 0
    clock_mhz: int = 1000
    gamma: int = 3
    tau: float = 0.5

    def validate(self, where: str) -> None:
        pes = self.rows * self.cols
        if self.rows < 1 or self.cols < 1 or pes < 4 or pes & (pes - 1):
            raise UserError(f"{where}: rows * cols must be a power of two >= 4, not "
                            f"{self.rows} x {self.cols}")
        if self.slots < 1:
            raise UserError(f"{where}.slots must be at least 1, not {self.slots}")
        if self.policy not in ("lru", "lfu", "fifo"):
            raise UserError(f"{where}.policy must be lru, lfu or fifo, not {self.policy!r}")
        if self.latency < 0:
            raise UserError(f"{where}.latency must be >= 0 cycles, not {self.latency}")
        if not 0 <= self.bandwidth <= 2 * pes:
            raise UserError(f"{where}.bandwidth must be 0 (one line per cycle) or 1..{2 * pes} "
                            f"bytes per cycle, not {self.bandwidth}")
        if self.clock_mhz < 1:
            raise UserError(f"{where}.clock_mhz must be positive, not {self.clock_mhz}")
        if not 1 <= self.gamma <= 3:
            raise UserError(f"{where}.gamma must be 1..3 (gamma + 1 tokens fill the PE's 4 "
                            f"lanes), not {self.gamma}")
        if not self.tau >= 0:
            raise UserError(f"{where}.tau must be >= 0, not {self.tau}")


@dataclass
class PeConfig:
    """Pipeline depth of the PEs and PE arrays that ``verilog``, ``synth``, ``sim`` and
    ``fpga`` build (the accelerator top takes its own depth from ``[accel]``).

    ``add_stages`` registers inside the binary32 adder make the PE interleave
    ``add_stages + 1`` dot products (docs/fpga.md, "Pipelining"). The default, 4 and 3, is
    the fastest depth of the ``make fpga`` sweep: the fourth multiplier stage registers each
    lane's operands in front of the DSP block's input registers (on the ULX3S' LFE5U-85F the
    PE closes at 121.1 MHz and the 2x2 array at 109.1 MHz, against 107.8 and 91.4 at 3 and 3).
    """
    mul_stages: int = 4
    add_stages: int = 3

    def validate(self, where: str) -> None:
        from hw.pe import depth_problem

        problem = depth_problem(self.mul_stages, self.add_stages)
        if problem:
            raise UserError(f"{where}.{problem}")


@dataclass
class FpgaConfig:
    """``speqmoe fpga``: the amaranth-boards ECP5 board and nextpnr's placement seed."""
    board: str = "ulx3s_85f"
    seed: int = 1

    def validate(self, where: str) -> None:
        if self.seed < 0:
            raise UserError(f"{where}.seed must be >= 0, not {self.seed}")


@dataclass
class CacheConfig:
    """The expert-cache controller + AXI4 read DMA that ``speqmoe verilog`` and ``synth``
    build as design ``expert_cache`` (docs/expert_cache.md). The defaults hold the shipped
    tiny LM's experts: 4 layers x 16 experts of 96 KiB (three 128 x 128 FP16 matrices,
    BSFP planes), 16 slots (1.5 MiB of expert SRAM), a 64-bit bus. The controller checks the
    values when the design is built."""
    slots: int = 16
    expert_bytes: int = 98304
    n_layers: int = 4
    n_experts: int = 16
    data_width: int = 64
    max_burst: int = 16
    policy: str = "lru"
    queue_depth: int = 2

    def validate(self, where: str) -> None:
        _positive(self, where, "slots", "expert_bytes", "n_layers", "n_experts", "max_burst")

    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class AccelConfig:
    """The accelerator top that ``speqmoe verilog`` builds as design ``accel``
    (docs/accel.md). The defaults are the top that runs the shipped tiny LM in
    ``speqmoe cosim``: a 4x4 array on a 256-bit bus, 16 slots of the model's 96 KiB experts,
    K up to 128 (d_model, d_expert) and N up to 256 (the vocabulary), PEs pipelined 4/3
    (``add_stages`` 0, 1 or 3: the array interleaves ``add_stages + 1`` tiles, which must
    divide the 4 verify tiles of a draft tile)."""
    rows: int = 4
    cols: int = 4
    slots: int = 16
    expert_bytes: int = 98304
    n_layers: int = 4
    n_experts: int = 16
    policy: str = "lru"
    k_max: int = 128
    n_max: int = 256
    queue_depth: int = 2
    cmd_depth: int = 8
    max_burst: int = 16
    fifo_lines: int = 64
    mul_stages: int = 4
    add_stages: int = 3

    def validate(self, where: str) -> None:
        from hw.pe import depth_problem

        _positive(self, where, "rows", "cols", "slots", "expert_bytes", "n_layers",
                  "n_experts", "k_max", "n_max", "cmd_depth", "max_burst", "fifo_lines")
        problem = depth_problem(self.mul_stages, self.add_stages)
        if problem:
            raise UserError(f"{where}.{problem}")
        if self.add_stages not in (0, 1, 3):
            raise UserError(f"{where}.add_stages must be 0, 1 or 3 (the interleave "
                            f"add_stages + 1 must divide 4), not {self.add_stages}")

    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _positive(table, where: str, *keys: str) -> None:
    for key in keys:
        if getattr(table, key) < 1:
            raise UserError(f"{where}.{key} must be at least 1, not {getattr(table, key)}")


@dataclass
class Config:
    sim: SimConfig = field(default_factory=SimConfig)
    array: ArrayConfig = field(default_factory=ArrayConfig)
    cosim: CosimConfig = field(default_factory=CosimConfig)
    pe: PeConfig = field(default_factory=PeConfig)
    fpga: FpgaConfig = field(default_factory=FpgaConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    accel: AccelConfig = field(default_factory=AccelConfig)


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
