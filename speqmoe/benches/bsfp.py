"""Bench section ``bsfp``: BSFP-4 draft error against INT4 RTN, and encoder speed.

All figures are measured on one seeded Gaussian tensor (512 x 512 = 2^18 weights, sigma 0.02,
FP16), with the same metric for every format: ``golden.quant.rel_rmse``.
"""

from __future__ import annotations

import time

import numpy as np

from golden import bsfp, quant
from golden.seed import derived_seed

SHAPE = (512, 512)
SIGMA = 0.02


def gaussian_weights() -> np.ndarray:
    rng = np.random.default_rng(derived_seed("bench_bsfp_gauss"))
    return (rng.standard_normal(SHAPE) * SIGMA).astype(np.float16)


def run(ctx) -> dict:
    w = gaussian_weights()
    ctx.progress(f"encoding a {SHAPE[0]}x{SHAPE[1]} Gaussian FP16 tensor (sigma {SIGMA})")
    start = time.perf_counter()
    encoded = bsfp.encode(w)
    seconds = time.perf_counter() - start
    if not np.array_equal(encoded.decode_full().view(np.uint16), w.view(np.uint16)):
        raise RuntimeError("BSFP encoding of the bench tensor is not lossless")
    return {
        "bsfp_draft_rel_rmse_gauss": bsfp.draft_rel_rmse(w, encoded),
        "int4_rtn_tensor_rel_rmse_gauss": quant.rel_rmse(w, quant.int4_rtn(w)),
        "int4_rtn_g128_rel_rmse_gauss": quant.rel_rmse(w, quant.int4_rtn(w, group_size=128)),
        "bsfp_encode_seconds_256k": seconds,
    }
