"""The SPEQ demo's speedup-vs-gamma figure and the speq bench's projected keys come from the
fixed performance model: a verify of gamma + 1 > 4 tokens streams the weights once per weight
pass (review finding A)."""

from __future__ import annotations

import pytest

from golden import perf


def _memory_bound_speedup(tokens_per_step: float, gamma: int, context: int = 512) -> float:
    """Speedup over FP16 on Llama-2-7B with the default accelerator, from bytes alone (the
    accelerator is memory-bound in every pass): tokens/step x FP16 bytes / step bytes, where a
    step reads the draft plane gamma times and all 16 bits once per weight pass of the verify."""
    shape = perf.get_shape("llama-2-7b")

    def weights(mode):
        mats = shape.attn_matrices() + shape.expert_matrices()
        return (shape.n_layers * sum(perf.layer_weight_bytes(mode, n, k) for n, k in mats)
                + perf.layer_weight_bytes(mode, shape.vocab, shape.d_model))

    def kv(tokens):
        return shape.n_layers * 2 * shape.kv_dim * 2 * (context + tokens)

    passes = -(-(gamma + 1) // 4)
    step = gamma * (weights("draft") + kv(1)) + passes * weights("verify") + kv(gamma + 1)
    return tokens_per_step * (weights("fp16") + kv(1)) / step


def test_default_accelerator_is_memory_bound_in_every_speq_pass():
    for gamma in range(1, 9):
        r = perf.compare("llama-2-7b", gamma=gamma, acceptance=0.9)
        assert r["bound"]["fp16"] == r["bound"]["speq_draft"] == "memory"
        assert r["bound"]["speq_verify"] == "memory", gamma


def test_demo_speedup_vs_gamma_curves_use_the_fixed_model():
    from speqmoe.demos import speq as demo

    measured = {1: 1.9, 3: 3.2, 4: 3.7, 5: 4.2, 6: 4.6}
    curves = demo.gamma_curves(measured, 0.86)
    for g in demo.GAMMAS:
        want = _memory_bound_speedup(perf.expected_tokens_per_step(perf.PAPER_ACCEPTANCE, g), g)
        assert curves["paper"][g] == pytest.approx(want, rel=1e-6), g
        want = _memory_bound_speedup(perf.expected_tokens_per_step(0.86, g), g)
        assert curves["ours"][g] == pytest.approx(want, rel=1e-6), g
    for g, tps in measured.items():
        assert curves["measured"][g] == pytest.approx(_memory_bound_speedup(tps, g), rel=1e-6)
    # the second weight pass at gamma 4 costs more than the extra accepted token brings
    assert curves["paper"][4] < curves["paper"][3]


def test_speq_bench_projection_keys_use_the_fixed_model():
    from speqmoe.benches import speq as bench

    measured = {1: 1.89, 2: 2.59, 3: 3.19, 4: 3.69, 5: 4.17, 6: 4.64}
    values, projections = bench.perf_values(measured)
    for g, tps in measured.items():
        assert values[f"speq_speedup_llama2_7b_gamma{g}"] == pytest.approx(
            _memory_bound_speedup(tps, g), rel=1e-6), g
    assert values["speq_speedup_llama2_7b"] == values["speq_speedup_llama2_7b_gamma3"]
    assert set(projections) == {"llama2_7b", "llama3_1_8b"}
