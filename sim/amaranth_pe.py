"""Run a PE in Amaranth's own simulator on a list of batches (see :mod:`sim.pe_stimulus`).

:func:`simulate_pe` is a pure function from stimulus to results: the caller compares
them with the golden model. Streams are driven with random idle cycles and results are
taken with random backpressure, both from *seed*.
"""

from __future__ import annotations

import time

import numpy as np
from amaranth.sim import Simulator

from hw.pe import Fp16PE, PeMode, ReconfigurablePE
from sim.pe_stimulus import beats_of, lut_writes


def simulate_pe(kind: str, batches, *, stall: float = 0.2, backpressure: float = 0.2,
                seed: int = 0, max_cycles: int | None = None, mul_stages: int = 0,
                add_stages: int = 0):
    """Simulate *batches* on a fresh PE; return ``(results, cycles, seconds)``.

    ``results`` is a list of ``(4,)`` uint32 arrays in completion order. With
    ``add_stages > 0`` the batches must be grouped for the PE's interleave
    (:func:`sim.pe_stimulus.interleaved`).
    """
    if kind == "reconfigurable":
        dut = ReconfigurablePE(mul_stages=mul_stages, add_stages=add_stages)
    elif kind == "fp16":
        dut = Fp16PE(mul_stages=mul_stages, add_stages=add_stages)
    else:
        raise ValueError(f"unknown PE kind {kind!r}")
    rng = np.random.default_rng(seed)
    beats = beats_of(batches, dut.interleave)
    n_expected = sum(len(b.words) for b in batches)
    limit = max_cycles if max_cycles is not None else 40 * len(beats) + 1000
    results = []
    counters = {"cycles": 0}

    async def testbench(ctx):
        table = [0] * 8           # the PE's lut (all +0.0 after reset)
        writes = []               # lut entries still to write before the batch's beats

        def load(b):
            if kind == "reconfigurable":
                ctx.set(dut.mode, PeMode.DRAFT if b.mode == "draft" else PeMode.VERIFY)
                for d in range(8):
                    ctx.set(dut.base[d], int(b.base[d]))
                writes.extend(lut_writes(table, b))

        loaded = 0
        load(batches[0])
        wi = ai = 0
        w_on = a_on = False
        while len(results) < n_expected:
            if counters["cycles"] >= limit:
                raise AssertionError(f"timeout after {limit} cycles with {len(results)} results")
            if wi < len(beats) and ai < len(beats):
                nb = beats[wi].batch
                if nb != loaded and beats[ai].batch == nb:
                    load(batches[nb])
                    loaded = nb
            # A new lut is written one entry per cycle before the batch's beats are offered
            # (a write is seen by the beats accepted after its cycle).
            writing = bool(writes)
            if kind == "reconfigurable":
                ctx.set(dut.lut_write.en, writing)
                if writing:
                    addr, value = writes.pop(0)
                    ctx.set(dut.lut_write.addr, addr)
                    ctx.set(dut.lut_write.data, value)
            if (not writing and not w_on and wi < len(beats) and beats[wi].batch == loaded
                    and rng.random() >= stall):
                w_on = True
                ctx.set(dut.weights.payload.word, beats[wi].word)
                ctx.set(dut.weights.payload.last, beats[wi].last)
            if (not writing and not a_on and ai < len(beats) and beats[ai].batch == loaded
                    and rng.random() >= stall):
                a_on = True
                for j, a in enumerate(beats[ai].acts):
                    ctx.set(dut.acts.payload[j], a)
            ctx.set(dut.weights.valid, w_on)
            ctx.set(dut.acts.valid, a_on)
            r_ready = rng.random() >= backpressure
            ctx.set(dut.results.ready, r_ready)
            w_fire = w_on and ctx.get(dut.weights.ready)
            a_fire = a_on and ctx.get(dut.acts.ready)
            if r_ready and ctx.get(dut.results.valid):
                results.append(np.array([ctx.get(dut.results.payload[j]) for j in range(4)],
                                        dtype=np.uint32))
            await ctx.tick()
            counters["cycles"] += 1
            if w_fire:
                w_on = False
                wi += 1
            if a_fire:
                a_on = False
                ai += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    start = time.perf_counter()
    sim.run()
    return results, counters["cycles"], time.perf_counter() - start
