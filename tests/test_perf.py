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
    # 4 tokens share one stream of weight words; the fifth needs a second weight pass, which
    # streams every weight from memory again
    assert v4["cycles"] - fp16["cycles"] < 0.01 * fp16["cycles"]
    assert v5["cycles"] > 1.9 * fp16["cycles"]
    assert v5["weight_bytes"] == pytest.approx(2 * fp16["weight_bytes"])
    assert draft["cycles"] < 0.26 * fp16["cycles"]
    assert fp16["bound"] == "memory"


def test_memory_bound_speq_speedup_is_tokens_per_step_over_step_bytes():
    # an accelerator with effectively unlimited compute: only bytes matter. A step reads the
    # draft plane gamma times (1/4 of the FP16 bytes each) and all 16 bits once per weight
    # pass of the verify: ceil((gamma + 1) / 4) passes, as only 4 tokens fit the 4 lanes
    acc = Accelerator(clock_hz=1e15, mem_bw=100e9)
    for alpha, gamma in ((0.976, 3), (0.6, 2), (0.9, 6), (0.976, 4), (0.976, 7), (0.9, 8)):
        r = compare("llama-2-7b", acc, gamma=gamma, context=0, acceptance=alpha)
        want = expected_tokens_per_step(alpha, gamma) / (gamma / 4 + -(-(gamma + 1) // 4))
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


def _closed_form_cycles(rows_per_pe_word: int, n: int, k: int, pes: int) -> int:
    """First beat to last result of one pass, written out independently of golden/:
    ``ceil(ceil(N / rows_per_pe_word) / P)`` tiles of ``K`` beats; a tile shorter than the
    ``P``-beat drain of the previous one waits for it; 7 cycles of latency (3 in the PE, 2 in
    the array's input registers, 2 in its result drain; first beat and last result both
    counted: + 6); the last tile drains ``P`` beats."""
    tiles = -(-(-(-n // rows_per_pe_word)) // pes)
    return k + 6 + (tiles - 1) * max(k, pes) + pes


# (N, K, rows, cols) -> cycles of draft (4 rows per word), verify = fp16 (1), w8 (2), w4 (4),
# worked out by hand from the closed form above.
LAYER_CYCLES = {
    (8, 16, 1, 2): {"draft": 24, "verify": 72, "w8": 40, "w4": 24},          # K >= P
    (64, 32, 2, 2): {"draft": 138, "verify": 522, "w8": 266, "w4": 138},
    (130, 7, 4, 4): {"draft": 61, "verify": 157, "w8": 93, "w4": 61},        # K < P: waits
    (256, 128, 16, 16): {"draft": 390, "verify": 390, "w8": 390, "w4": 390},  # one tile
    (20, 3, 1, 4): {"draft": 17, "verify": 29, "w8": 21, "w4": 17},          # K < P
}
ROWS_PER_WORD = {"draft": 4, "verify": 1, "fp16": 1, "w8": 2, "w4": 4}


@pytest.mark.parametrize("n,k,rows,cols", list(LAYER_CYCLES))
def test_layer_cycles_and_bytes_match_the_closed_form_and_worked_figures(n, k, rows, cols):
    from golden import pe_array

    acc = Accelerator(rows=rows, cols=cols)
    want = dict(LAYER_CYCLES[(n, k, rows, cols)], fp16=LAYER_CYCLES[(n, k, rows, cols)]["verify"])
    for mode, cycles in want.items():
        assert _closed_form_cycles(ROWS_PER_WORD[mode], n, k, rows * cols) == cycles, mode
        assert perf.layer_cycles(mode, n, k, acc) == cycles, mode
    for mode in ("draft", "verify"):
        assert perf.layer_weight_bytes(mode, n, k) == pe_array.weight_bytes(mode, n, k)
    # draft plane: ceil(N/4) * K words; verify adds the 12-bit residuals, packed
    assert perf.layer_weight_bytes("draft", n, k) == -(-n // 4) * k * 2
    assert perf.layer_weight_bytes("verify", n, k) == -(-n // 4) * k * 2 + -(-12 * n * k // 8)
    assert perf.layer_weight_bytes("fp16", n, k) == perf.layer_weight_bytes("verify", n, k)


@pytest.mark.parametrize("n,k,rows,cols", [(8, 16, 1, 2), (20, 3, 1, 4)])
def test_layer_cycles_are_the_rtl_cycle_counts(seed, n, k, rows, cols):
    """The PE array's RTL (Amaranth simulator, no stall, one pass at a time) takes exactly
    ``perf.layer_cycles`` from its first accepted beat to its last result."""
    from sim.array_flow import random_job, simulate_array

    rng = np.random.default_rng(seed)
    jobs = [random_job(rng, "draft", n, k, rows, cols),
            random_job(rng, "verify", n, k, rows, cols, tokens=4)]
    run = simulate_array(rows, cols, jobs, stall=0.0, backpressure=0.0, seed=seed,
                         overlap=False)
    acc = Accelerator(rows=rows, cols=cols)
    assert [s.cycles for s in run.stats] == [perf.layer_cycles("draft", n, k, acc),
                                             perf.layer_cycles("verify", n, k, acc)]
    # the baselines pack 2 or 4 weights per word: between the draft and the verify pass
    assert (perf.layer_cycles("draft", n, k, acc) <= perf.layer_cycles("w4", n, k, acc)
            <= perf.layer_cycles("w8", n, k, acc) <= perf.layer_cycles("verify", n, k, acc))


@pytest.mark.parametrize("gamma", [4, 5, 6, 7])
def test_every_verify_weight_pass_reads_the_weights_again(gamma):
    """gamma + 1 > 4 tokens take ceil((gamma+1)/4) weight passes; each streams the weights
    (review finding A: bytes were counted once while cycles were multiplied)."""
    shape, acc = get_shape("llama-2-7b"), Accelerator(clock_hz=1e15, mem_bw=100e9)
    fp16 = pass_time(shape, acc, "fp16", 1, 0)
    v = pass_time(shape, acc, "verify", gamma + 1, 0)
    passes = -(-(gamma + 1) // 4)
    # the speedup-vs-gamma curve the demo plots, memory-bound: tokens/step over step bytes
    curve = perf.speedup_vs_gamma("llama-2-7b", 0.976, [gamma], acc=acc, context=0)
    want = expected_tokens_per_step(0.976, gamma) / (gamma / 4 + passes)
    assert curve[gamma] == pytest.approx(want, rel=0.005)
    assert v["weight_bytes"] == pytest.approx(passes * fp16["weight_bytes"])
    assert v["weight_passes"] == passes


def test_expert_passes_match_a_simulation_of_routing_and_lane_groups(rng):
    """An expert streams its weights once per group of up to 4 of the tokens routed to it."""
    shape = perf.ModelShape("moe", 1, 64, 64, 1, 1, 16, n_experts=16, top_k=4)
    for tokens in (1, 3, 4, 5, 8):
        assert shape.expert_passes(tokens) >= shape.experts_read(tokens) - 1e-12
        if tokens <= 4:
            assert shape.expert_passes(tokens) == pytest.approx(shape.experts_read(tokens))
        sims = []
        for _ in range(4000):
            counts = np.zeros(16, dtype=int)
            for _t in range(tokens):
                counts[rng.choice(16, size=4, replace=False)] += 1
            sims.append(np.sum(-(-counts // 4)))
        assert np.mean(sims) == pytest.approx(shape.expert_passes(tokens), rel=0.02)
    dense = get_shape("llama-2-7b")
    assert [dense.expert_passes(t) for t in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]
    # a MoE verify pass reads its experts' bytes once per expert pass
    tiny = perf.tiny_shape()
    acc = Accelerator()
    v8 = pass_time(tiny, acc, "verify", 8, 0)
    v4 = pass_time(tiny, acc, "verify", 4, 0)
    per_expert = sum(perf.layer_weight_bytes("verify", n, k) for n, k in tiny.expert_matrices())
    dense_b = sum(perf.layer_weight_bytes("verify", n, k)
                  for n, k in tiny.attn_matrices() + tiny.router_matrices())
    head = perf.layer_weight_bytes("verify", tiny.vocab, tiny.d_model)
    assert v8["weight_bytes"] == pytest.approx(
        tiny.n_layers * (2 * dense_b + tiny.expert_passes(8) * per_expert) + 2 * head)
    assert v4["weight_bytes"] == pytest.approx(
        tiny.n_layers * (dense_b + tiny.experts_read(4) * per_expert) + head)


def test_fpga_target_uses_the_measured_fmax_and_the_pipelined_array_timing():
    from golden import pe_array

    acc = perf.Accelerator.fpga(rows=2, cols=2, fmax_mhz=102.4, mem_bw=200e6, device="LFE5U-85F",
                                mem_source="assumed: SDRAM", mul_stages=2, add_stages=3)
    assert acc.clock_hz == pytest.approx(102.4e6) and acc.clock_source.startswith("measured")
    assert (acc.interleave, acc.latency) == (4, 12)
    assert perf.layer_cycles("verify", 40, 64, acc) == pe_array.cycles(
        "verify", 40, 64, 2, 2, interleave=4, latency=12)
    assert perf.layer_cycles("draft", 40, 64, acc) > perf.layer_cycles(
        "draft", 40, 64, perf.Accelerator(rows=2, cols=2))          # padding to 4 tiles
    report = perf.compare("tiny-moe", acc)
    assert report["inputs"]["clock"] == acc.clock_source
    assert perf.Accelerator().clock_source.startswith("assumed")
    # the model takes every depth the PEs have, and no other
    from hw.fp import ADD_MAX_STAGES, MUL_MAX_STAGES

    assert perf.Accelerator(mul_stages=MUL_MAX_STAGES, add_stages=ADD_MAX_STAGES).latency == \
        pe_array.array_latency(MUL_MAX_STAGES, ADD_MAX_STAGES)
    for bad in (dict(add_stages=ADD_MAX_STAGES + 1), dict(mul_stages=MUL_MAX_STAGES + 1)):
        with pytest.raises(ValueError, match="pipeline depth"):
            perf.Accelerator(**bad)


def test_batch_features_time_a_matmul_at_the_pipeline_depth():
    from golden import accel, pe_array
    from golden.perf import batch_features

    cmd = accel.Matmul("verify", 70, 64, 0, 0, 0)       # 5 verify tiles on 16 PEs
    for ms, ad in ((0, 0), (4, 3)):
        base, _ = batch_features([cmd], rows=4, cols=4, latency=0, line_cycles=0.0,
                                 expert_lines=0, mul_stages=ms, add_stages=ad)
        assert base == pe_array.cycles("verify", 70, 64, 4, 4, interleave=ad + 1,
                                       latency=7 + ms + ad)
