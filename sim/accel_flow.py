"""Simulation flow of the accelerator top: harness, Verilog, cocotb runs and their results.

The harness (:class:`AccelHarness`) is :class:`hw.accel.Accelerator` with
:class:`hw.axi.AxiReadLatency` in front of its read channels, so that cocotbext-axi's AXI RAM
(which answers at once and serves one burst at a time) behaves like a memory with ``latency``
cycles of read latency whose bursts stay pipelined. :func:`run_accel_cocotb` writes the
harness's Verilog (the PE written once and instantiated ``rows * cols`` times), builds it and
runs :mod:`sim.tb_accel`; the testbench draws its program with
:func:`sim.accel_program.random_program` and checks every command against
:class:`golden.accel.AccelModel`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.accel import Accelerator
from hw.axi import AxiLiteSignature, AxiReadLatency, AxiSignature
from hw.array import array_pe
from sim.accel_program import AccelParams

READ_FIELDS = ("arid", "araddr", "arlen", "arsize", "arburst", "arvalid", "arready",
               "rid", "rdata", "rresp", "rlast", "rvalid", "rready")


def accelerator(params: AccelParams, *, pe_module: str | None = None, **kw) -> Accelerator:
    return Accelerator(params.rows, params.cols, slots=params.slots,
                       expert_bytes=params.expert_bytes, n_layers=params.n_layers,
                       n_experts=params.n_experts, policy=params.policy, k_max=params.k_max,
                       n_max=params.n_max, queue_depth=params.queue_depth,
                       cmd_depth=params.cmd_depth, pe_module=pe_module,
                       mul_stages=params.mul_stages, add_stages=params.add_stages, **kw)


class AccelHarness(wiring.Component):
    """The accelerator with ``latency`` cycles of extra read latency on its AXI master."""

    def __init__(self, params: AccelParams, *, latency: int, pe_module: str | None = None):
        self._accel = accelerator(params, pe_module=pe_module)
        self._mul_stages, self._add_stages = params.mul_stages, params.add_stages
        self._latency = latency
        a = self._accel
        super().__init__({
            "m_axi": Out(AxiSignature(addr_width=a.addr_width, data_width=a.bus_bits,
                                      id_width=4)),
            "s_axil": In(AxiLiteSignature(addr_width=12)),
            "irq": Out(1),
        })

    mul_stages = property(lambda self: self._mul_stages)
    add_stages = property(lambda self: self._add_stages)

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = a = self._accel
        m.submodules.latency = lat = AxiReadLatency(
            latency=self._latency, addr_width=a.addr_width, data_width=a.bus_bits, id_width=4,
            depth=32)
        wiring.connect(m, wiring.flipped(self.s_axil), a.s_axil)
        m.d.comb += self.irq.eq(a.irq)
        for name, member in a.m_axi.signature.members.items():
            if name in READ_FIELDS:
                if member.flow == Out:
                    m.d.comb += [getattr(lat.s, name).eq(getattr(a.m_axi, name)),
                                 getattr(self.m_axi, name).eq(getattr(lat.m, name))]
                else:
                    m.d.comb += [getattr(a.m_axi, name).eq(getattr(lat.s, name)),
                                 getattr(lat.m, name).eq(getattr(self.m_axi, name))]
            elif member.flow == Out:
                m.d.comb += getattr(self.m_axi, name).eq(getattr(a.m_axi, name))
            else:
                m.d.comb += getattr(a.m_axi, name).eq(getattr(self.m_axi, name))
        return m


def hierarchical(component, name: str) -> str:
    """Verilog of ``component`` (built with ``pe_module=f"{name}_pe"``) plus the PE module,
    at the component's PE depth (its ``mul_stages`` and ``add_stages``)."""
    from sim.netlist import convert

    return convert(component, name, pe=array_pe(component.mul_stages, component.add_stages))


def params_env(params: AccelParams) -> dict[str, str]:
    return {"ACCEL_PARAMS": json.dumps(dataclasses.asdict(params))}


def params_from_env() -> AccelParams:
    return AccelParams(**json.loads(os.environ["ACCEL_PARAMS"]))


def run_accel_cocotb(simulator: str, params: AccelParams, build_dir, *, seed: int,
                     commands: int = 120, pauses: float = 0.2, latency: int = 8,
                     testcase: str | None = None, extra: dict | None = None,
                     check: bool = True, waves: bool | str | None = None):
    """Generate, build and simulate the harness; returns (SimResult, {test: stats}).
    ``check`` and ``waves``: see :func:`sim.runner.run_cocotb`."""
    from sim.runner import run_cocotb

    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    stats_dir = build_dir / "stats"
    stats_dir.mkdir(exist_ok=True)
    for f in stats_dir.glob("*.json"):
        f.unlink()
    name = "accel_tb"
    text = hierarchical(AccelHarness(params, latency=latency, pe_module=f"{name}_pe"), name)
    path = build_dir / f"{name}.v"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    env = {**params_env(params), "ACCEL_COMMANDS": str(commands), "ACCEL_PAUSES": str(pauses),
           "ACCEL_STATS": str(stats_dir), "SPEQMOE_SEED": str(seed)}
    env.update({k: str(v) for k, v in (extra or {}).items()})
    result = run_cocotb(simulator=simulator, verilog_path=path, toplevel=name,
                        test_module="sim.tb_accel", build_dir=build_dir, extra_env=env,
                        testcase=testcase, check=check,
                        waves=waves)
    stats = {f.stem: json.loads(f.read_text()) for f in stats_dir.glob("*.json")}
    return result, stats
