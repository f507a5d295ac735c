"""cocotb testbench of a generated ``PEArray`` against the golden model.

Configuration arrives through the environment (set by :func:`sim.array_flow.run_array_cocotb`):

``ARRAY_PES``          PEs in the array (rows * cols)
``ARRAY_JOBS``         ``.npz`` file of jobs (:func:`sim.array_flow.save_jobs`): configuration,
                       weight and activation beats, golden result beats and cycle counts
``ARRAY_OUT``          ``.npz`` file this bench writes: result beats per job and statistics
``ARRAY_STALL``        probability that an input stream offers nothing in a cycle
``ARRAY_BACKPRESSURE`` probability that ``results.ready`` is low in a cycle
``ARRAY_MUL_STAGES``, ``ARRAY_ADD_STAGES``  the PEs' pipeline depth (for the flow model;
                     the jobs' beats are already interleaved for it)
``ARRAY_OVERLAP``      1: a job's configuration loads while the previous job drains;
                       0: only after its last result (cycle counts comparable with golden)
``SPEQMOE_SEED``       the run's seed (printed; rerun with it to reproduce)

The stimulus policy is :class:`sim.array_flow.ArrayDriver`, the same one the Amaranth
simulator tests use, with its flow model in lockstep. Every result beat is compared with the
golden beats bit for bit (NaNs included), and with no injected stall every job must take
exactly the golden cycle count. The counters written to ``ARRAY_OUT`` cover exactly the
driver's cycles (the reset cycles before and the idle cycles after are subtracted), like
the Amaranth simulator's, next to the values the flow model predicts for them.
"""

from __future__ import annotations

import json
import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from golden.seed import base_seed, derived_seed
from sim.array_flow import ARRAY_COUNTERS, ArrayDriver, ArrayRun, load_jobs, mismatches

COUNTERS = ARRAY_COUNTERS + ("macs",)


def _pack(values, width: int) -> int:
    out = 0
    for i, v in enumerate(values):
        out |= int(v) << (width * i)
    return out


@cocotb.test()
async def array_matches_golden(dut):
    pes = int(os.environ["ARRAY_PES"])
    jobs = load_jobs(os.environ["ARRAY_JOBS"])
    stall = float(os.environ.get("ARRAY_STALL", "0.2"))
    backpressure = float(os.environ.get("ARRAY_BACKPRESSURE", "0.2"))
    overlap = os.environ.get("ARRAY_OVERLAP", "1") == "1"
    seed = derived_seed(f"tb_array/{pes}/{stall}/{backpressure}/{int(overlap)}")
    dut._log.info("SPEQMOE_SEED=%d (driver seed %d): %d PEs, %d jobs, stall %.2f, "
                  "backpressure %.2f, overlap %s", base_seed(), seed, pes, len(jobs), stall,
                  backpressure, overlap)
    # Beats packed once, outside the cycle loop.
    cfg_words = [int(j.mode == "draft") | (_pack(j.base, 5) << 1) | (_pack(j.lut, 15) << 41)
                 for j in jobs]
    w_words = [[_pack(j.words[b], 16) | (int(j.last[b]) << (16 * pes)) for b in range(j.beats)]
               for j in jobs]
    a_words = [[_pack(j.acts[b], 16) for b in range(j.beats)] for j in jobs]
    drv = ArrayDriver(jobs, stall=stall, backpressure=backpressure, seed=seed, overlap=overlap,
                      mul_stages=int(os.environ.get("ARRAY_MUL_STAGES", "0")),
                      add_stages=int(os.environ.get("ARRAY_ADD_STAGES", "0")))

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for sig in (dut.config__valid, dut.weights__valid, dut.acts__valid, dut.results__ready):
        sig.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0

    def read_counters():
        return {name: int(getattr(dut, name).value) for name in COUNTERS}

    limit = 20 * sum(j.beats + j.expected.shape[0] for j in jobs) + 1000
    start = time.perf_counter()
    before = None             # counters before the driver's first cycle
    while not drv.done:
        await RisingEdge(dut.clk)
        if drv.cycle >= limit:
            raise AssertionError(f"timeout after {drv.cycle} cycles")
        cfg, w, a, ready = drv.offer()
        dut.config__valid.value = int(cfg is not None)
        if cfg is not None:
            dut.config__payload.value = cfg_words[cfg]
        dut.weights__valid.value = int(w is not None)
        if w is not None:
            dut.weights__payload.value = w_words[drv.job_w][drv.wi]
        dut.acts__valid.value = int(a is not None)
        if a is not None:
            dut.acts__payload.value = a_words[drv.job_w][drv.ai]
        dut.results__ready.value = int(ready)
        await ReadOnly()
        if before is None:
            before = read_counters()
        w_fire = w is not None and bool(dut.weights__ready.value)
        a_fire = a is not None and bool(dut.acts__ready.value)
        if cfg is not None and not dut.config__ready.value:
            cfg = None
        result = None
        if ready and dut.results__valid.value:
            v = int(dut.results__payload.value)
            result = [(v >> (32 * j)) & 0xFFFFFFFF for j in range(4)]
            if ((v >> 128) & 1) != (len(drv.results[drv.job_r]) % pes == pes - 1):
                raise AssertionError(f"results.last wrong on beat {len(drv.results[drv.job_r])} "
                                     f"of job {drv.job_r}")
        drv.update(cfg, w_fire, a_fire, result)
    seconds = time.perf_counter() - start
    total = drv.cycle
    # No result may appear that nobody asked for.
    counters = None
    for _ in range(8):
        await RisingEdge(dut.clk)
        dut.weights__valid.value = 0
        dut.acts__valid.value = 0
        dut.config__valid.value = 0
        dut.results__ready.value = 1
        await ReadOnly()
        if counters is None:      # the edge that ends the driver's last cycle
            after = read_counters()
            counters = {name: after[name] - before[name] for name in COUNTERS}
        assert not dut.results__valid.value, "the array produced a result nobody asked for"
    run = ArrayRun(results=drv.result_arrays(), stats=drv.stats, cycles=total, seconds=seconds,
                   counters=counters, model_counters=drv.model_counters)
    info = {"cycles": total, "seconds": seconds, "counters": counters,
            "model_counters": run.model_counters,
            "stats": [{"first_beat": s.first_beat, "last_result": s.last_result}
                      for s in drv.stats]}
    np.savez(os.environ["ARRAY_OUT"], info=np.frombuffer(json.dumps(info).encode(), np.uint8),
             **{f"r{i}": r for i, r in enumerate(run.results)})
    dut._log.info("cycles %d in %.2fs (%.0f cycles/s), counters %s", total, seconds,
                  total / seconds if seconds else 0.0, counters)
    bad = mismatches(run, jobs)
    assert not bad, (f"results differ from the golden model (SPEQMOE_SEED={base_seed()}): "
                     + "; ".join(bad))
    if stall == 0 and backpressure == 0 and not overlap:
        wrong = [(i, s.cycles, j.cycles) for i, (s, j) in enumerate(zip(drv.stats, jobs))
                 if s.cycles != j.cycles]
        assert not wrong, f"cycle counts differ from golden (job, rtl, golden): {wrong}"
