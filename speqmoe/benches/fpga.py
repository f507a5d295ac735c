"""Bench section ``fpga``: place and route on the ULX3S 85F (LFE5U-85F, speed grade 6).

Runs ``speqmoe fpga`` (every default design out of context, the PE pipeline-depth sweep
and the self-checking bitstream) into ``build/fpga`` and reports, per design:

* ``fpga_fmax_mhz_<design>``: nextpnr's post-route Fmax at seed 1 (goal >= 100 MHz for
  the PE and the 4x4 array at the default pipeline depth); absent when it does not fit or
  nextpnr did not finish it within the time budget (``--max-minutes``);
* ``fpga_lut4_<design>``, ``fpga_ff_<design>``, ``fpga_dsp_<design>``, ``fpga_ebr_<design>``,
  ``fpga_fits_<design>`` (1 or 0) and ``fpga_build_s_<design>`` (wall time of the flow);
* ``fpga_lut_ratio_pe``: LUT4 of ReconfigurablePE over Fp16PE at the default depth (goal
  <= 1.15), and ``fpga_lut_ratio_pe_m<m>a<a>`` at each depth of the sweep;
* ``fpga_sweep_fmax_mhz_<pe>_m<m>a<a>`` and ``fpga_sweep_lut4_<pe>_m<m>a<a>``.

Reproduce with ``python -m speqmoe bench --only fpga`` (``make fpga`` took 49 minutes on 2
cores from a fresh clone: the 4x4 array 48 minutes, the other designs beside it).
"""

from __future__ import annotations

from pathlib import Path

from speqmoe.config import Config

SHORT = {"reconfigurable_pe": "pe", "fp16_pe": "fp16pe", "pe_array_2x2": "array_2x2",
         "pe_array_4x4": "array_4x4", "expert_cache_w128_s16": "cache", "accel_2x2": "accel_2x2",
         "selfcheck_2x2": "selfcheck_2x2"}


def figures(summary: dict) -> dict:
    """Bench keys from an FPGA summary (``build/fpga/summary.json``)."""
    from speqmoe.commands.fpga import SWEEP, sweep_name

    designs = summary.get("designs", {})
    out: dict = {}
    for name, r in designs.items():
        if name in SHORT:
            key = SHORT[name]
            out.update({f"fpga_lut4_{key}": r["lut4"], f"fpga_ff_{key}": r["ff"],
                        f"fpga_dsp_{key}": r["dsp"], f"fpga_ebr_{key}": r["ebr"],
                        f"fpga_fits_{key}": int(r["fits"]), f"fpga_build_s_{key}": r["seconds"]})
            if r.get("fmax_mhz"):
                out[f"fpga_fmax_mhz_{key}"] = r["fmax_mhz"]
    if "reconfigurable_pe" in designs and "fp16_pe" in designs:
        out["fpga_lut_ratio_pe"] = designs["reconfigurable_pe"]["lut4"] / designs["fp16_pe"]["lut4"]
    for ms, ad in SWEEP:
        rec, base = (designs.get(sweep_name(k, ms, ad)) for k in ("reconfigurable_pe", "fp16_pe"))
        for kind, r in (("pe", rec), ("fp16pe", base)):
            if r:
                out[f"fpga_sweep_lut4_{kind}_m{ms}a{ad}"] = r["lut4"]
                if r.get("fmax_mhz"):
                    out[f"fpga_sweep_fmax_mhz_{kind}_m{ms}a{ad}"] = r["fmax_mhz"]
        if rec and base:
            out[f"fpga_lut_ratio_pe_m{ms}a{ad}"] = rec["lut4"] / base["lut4"]
    return out


def run(ctx) -> dict:
    from speqmoe.commands.fpga import DEFAULT_DESIGNS, DEFAULT_JOBS, run_fpga

    cfg = Config()
    summary = run_fpga(cfg, Path("build/fpga"), board=cfg.fpga.board, designs=DEFAULT_DESIGNS,
                       sweep=True, bitstream=True, seed=cfg.fpga.seed, jobs=DEFAULT_JOBS,
                       progress=ctx.progress)
    return figures(summary)
