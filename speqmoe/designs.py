"""The generated designs, by name: what `speqmoe verilog` and `speqmoe synth` build."""

from __future__ import annotations

from typing import Callable

from speqmoe.config import Config
from speqmoe.errors import UserError


def _reconfigurable_pe(cfg: Config):
    from hw.pe import ReconfigurablePE
    return ReconfigurablePE(mul_stages=cfg.pe.mul_stages, add_stages=cfg.pe.add_stages)


def _fp16_pe(cfg: Config):
    from hw.pe import Fp16PE
    return Fp16PE(mul_stages=cfg.pe.mul_stages, add_stages=cfg.pe.add_stages)


def _pe_array(rows: int, cols: int):
    def build(cfg: Config, pe_module: str | None = None):
        from hw.array import PEArray
        return PEArray(rows, cols, mul_stages=cfg.pe.mul_stages, add_stages=cfg.pe.add_stages,
                       pe_module=pe_module)
    build.has_pes = True
    return build


def _pe_array_config(cfg: Config, pe_module: str | None = None):
    from hw.array import PEArray
    return PEArray(cfg.array.rows, cfg.array.cols, mul_stages=cfg.pe.mul_stages,
                   add_stages=cfg.pe.add_stages, pe_module=pe_module)


_pe_array_config.has_pes = True


def _expert_cache(**params):
    # Synthesis configurations: experts of two bus words, because generic synthesis maps the
    # expert SRAM to flip-flops; the figures measure the controller and DMA logic.
    def build(cfg: Config):
        from hw.expert_cache import ExpertCacheController
        return ExpertCacheController(**params)
    build.params = params
    return build


def _expert_cache_demo(cfg: Config):
    # The configuration the demo simulates: 64-bit bus, 16 slots of 2.5 KiB, LRU.
    from sim.cache_flow import CACHE_CONFIGS
    return CACHE_CONFIGS["demo"].build()


def _checked(table: str, build):
    """*build*'s ValueError (a parameter the component rejects) as one line naming *table*."""
    try:
        return build()
    except ValueError as exc:
        raise UserError(f"[{table}]: {exc}") from None


def _expert_cache_config(cfg: Config):
    from hw.expert_cache import ExpertCacheController
    return _checked("cache", lambda: ExpertCacheController(**cfg.cache.params()))


def _accel_config(cfg: Config, pe_module: str | None = None):
    from hw.accel import Accelerator
    p = cfg.accel.params()
    return _checked("accel", lambda: Accelerator(p.pop("rows"), p.pop("cols"),
                                                 pe_module=pe_module, **p))


_accel_config.has_pes = True


def _accel(rows: int, cols: int, **params):
    def build(cfg: Config, pe_module: str | None = None):
        from hw.accel import Accelerator
        return Accelerator(rows, cols, pe_module=pe_module, **params)
    build.params = dict(params, rows=rows, cols=cols)
    build.has_pes = True
    return build


DESIGNS: dict[str, Callable] = {
    "reconfigurable_pe": _reconfigurable_pe,
    "fp16_pe": _fp16_pe,
    "expert_cache_w64_s4": _expert_cache(slots=4, data_width=64, expert_bytes=16, policy="lru"),
    "expert_cache_w128_s16": _expert_cache(slots=16, data_width=128, expert_bytes=32,
                                           policy="lfu"),
    "expert_cache": _expert_cache_config,
    "expert_cache_demo": _expert_cache_demo,
    "pe_array_2x2": _pe_array(2, 2),
    "pe_array_4x4": _pe_array(4, 4),
    "pe_array": _pe_array_config,
    # The accelerator top: 2x2 / 64-bit / 4 slots (small memories, so that generic synthesis,
    # which turns every memory into flip-flops, stays minutes) and 4x4 / 256-bit / 8 slots.
    # Both with pipelined PEs (4/3, the default depth: the array interleaves 4 tiles).
    "accel_2x2": _accel(2, 2, slots=4, expert_bytes=256, k_max=64, n_max=64, fifo_lines=32,
                        mul_stages=4, add_stages=3),
    "accel_4x4": _accel(4, 4, slots=8, expert_bytes=16384, k_max=1024, n_max=1024,
                        mul_stages=4, add_stages=3),
    "accel": _accel_config,
}

def describe(name: str, cfg: Config) -> str:
    """One line on what design *name* is, with the parameters *cfg* gives it."""
    depth = f"mul_stages={cfg.pe.mul_stages}, add_stages={cfg.pe.add_stages}"
    from hw.pe import BASE_LATENCY

    latency = BASE_LATENCY + cfg.pe.mul_stages + cfg.pe.add_stages
    lines = {
        "reconfigurable_pe": f"PE with BSFP-4 draft and FP16 verify modes, 4 lanes of FP16 x FP16 "
                             f"-> binary32 MAC ({depth}: latency {latency} cycles, 1 beat/cycle)",
        "fp16_pe": f"FP16-only PE, the area baseline of reconfigurable_pe ({depth})",
        "pe_array_2x2": f"2x2 array of reconfigurable PEs, weight-streaming, output-stationary "
                        f"({depth})",
        "pe_array_4x4": f"4x4 array of reconfigurable PEs ({depth})",
        "pe_array": f"{cfg.array.rows}x{cfg.array.cols} array of reconfigurable PEs from [array] "
                    f"({depth})",
    }
    if name in lines:
        return lines[name]
    if name == "expert_cache":
        c = cfg.cache
        return (f"expert-cache controller + AXI4 read DMA from [cache]: {c.data_width}-bit bus, "
                f"{c.slots} slots of {c.expert_bytes:,} bytes, {c.policy.upper()}, "
                f"{c.n_layers} layers x {c.n_experts} experts")
    if name == "accel":
        a = cfg.accel
        return (f"accelerator top from [accel]: {a.rows}x{a.cols} array (mul_stages="
                f"{a.mul_stages}, add_stages={a.add_stages}), "
                f"{16 * a.rows * a.cols}-bit AXI4, {a.slots} expert slots of "
                f"{a.expert_bytes:,} bytes, K up to {a.k_max}, N up to {a.n_max}")
    if name == "expert_cache_demo":
        from sim.cache_flow import CACHE_CONFIGS
        c = CACHE_CONFIGS["demo"]
        return (f"expert-cache controller + AXI4 read DMA as the demo simulates it: "
                f"{c.data_width}-bit bus, {c.slots} slots of {c.expert_bytes:,} bytes, "
                f"{c.policy.upper()}, {c.n_layers} layers x {c.n_experts} experts")
    p = DESIGNS[name].params
    if name.startswith("expert_cache"):
        return (f"expert-cache controller + AXI4 read DMA: {p['data_width']}-bit bus, "
                f"{p['slots']} slots of {p['expert_bytes']} bytes, {p['policy'].upper()}")
    return (f"accelerator top: {p['rows']}x{p['cols']} array (mul_stages="
            f"{p.get('mul_stages', 0)}, add_stages={p.get('add_stages', 0)}), "
            f"{16 * p['rows'] * p['cols']}-bit AXI4, {p['slots']} expert slots of "
            f"{p['expert_bytes']:,} bytes, K up to {p['k_max']}, N up to {p['n_max']}")


# `speqmoe verilog` writes every design by default (`pe_array`, from [array], is pe_array_4x4
# unless configured); `speqmoe synth` the PEs, the caches and the
# small top (about 90 s); the arrays and the large top take many minutes: name them.
DEFAULT_VERILOG = [n for n in DESIGNS if n != "pe_array"]
DEFAULT_DESIGNS = ["reconfigurable_pe", "fp16_pe", "expert_cache_w64_s4", "expert_cache_w128_s16",
                   "accel_2x2"]


def select(names: str | None, default: list[str] | None = None) -> list[str]:
    """Parse a comma-separated design list (``None``: *default*, else the synthesis defaults)."""
    if not names:
        return list(default if default is not None else DEFAULT_DESIGNS)
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in DESIGNS]
    if unknown:
        raise UserError(f"unknown design(s) {', '.join(unknown)}; available: {', '.join(DESIGNS)}")
    return chosen


def build(name: str, cfg: Config):
    return DESIGNS[name](cfg)


def netlist(name: str, cfg: Config):
    """Design *name* and its Verilog: the arrays and the tops instantiate one PE module,
    ``<name>_pe``, defined in the same text (:mod:`sim.netlist`). Returns (component, text)."""
    from hw.array import array_pe
    from sim.netlist import convert

    builder = DESIGNS[name]
    if not getattr(builder, "has_pes", False):
        component = builder(cfg)
        return component, convert(component, name)
    component = builder(cfg, pe_module=f"{name}_pe")
    pe = array_pe(component.mul_stages, component.add_stages)
    return component, convert(component, name, pe=pe)


def write(name: str, cfg: Config, out_dir):
    """Write design *name*'s Verilog (with its header), interface files and FuseSoC core
    (``<name>.core``, :mod:`speqmoe.fusesoc`) into *out_dir*; returns the path of the ``.v``."""
    from pathlib import Path

    from speqmoe.fusesoc import write_core
    from speqmoe.interface import verilog_header, write_interface

    Path(out_dir).mkdir(parents=True, exist_ok=True)      # an unwritable folder fails first
    component, text = netlist(name, cfg)
    desc = write_interface(component, name, describe(name, cfg), out_dir)
    path = Path(out_dir) / f"{name}.v"
    path.write_text(verilog_header(desc) + text)
    write_core(name, describe(name, cfg), path)
    return path
