"""cocotb testbench of a generated PE (``ReconfigurablePE`` or ``Fp16PE``) vs the golden model.

Configuration arrives through the environment (set by :func:`sim.runner.run_cocotb`):

``PE_KIND``           ``reconfigurable`` or ``fp16``
``PE_MODES``          comma-separated modes for the reconfigurable PE (``verify,draft``)
``PE_SEQUENCES``      random dot products per mode (edge cases come on top)
``PE_LENGTHS``         dot-product length profile, ``mixed`` or ``short``
``PE_ADD_STAGES``     the PE's adder stages (it then interleaves that many plus one dot
                      products; the stimulus is regrouped with ``interleaved``)
``PE_STALL``          probability that an input stream offers nothing in a cycle
``PE_BACKPRESSURE``   probability that ``results.ready`` is low in a cycle
``SPEQMOE_SEED``      the run's seed (printed; rerun with it to reproduce)
``PE_STATS``          optional path of a JSON file for cycles and wall time

One coroutine drives all three streams cycle by cycle: inputs are offered at random
(an offered beat stays until taken, as stream rules require), results are taken at
random, and mode and tables switch as soon as the previous batch's last beat has been
accepted, while the pipeline still holds it. Every result is compared bit for bit with
the golden model (NaNs included: only the canonical NaN is right).
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
from sim.pe_stimulus import beats_of, interleaved, lut_writes, pe_batches

_MODE_CODE = {"verify": 0, "draft": 1, "fp16": 0}


def _pack(values, width) -> int:
    out = 0
    for i, v in enumerate(values):
        out |= int(v) << (width * i)
    return out


@cocotb.test()
async def pe_matches_golden(dut):
    kind = os.environ.get("PE_KIND", "reconfigurable")
    modes = [m for m in os.environ.get("PE_MODES", "verify,draft").split(",") if m]
    sequences = int(os.environ.get("PE_SEQUENCES", "1000"))
    stall = float(os.environ.get("PE_STALL", "0.2"))
    backpressure = float(os.environ.get("PE_BACKPRESSURE", "0.2"))
    seed = derived_seed(f"tb_pe/{kind}/{','.join(modes)}")
    dut._log.info("SPEQMOE_SEED=%d (stimulus seed %d), kind=%s modes=%s sequences/mode=%d "
                  "lengths=%s", base_seed(), seed, kind, modes, sequences,
                  os.environ.get("PE_LENGTHS", "mixed"))
    lengths = os.environ.get("PE_LENGTHS", "mixed")
    slots = int(os.environ.get("PE_ADD_STAGES", "0")) + 1
    batches = interleaved(pe_batches(kind, modes, sequences, seed, lengths), slots)
    rng = np.random.default_rng(seed ^ 0x5EED)

    # Flatten the stimulus into beat lists; remember where each batch starts.
    beats = beats_of(batches, slots)
    w_beats = [b.word | (b.last << 16) for b in beats]
    a_beats = [_pack(b.acts, 16) for b in beats]
    batch_of_beat = [b.batch for b in beats]
    expected = [(b.mode, exp) for b in batches for exp in b.expected]
    n_beats = len(beats)
    reconfigurable = kind == "reconfigurable"

    table = [0] * 8           # the PE's lut (all +0.0 after reset)
    writes = []               # lut entries still to write before the batch's beats

    def load_tables(b):
        dut.mode.value = _MODE_CODE[b.mode]
        dut.base.value = _pack(b.base, 5)
        writes.extend(lut_writes(table, b))

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.weights__valid.value = 0
    dut.acts__valid.value = 0
    dut.results__ready.value = 0
    if reconfigurable:
        dut.lut_write.value = 0
        load_tables(batches[0])
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0

    # The inputs this loop drives every cycle are written only when they change (a write
    # through the simulator interface costs as much as a few cycles of the PE on Verilator).
    lut_write = dut.lut_write if reconfigurable else None
    w_valid, a_valid, results_ready = dut.weights__valid, dut.acts__valid, dut.results__ready
    driven = {}

    def put(handle, value):
        if driven.get(id(handle)) != value:
            handle.value = value
            driven[id(handle)] = value

    wi = ai = ri = 0
    w_on = a_on = False
    table_of = 0
    max_cycles = 40 * n_beats + 1000
    start = time.perf_counter()
    cycles = 0
    mismatches = []
    # Handles and triggers looked up once; each result compared as one 128-bit integer.
    w_ready, a_ready = dut.weights__ready, dut.acts__ready
    r_valid, r_payload = dut.results__valid, dut.results__payload
    edge, read_only = RisingEdge(dut.clk), ReadOnly()
    expected_bits = [_pack(exp, 32) for _, exp in expected]
    while ri < len(expected):
        await edge
        cycles += 1
        if cycles > max_cycles:
            raise AssertionError(f"timeout: {ri} of {len(expected)} results after {cycles} cycles")
        # Tables of the next batch may load once every beat of this batch was accepted.
        if wi < n_beats and ai < n_beats:
            nb = batch_of_beat[wi]
            if nb != table_of and batch_of_beat[ai] == nb:
                if reconfigurable:
                    load_tables(batches[nb])
                table_of = nb
        # A new lut is written one entry per cycle (LutWrite: en, addr, data from bit 0)
        # before the batch's beats are offered.
        writing = bool(writes)
        if reconfigurable:
            if writing:
                addr, value = writes.pop(0)
                put(lut_write, 1 | (addr << 1) | (value << 4))
            else:
                put(lut_write, 0)
        if (not writing and not w_on and wi < n_beats and batch_of_beat[wi] == table_of
                and rng.random() >= stall):
            w_on = True
            dut.weights__payload.value = w_beats[wi]
        if (not writing and not a_on and ai < n_beats and batch_of_beat[ai] == table_of
                and rng.random() >= stall):
            a_on = True
            dut.acts__payload.value = a_beats[ai]
        put(w_valid, int(w_on))
        put(a_valid, int(a_on))
        r_ready = rng.random() >= backpressure
        put(results_ready, int(r_ready))
        await read_only
        if w_on and w_ready.value:
            w_on = False
            wi += 1
        if a_on and a_ready.value:
            a_on = False
            ai += 1
        if r_ready and r_valid.value:
            got = int(r_payload.value)
            if got != expected_bits[ri]:
                mode, exp = expected[ri]
                mismatches.append((ri, mode, [f"{(got >> (32 * j)) & 0xFFFFFFFF:08x}" for j in range(4)],
                                   [f"{int(v):08x}" for v in exp]))
                if len(mismatches) >= 10:
                    break
            ri += 1
    seconds = time.perf_counter() - start
    # No result may appear that the stimulus did not ask for.
    for _ in range(8):
        await RisingEdge(dut.clk)
        dut.results__ready.value = 1
        dut.weights__valid.value = 0
        dut.acts__valid.value = 0
        await ReadOnly()
        assert not dut.results__valid.value or mismatches, "PE produced a result nobody asked for"
    per_mode = {}
    for mode, _ in expected[:ri]:
        per_mode[mode] = per_mode.get(mode, 0) + 1
    stats = {"cycles": cycles, "seconds": seconds, "results": ri, "beats": n_beats,
             "sequences": len(expected), "per_mode": per_mode}
    dut._log.info("stats %s", stats)
    if os.environ.get("PE_STATS"):
        with open(os.environ["PE_STATS"], "w") as f:
            json.dump(stats, f)
    assert not mismatches, (
        f"{len(mismatches)} result(s) differ from the golden model "
        f"(SPEQMOE_SEED={base_seed()}): first {mismatches[:3]}")
