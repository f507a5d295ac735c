"""PE simulation flows shared by `speqmoe sim`, the demo and the benchmarks."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sim.runner import run_cocotb, simulator_missing, write_verilog


@dataclass
class PeSimReport:
    simulator: str
    kind: str
    modes: str
    sequences: int
    cycles: int
    seconds: float
    passed: bool
    log: Path | None = None
    waves: Path | None = None
    per_mode: dict = field(default_factory=dict)   # results checked, by mode

    @property
    def cycles_per_s(self) -> float:
        return self.cycles / self.seconds if self.seconds else 0.0


def run_pe_cocotb(simulator: str, kind: str, modes: str, sequences: int, build_dir: Path, *,
                  seed: int, stall: float = 0.25, backpressure: float = 0.25,
                  lengths: str = "mixed", mul_stages: int = 0, add_stages: int = 0,
                  waves: bool | None = None, platform=None) -> PeSimReport:
    """Simulate the generated PE Verilog on *simulator* against the golden model
    (``waves``: see :func:`sim.runner.run_cocotb`; ``platform``: elaborate the PE for it,
    :func:`sim.runner.write_verilog`)."""
    from hw.pe import Fp16PE, ReconfigurablePE

    reason = simulator_missing(simulator)
    if reason:
        raise RuntimeError(reason)
    top = "reconfigurable_pe" if kind == "reconfigurable" else "fp16_pe"
    build_dir = Path(build_dir).resolve()
    cls = ReconfigurablePE if kind == "reconfigurable" else Fp16PE
    v = write_verilog(cls(mul_stages=mul_stages, add_stages=add_stages), top, build_dir / f"{top}.v",
                      platform=platform)
    stats_path = build_dir / "stats.json"
    if stats_path.exists():
        stats_path.unlink()
    result = run_cocotb(simulator=simulator, verilog_path=v, toplevel=top,
                        test_module="sim.tb_pe", build_dir=build_dir, check=False,
                        extra_env={"PE_KIND": kind, "PE_MODES": modes,
                                   "PE_SEQUENCES": str(sequences), "PE_STALL": str(stall),
                                   "PE_LENGTHS": lengths,
                                   "PE_ADD_STAGES": str(add_stages),
                                   "PE_BACKPRESSURE": str(backpressure),
                                   "SPEQMOE_SEED": str(seed), "PE_STATS": str(stats_path)},
                        waves=waves)
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    return PeSimReport(simulator=simulator, kind=kind, modes=modes,
                       sequences=int(stats.get("results", 0)),
                       cycles=int(stats.get("cycles", 0)), seconds=float(stats.get("seconds", 0.0)),
                       passed=result.tests > 0 and result.failed == 0 and bool(stats),
                       log=result.log, waves=result.waves,
                       per_mode={m: int(n) for m, n in stats.get("per_mode", {}).items()})
