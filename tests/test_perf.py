"""Performance model (golden/perf.py): formulas, shapes, pass costs, provenance, errors."""

from __future__ import annotations

import numpy as np
import pytest

from golden import perf
from golden.perf import Accelerator, compare, expected_tokens_per_step, get_shape, pass_time


def test_expected_tokens_per_step_formula_and_limits():
    assert expected_tokens_per_step(0.0, 3) == 1.0
    assert expected_tokens_per_step(1.0, 3) == 4.0
    assert expected_tokens_per_step(0.976, 3) == pytest.approx(1 + 0.976 + 0.976**2 + 0.976**3)
    assert expected_tokens_per_step(0.5, 1) == pytest.approx(1.5)


def test_expected_tokens_per_step_matches_a_simulation_of_iid_acceptance(rng):
    alpha, gamma, steps = 0.8, 4, 40000
    acc = rng.random((steps, gamma)) < alpha
    first_reject = np.where(acc.all(axis=1), gamma, np.argmin(acc, axis=1))
    simulated = float(np.mean(first_reject + 1))
    assert simulated == pytest.approx(expected_tokens_per_step(alpha, gamma), rel=0.01)


@pytest.mark.parametrize("name,params", [("llama-2-7b", 6.61e9), ("Llama2_7B", 6.61e9),
                                         ("llama-3.1-8b", 7.50e9), ("LLAMA-2-13B", 12.85e9)])
def test_published_shapes_have_their_parameter_counts(name, params):
    # counts exclude the input embedding table (a look-up, never streamed per token)
    assert get_shape(name).total_weights() == pytest.approx(params, rel=0.01)


def test_unknown_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model shape 'gpt-5'.*llama-2-7b"):
        get_shape("gpt-5")
    with pytest.raises(ValueError, match="unknown model shape"):
        compare("mixtral-9x9b")


def test_tiny_shape_follows_the_model_config():
    from golden.model import ModelConfig

    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=2, n_experts=8, top_k=2, d_expert=32)
    s = perf.tiny_shape(cfg)
    assert (s.n_layers, s.d_model, s.d_ff, s.n_experts, s.top_k) == (2, 64, 32, 8, 2)
    assert s.experts_read(1) == pytest.approx(2.0)
    assert 2.0 < s.experts_read(4) < 8.0


def test_draft_pass_reads_a_quarter_of_the_weight_bytes_and_verify_fills_four_lanes():
    shape, acc = get_shape("llama-2-7b"), Accelerator()
    fp16 = pass_time(shape, acc, "fp16", 1, 0)
    draft = pass_time(shape, acc, "draft", 1, 0)
    v4 = pass_time(shape, acc, "verify", 4, 0)
    v5 = pass_time(shape, acc, "verify", 5, 0)
    assert draft["weight_bytes"] == pytest.approx(fp16["weight_bytes"] / 4)
    assert v4["weight_bytes"] == fp16["weight_bytes"]
    assert fp16["weight_bytes"] == pytest.approx(2 * shape.weights_per_token())
    # 4 tokens share one stream of weight words; the fifth needs a second lane group
    assert v4["cycles"] - fp16["cycles"] < 0.01 * fp16["cycles"]
    assert v5["cycles"] > 1.9 * fp16["cycles"]
    assert draft["cycles"] < 0.26 * fp16["cycles"]
    assert fp16["bound"] == "memory"


def test_memory_bound_speq_speedup_is_tokens_per_step_over_step_bytes():
    # an accelerator with effectively unlimited compute: only bytes matter
    acc = Accelerator(clock_hz=1e15, mem_bw=100e9)
    for alpha, gamma in ((0.976, 3), (0.6, 2), (0.9, 6)):
        r = compare("llama-2-7b", acc, gamma=gamma, context=0, acceptance=alpha)
        want = expected_tokens_per_step(alpha, gamma) / (gamma / 4 + 1)
        assert r["speedup_vs_fp16"]["speq"] == pytest.approx(want, rel=0.01)
        assert r["speedup_vs_fp16"]["w8"] == pytest.approx(2.0, rel=0.01)
        assert r["speedup_vs_fp16"]["w4"] == pytest.approx(2 / (0.5 + 2 / 128), rel=0.01)


def test_kv_cache_traffic_grows_with_context_and_favours_gqa():
    acc = Accelerator()
    short = compare("llama-2-7b", acc, context=128)["time_per_token_s"]["fp16"]
    long = compare("llama-2-7b", acc, context=4096)["time_per_token_s"]["fp16"]
    assert long > short * 1.1
    l2 = pass_time(get_shape("llama-2-7b"), acc, "fp16", 1, 4096)["kv_bytes"]
    l3 = pass_time(get_shape("llama-3.1-8b"), acc, "fp16", 1, 4096)["kv_bytes"]
    assert l3 == pytest.approx(l2 / 4, rel=0.01)          # 8 KV heads instead of 32


def test_speedup_rises_with_acceptance():
    s = [compare("llama-3.1-8b", acceptance=a)["speedup_vs_fp16"]["speq"]
         for a in (0.3, 0.6, 0.9, 0.976)]
    assert s == sorted(s) and s[0] < 1.2 and s[-1] > 1.8


def test_every_output_names_measured_and_assumed_inputs():
    r = compare("llama-2-7b", tokens_per_step=2.5, acceptance_source="measured: unit test")
    assert r["inputs"]["acceptance"].startswith("measured: unit test")
    assert r["inputs"]["accelerator"].startswith("assumed")
    assert r["inputs"]["context"].startswith("assumed")
    d = compare("llama-2-7b")
    assert "assumed: the paper's mean 0.976" in d["inputs"]["acceptance"]
    text = perf.format_report(d)
    assert "assumed" in text and "2.07x" in text


@pytest.mark.parametrize("kwargs", [{"acceptance": 1.5}, {"acceptance": -0.1}, {"gamma": 0},
                                    {"tokens_per_step": 9.0}, {"context": -1},
                                    {"acceptance": 0.9, "tokens_per_step": 2.0}])
def test_bad_perf_inputs_are_value_errors(kwargs):
    with pytest.raises(ValueError):
        compare("llama-2-7b", **kwargs)


def test_bad_accelerator_parameters_are_value_errors():
    with pytest.raises(ValueError, match="rows"):
        Accelerator(rows=0)
    with pytest.raises(ValueError, match="4 MAC lanes"):
        Accelerator(macs_per_pe=8)
    with pytest.raises(ValueError):
        Accelerator(mem_bw=0)


@pytest.mark.parametrize("n,k,rows,cols", [(8, 16, 1, 2), (64, 32, 2, 2), (130, 7, 4, 4),
                                           (256, 128, 16, 16)])
def test_layer_cycles_and_bytes_are_the_pe_array_golden_figures(n, k, rows, cols):
    from golden import pe_array

    acc = Accelerator(rows=rows, cols=cols)
    for mode in ("draft", "verify"):
        assert perf.layer_cycles(mode, n, k, acc) == pe_array.cycles(mode, n, k, rows, cols)
        assert perf.layer_weight_bytes(mode, n, k) == pe_array.weight_bytes(mode, n, k)
    assert perf.layer_cycles("fp16", n, k, acc) == pe_array.cycles("verify", n, k, rows, cols)
    # the baselines pack 2 or 4 weights per word: between the draft and the verify pass
    assert (perf.layer_cycles("draft", n, k, acc) <= perf.layer_cycles("w4", n, k, acc)
            <= perf.layer_cycles("w8", n, k, acc) <= perf.layer_cycles("verify", n, k, acc))
