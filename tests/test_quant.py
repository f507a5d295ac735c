"""golden.quant: INT4/INT8 round-to-nearest baselines and the relative RMS error metric."""

from __future__ import annotations

import numpy as np
import pytest

from golden.quant import int4_rtn, int8_rtn, rel_rmse, rtn


def reference_rtn(w, qmin, qmax, groups_of):
    """Scalar reference: per group, FP16 scale absmax/qmax, codes rint and clipped."""
    x = w.astype(np.float64)
    out = np.empty_like(x)
    flat_x, flat_o = x.reshape(-1, groups_of), out.reshape(-1, groups_of)
    for g in range(flat_x.shape[0]):
        scale = float(np.float16(np.abs(flat_x[g]).max() / qmax))
        if scale == 0 and np.abs(flat_x[g]).max() > 0:
            scale = 2.0 ** -24
        for i, v in enumerate(flat_x[g]):
            code = 0 if scale == 0 else min(max(round(v / scale), qmin), qmax)
            flat_o[g, i] = code * scale
    return out.astype(np.float16)


def test_int4_per_tensor_matches_a_scalar_reference(rng):
    w = (rng.standard_normal((8, 16)) * 0.02).astype(np.float16)
    out = int4_rtn(w)
    assert out.dtype == np.float16 and out.shape == w.shape
    np.testing.assert_array_equal(out, reference_rtn(w, -8, 7, w.size))


@pytest.mark.parametrize("group_size", [1, 4, 16, 32])
def test_int4_per_group_matches_a_scalar_reference(rng, group_size):
    w = (rng.standard_normal((6, 32)) * 0.05).astype(np.float16)
    np.testing.assert_array_equal(int4_rtn(w, group_size), reference_rtn(w, -8, 7, group_size))


def test_int4_codes_stay_in_range_and_take_at_most_sixteen_values(rng):
    w = (rng.standard_normal((4, 256)) * 0.02).astype(np.float16)
    for gs in (None, 128):
        out = int4_rtn(w, gs).astype(np.float64)
        groups = out.reshape(-1, gs or w.size)
        for g in groups:
            assert len(np.unique(g)) <= 16


def test_int4_scale_is_stored_as_fp16_and_absmax_maps_to_code_seven():
    w = np.array([[0.7, -0.35, 0.1, 0.0]], dtype=np.float16)
    scale = float(np.float16(float(np.float16(0.7)) / 7))
    out = int4_rtn(w).astype(np.float64)
    assert out[0, 0] == pytest.approx(7 * scale, rel=1e-3)
    assert out[0, 3] == 0.0
    np.testing.assert_allclose(out / scale, [[7, -3, 1, 0]], atol=1e-3)   # 0.35 / scale = 3.4997


def test_int4_of_zeros_and_tiny_values_is_finite():
    np.testing.assert_array_equal(int4_rtn(np.zeros((2, 8), np.float16), 4), 0)
    tiny = np.array([2.0 ** -24, -2.0 ** -24, 0.0, 0.0], dtype=np.float16)
    out = int4_rtn(tiny)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, tiny)


def test_finer_groups_never_increase_int4_error_on_gaussian_weights(rng):
    w = (rng.standard_normal((64, 256)) * 0.02).astype(np.float16)
    errs = [rel_rmse(w, int4_rtn(w, gs)) for gs in (None, 256, 128, 32)]
    assert errs == sorted(errs, reverse=True)
    assert 0.05 < errs[-1] < errs[0] < 0.3


def test_int8_is_per_output_row(rng):
    row_scale = np.array([[1e-3], [1e-2], [1e-1], [1.0], [10.0]])
    w = (rng.standard_normal((5, 64)) * row_scale).astype(np.float16)
    np.testing.assert_array_equal(int8_rtn(w), reference_rtn(w, -128, 127, 64))
    assert rel_rmse(w, int8_rtn(w)) < 0.01
    np.testing.assert_array_equal(int8_rtn(w[0]), reference_rtn(w[0], -128, 127, 64))


@pytest.mark.parametrize("call, match", [
    (lambda: int4_rtn(np.ones((4, 6), np.float16), 4), "divide"),
    (lambda: int4_rtn(np.ones((4, 8), np.float16), 0), "positive integer"),
    (lambda: int4_rtn(np.ones((4, 8), np.float16), 2.0), "positive integer"),
    (lambda: int4_rtn(np.array([1.0, np.inf], np.float16)), "finite"),
    (lambda: int4_rtn(np.array([1.0, np.nan], np.float16)), "finite"),
    (lambda: int4_rtn(np.ones(4, np.int8)), "floating"),
    (lambda: int4_rtn(np.ones(0, np.float16)), "at least one"),
    (lambda: int4_rtn([1.0, 2.0]), "numpy array"),
    (lambda: rtn(np.ones(4, np.float16), 1), "bits"),
    (lambda: rel_rmse(np.ones(3), np.ones(4)), "same shape"),
])
def test_bad_arguments_are_rejected(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_rel_rmse_is_relative_rms_error_in_float64():
    ref = np.array([3.0, 4.0], np.float16)
    assert rel_rmse(ref, ref) == 0.0
    assert rel_rmse(ref, np.zeros(2, np.float16)) == pytest.approx(1.0)
    assert rel_rmse(ref, np.array([3.0, 5.0])) == pytest.approx(np.sqrt(0.5) / np.sqrt(12.5))
    assert rel_rmse(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_rmse(np.zeros(3), np.ones(3)) == float("inf")
