"""cocotb testbench of a generated lane-arithmetic component (``hw/fp.py``) vs ``golden/fp.py``.

Configuration arrives through the environment (set by :func:`sim.runner.run_cocotb`):

``FP_COMPONENT``   ``fp16_multiplier``, ``fp32_adder`` or ``fp32_to_fp16`` (the toplevel)
``FP_VECTORS``     random vectors (every pair of edge cases comes on top)
``FP_STATS``       optional path of a JSON file for the vector count and wall time
``SPEQMOE_SEED``   the run's seed (printed; rerun with it to reproduce)

The components are combinational: each vector is applied, 1 ns passes, the output is
read. All outputs are compared with the golden model at the end, bit for bit (NaNs
included: the canonical NaN is the only right one), and up to ten mismatches are reported.

The edge-case lists and the biased random generators below are also used by the
Amaranth-simulator tests (``tests/test_fp.py``), so both simulate the same kinds of cases.
"""

from __future__ import annotations

import json
import os
import time

import cocotb
import numpy as np
from cocotb.triggers import Timer

from golden import fp
from golden.seed import base_seed, derived_seed

FP16_EDGES = [
    0x0000, 0x8000,  # +-0
    0x0001, 0x8001, 0x0002, 0x0155, 0x0200,  # subnormals, smallest first
    0x03FF, 0x83FF,  # largest subnormal
    0x0400, 0x8400, 0x0401,  # smallest normals
    0x1400, 0x2E66, 0x3555, 0x3BFF, 0x3C00, 0xBC00, 0x3C01, 0x4000, 0x5640,
    0x7BFF, 0xFBFF,  # largest normal
    0x7C00, 0xFC00,  # +-inf
    0x7E00, 0xFE00, 0x7C01, 0x7D55, 0xFFFF,  # NaNs, quiet and signalling payloads
]

FP32_EDGES = [
    0x00000000, 0x80000000,  # +-0
    0x00000001, 0x80000001, 0x00000003, 0x00400000,  # subnormals
    0x007FFFFF, 0x807FFFFF,  # largest subnormal
    0x00800000, 0x80800000, 0x00800001, 0x01000000, 0x0C800000,  # smallest normals
    0x33800000, 0x33800001, 0x33FFFFFF, 0x34000000,  # around half an ulp of 1.0 (ties)
    0x3DCCCCCD, 0x3EAAAAAB, 0xBEAAAAAB, 0x3F7FFFFF,
    0x3F800000, 0xBF800000, 0x3F800001, 0xBF800001,  # 1.0 and neighbours
    0x3FFFFFFF, 0x40000000, 0x4B7FFFFF, 0x4B800000, 0xCB800000, 0x4CBEBC20,
    0x7E800000, 0x7F000000, 0x7F7FFFFE,
    0x7F7FFFFF, 0xFF7FFFFF,  # largest normal (overflow on addition)
    0x72FFFFFF, 0x73000000, 0x73000001,  # around half its ulp: largest + these rounds to inf or not
    0x7F800000, 0xFF800000,  # +-inf
    0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FA00000, 0x7FFFFFFF,  # NaNs
]

# binary32 values around the binary16 range: boundaries, ties, overflow.
FP32_TO_FP16_EDGES = FP32_EDGES + [
    0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001, 0x47800000, 0xC77FF000,  # 65504 .. inf
    0x38800000, 0x387FC000, 0x387FE000, 0x387FF000, 0x387FFFFF,  # min normal / max subnormal
    0x33800000, 0x33000000, 0x33000001, 0x337FFFFF, 0x33C00000, 0x32FFFFFF, 0xB3000001,
    0x38801000, 0x3F801000, 0x3F803000, 0x3F801001, 0x3F800FFF, 0x35400000, 0x35A00000,
]


def cross(values) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair of *values*, as two int64 arrays."""
    v = np.asarray(values, dtype=np.int64)
    return np.repeat(v, len(v)), np.tile(v, len(v))


def random_fp16_pairs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Multiplier operands: uniform bits, with a quarter subnormal x anything and a tenth
    subnormal x subnormal."""
    a = rng.integers(0, 1 << 16, n)
    b = rng.integers(0, 1 << 16, n)
    a = np.where(rng.random(n) < 0.25, a & 0x83FF, a)
    b = np.where(rng.random(n) < 0.1, b & 0x83FF, b)
    return a.astype(np.uint16), b.astype(np.uint16)


def random_fp32(rng: np.random.Generator, n: int) -> np.ndarray:
    """binary32 patterns: uniform bits, tiny/huge exponents, mid range; many trailing zeros."""
    kind = rng.integers(0, 4, n)
    exp = np.select(
        [kind == 0, kind == 1, kind == 2],
        [rng.integers(0, 256, n), rng.integers(0, 3, n), rng.integers(250, 256, n)],
        rng.integers(100, 150, n),
    )
    man = rng.integers(0, 1 << 23, n)
    tz = rng.integers(0, 24, n)
    man = np.where(rng.random(n) < 0.4, man >> tz << tz, man)
    return (rng.integers(0, 2, n) << 31 | exp << 23 | man).astype(np.uint32)


def random_fp32_pairs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Adder operands: independent, close exponents (d <= 3 or d around 24 for ties and
    sticky bits), near-cancellation (b = -a +- a few ulps), and pairs of FP16 products."""
    a = random_fp32(rng, n).astype(np.int64)
    b = random_fp32(rng, n).astype(np.int64)
    mode = rng.integers(0, 4, n)
    a_exp = a >> 23 & 0xFF
    far = rng.integers(22, 28, n) * rng.choice([-1, 1], n)
    delta = np.where(rng.random(n) < 0.6, rng.integers(-3, 4, n), far)
    close = (b & ~(0xFF << 23)) | (np.clip(a_exp + delta, 0, 254) << 23)
    step = np.where(rng.random(n) < 0.5, 1, 1 << rng.integers(0, 23, n))
    cancel = (a ^ (1 << 31)) + rng.integers(-3, 4, n) * step
    p = rng.integers(0, 1 << 16, (4, n)).astype(np.uint16)
    prods = fp.fp16_mul(p[0], p[1]).astype(np.int64), fp.fp16_mul(p[2], p[3]).astype(np.int64)
    b = np.select([mode == 1, mode == 2], [close, cancel], b) & 0xFFFFFFFF
    a = np.where(mode == 3, prods[0], a)
    b = np.where(mode == 3, prods[1], b)
    return a.astype(np.uint32), b.astype(np.uint32)


def random_fp32_for_fp16(rng: np.random.Generator, n: int) -> np.ndarray:
    """binary32 patterns mostly in and around the binary16 range, many exact ties."""
    x = random_fp32(rng, n).astype(np.int64)
    exp = rng.integers(95, 145, n)
    low = np.select([rng.random(n) < 0.3, rng.random(n) < 0.5], [0x1000, 0], rng.integers(0, 1 << 13, n))
    near = rng.integers(0, 2, n) << 31 | exp << 23 | rng.integers(0, 1 << 10, n) << 13 | low
    return np.where(rng.random(n) < 0.75, near, x).astype(np.uint32)


def fp_vectors(component: str, n: int, seed: int) -> tuple[dict[str, np.ndarray], str, np.ndarray]:
    """Inputs (port name -> values), output port name and golden outputs for *component*:
    every pair of edge cases followed by *n* biased random vectors."""
    rng = np.random.default_rng(seed)
    if component == "fp16_multiplier":
        ea, eb = cross(FP16_EDGES)
        ra, rb = random_fp16_pairs(rng, n)
        a, b = np.concatenate([ea, ra]).astype(np.uint16), np.concatenate([eb, rb]).astype(np.uint16)
        return {"a": a, "b": b}, "p", fp.fp16_mul(a, b)
    if component == "fp32_adder":
        ea, eb = cross(FP32_EDGES)
        ra, rb = random_fp32_pairs(rng, n)
        a, b = np.concatenate([ea, ra]).astype(np.uint32), np.concatenate([eb, rb]).astype(np.uint32)
        return {"a": a, "b": b}, "s", fp.fp32_add(a, b)
    if component == "fp32_to_fp16":
        a = np.concatenate([np.array(FP32_TO_FP16_EDGES, np.uint32), random_fp32_for_fp16(rng, n)])
        return {"a": a}, "o", fp.fp32_to_fp16(a).astype(np.uint32)
    raise ValueError(f"unknown FP_COMPONENT {component!r}")


@cocotb.test()
async def fp_component_matches_golden(dut):
    component = os.environ.get("FP_COMPONENT", "fp32_adder")
    n = int(os.environ.get("FP_VECTORS", "100000"))
    seed = derived_seed(f"tb_fp/{component}")
    dut._log.info("SPEQMOE_SEED=%d (stimulus seed %d), component=%s random vectors=%d",
                  base_seed(), seed, component, n)
    inputs, output, want = fp_vectors(component, n, seed)
    handles = [getattr(dut, name) for name in inputs]
    columns = [col.astype(np.int64).tolist() for col in inputs.values()]
    out = getattr(dut, output)
    got = []
    start = time.perf_counter()
    for values in zip(*columns):
        for handle, value in zip(handles, values):
            handle.value = value
        await Timer(1, unit="ns")
        got.append(int(out.value))
    seconds = time.perf_counter() - start
    got = np.array(got, dtype=np.uint32)
    bad = np.nonzero(got != want.astype(np.uint32))[0]
    dut._log.info("%d vectors in %.2f s (%.0f vectors/s), %d mismatches",
                  len(got), seconds, len(got) / seconds, len(bad))
    if os.environ.get("FP_STATS"):
        with open(os.environ["FP_STATS"], "w") as f:
            json.dump({"component": component, "vectors": len(got), "seconds": seconds,
                       "mismatches": len(bad)}, f)
    lines = []
    for i in bad[:10]:
        ins = ", ".join(f"{name}={int(col[i]):#x}" for name, col in inputs.items())
        lines.append(f"  ({ins}) -> {output}={int(got[i]):#x}, golden {int(want[i]):#x}")
    assert not len(bad), f"{len(bad)} of {len(got)} vectors differ from golden/fp.py:\n" + "\n".join(lines)
