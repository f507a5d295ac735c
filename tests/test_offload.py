"""golden.offload: exact timelines on hand-made traces, shapes, synthetic routing, studies."""

from __future__ import annotations

import numpy as np
import pytest

from golden import offload
from golden.model import ModelConfig, MoeLM
from golden.offload import (OffloadConfig, SHAPES, SyntheticRouting, compare_methods,
                            method_traces, reuse_rate, simulate, study_shape, synthetic_steps)
from golden.trace import TraceBuilder

# transfer 1.0 s, expert compute 0.1 s, dense part of a layer 0.2 s
CFG = OffloadConfig(expert_bytes=100, dense_bytes_per_layer=200, slots=4,
                    link_bytes_per_s=100.0, device_bytes_per_s=1000.0)


def layer(b, step, layer_, demands, prefetches=()):
    ids = [b.demand(step, layer_, e) for e in demands]
    for pl, pe in prefetches:
        b.prefetch(step, pl, pe)
    b.compute(step, layer_, len(demands))
    for i in ids:
        b.release(step, i)


def test_single_miss_costs_dense_plus_transfer_plus_compute():
    b = TraceBuilder(2, 8)
    layer(b, 0, 0, [3])
    r = simulate(b.trace, CFG)
    assert r.time_s == pytest.approx(1.3) and (r.hits, r.misses) == (0, 1)
    assert r.stall_s == pytest.approx(1.0) and r.bytes_transferred == 100


def test_hit_costs_only_compute():
    b = TraceBuilder(2, 8)
    layer(b, 0, 0, [3])
    layer(b, 1, 0, [3])
    r = simulate(b.trace, CFG)
    assert r.time_s == pytest.approx(1.6) and (r.hits, r.misses) == (1, 1)
    assert r.tokens == 2 and r.time_per_token_s == pytest.approx(0.8)


def test_misses_of_one_layer_are_serialized_and_overlap_compute():
    b = TraceBuilder(2, 8)
    layer(b, 0, 0, [1, 2])
    r = simulate(b.trace, CFG)
    assert r.time_s == pytest.approx(2.3) and r.stall_s == pytest.approx(1.9)


def test_prefetch_overlaps_transfer_with_compute():
    b = TraceBuilder(2, 8)
    layer(b, 0, 0, [0], prefetches=[(1, 1)])
    layer(b, 0, 1, [1])
    with_pf = simulate(b.trace, CFG)
    b2 = TraceBuilder(2, 8)
    layer(b2, 0, 0, [0])
    layer(b2, 0, 1, [1])
    without = simulate(b2.trace, CFG)
    assert without.time_s == pytest.approx(2.6)
    assert with_pf.time_s == pytest.approx(2.3)
    assert with_pf.prefetches_issued == 1 and with_pf.prefetches_useful == 1


def test_a_running_prefetch_fill_is_not_preempted_by_a_demand():
    """The RTL's DMA runs a fill to completion (review finding B: the model used to let a
    demand preempt the prefetch burst by burst)."""
    b = TraceBuilder(1, 8)
    b.prefetch(0, 0, 5)
    layer(b, 0, 0, [0])
    layer(b, 1, 0, [5])
    r = simulate(b.trace, CFG)
    # the prefetch reaches the link at 0.2 and runs to 1.2; demand (0,0), issued at 0.2
    # behind it, transfers 1.2..2.2, computes to 2.3; step 1: dense to 2.5, hit, 2.6
    assert r.time_s == pytest.approx(2.6)
    assert [(f.kind, f.expert, f.start, f.end) for f in r.fills] == [
        ("prefetch", 5, pytest.approx(0.2), pytest.approx(1.2)),
        ("demand", 0, pytest.approx(1.2), pytest.approx(2.2))]
    assert r.hits == 1 and r.prefetches_useful == 1


def test_a_demand_goes_ahead_of_prefetches_still_in_the_queue():
    cfg = OffloadConfig(expert_bytes=100, dense_bytes_per_layer=200, slots=6, queue_depth=4,
                        link_bytes_per_s=100.0, device_bytes_per_s=1000.0)
    b = TraceBuilder(2, 8)
    layer(b, 0, 0, [0], prefetches=[(1, 1), (1, 2), (1, 3)])
    layer(b, 0, 1, [4])
    layer(b, 1, 1, [2])
    r = simulate(b.trace, cfg)
    # demand (0,0) 0.2..1.2; the prefetches are issued at 1.2 (the port waited for the
    # demand's fill): (1,1) runs 1.2..2.2, (1,2) is handed to the DMA at once (2.2..3.2),
    # (1,3) waits in the queue. Layer 1's demand (1,4), issued at 1.5 (compute to 1.3, dense
    # to 1.5), reaches the DMA when (1,2) starts, ahead of (1,3): 3.2..4.2, compute to 4.3.
    # Step 1: dense to 4.5, (1,2) is resident: 4.6. (Preempting the prefetches, the demand
    # would have been done at 2.5 and (1,2) still in flight at step 1: 4.3.)
    assert r.time_s == pytest.approx(4.6) and r.hits == 1 and r.prefetches_useful == 1
    order = [(f.kind, f.layer, f.expert) for f in r.fills]
    assert order == [("demand", 0, 0), ("prefetch", 1, 1), ("prefetch", 1, 2),
                     ("demand", 1, 4), ("prefetch", 1, 3)]
    assert [f.end for f in r.fills] == pytest.approx([1.2, 2.2, 3.2, 4.2, 5.2])
    assert r.fills[3].issued == pytest.approx(1.5) and r.fills[3].committed == pytest.approx(2.2)


def test_fill_order_follows_the_rtl_rule_on_random_traces(rng):
    """Every fill runs to completion once started, fills never overlap, the DMA holds the
    running fill and at most one more, prefetches keep their issue order, and a demand is
    handed over before every prefetch still queued when it was issued."""
    ranks = SyntheticRouting(seed=int(rng.integers(1 << 30))).rankings(4, 12, 4, 40)
    fb = SyntheticRouting(seed=int(rng.integers(1 << 30)), fallback_rate=0.4).fallbacks(40)
    big, little, mobile = synthetic_steps(ranks, fb, 2)
    trace = method_traces(big, little, mobile, 4, 12)["mobile_prefetch"]
    for depth in (1, 2, 3, 5):
        cfg = OffloadConfig(expert_bytes=100, dense_bytes_per_layer=30, slots=14,
                            queue_depth=depth, link_bytes_per_s=100.0, device_bytes_per_s=500.0)
        r = simulate(trace, cfg)
        fills = r.fills
        assert len(fills) == r.misses + r.prefetches_issued
        for i, f in enumerate(fills):
            assert f.issued <= f.committed <= f.start
            assert f.end == pytest.approx(f.start + cfg.transfer_s)        # never preempted
            if i:
                prev = fills[i - 1]
                assert f.start == pytest.approx(max(f.committed, prev.end))
                assert f.committed >= prev.start - 1e-12   # the DMA had room: prev started
        pos = {id(f): i for i, f in enumerate(fills)}
        pre = [f for f in fills if f.kind == "prefetch"]
        assert [f.issued for f in pre] == sorted(f.issued for f in pre)
        overtaken = 0
        for d in (f for f in fills if f.kind == "demand"):
            for p in pre:
                if p.issued < d.issued and p.committed > d.issued:
                    assert pos[id(d)] < pos[id(p)], (d, p)
                    overtaken += 1
                if depth <= 2 and p.issued < d.issued:
                    # with 2 prefetches in flight at most, both have reached the DMA
                    # before any demand can arrive: demand priority never shows
                    assert pos[id(p)] < pos[id(d)], (d, p)
        assert (overtaken > 0) == (depth > 2), (depth, overtaken)


def test_demand_with_all_slots_filling_waits_for_oldest_prefetch():
    cfg = OffloadConfig(expert_bytes=100, dense_bytes_per_layer=200, slots=1,
                        link_bytes_per_s=100.0, device_bytes_per_s=1000.0)
    b = TraceBuilder(1, 8)
    b.prefetch(0, 0, 1)
    layer(b, 0, 0, [0])
    r = simulate(b.trace, cfg)
    assert r.time_s == pytest.approx(2.3) and r.misses == 1


def test_too_few_slots_for_one_layer_is_an_error():
    cfg = OffloadConfig(expert_bytes=1, dense_bytes_per_layer=0, slots=1)
    b = TraceBuilder(1, 8)
    layer(b, 0, 0, [0, 1])
    with pytest.raises(ValueError, match="cannot hold"):
        simulate(b.trace, cfg)


@pytest.mark.parametrize("kw", [dict(slots=0), dict(expert_bytes=0), dict(link_bytes_per_s=0.0),
                                dict(dense_bytes_per_layer=-1), dict(policy="mru")])
def test_bad_offload_config_is_refused(kw):
    base = dict(expert_bytes=1, dense_bytes_per_layer=0, slots=1)
    base.update(kw)
    with pytest.raises(ValueError):
        OffloadConfig(**base)


def test_published_expert_sizes_match_model_shapes_table():
    mb = {k: s.expert_bytes / 1e6 for k, s in SHAPES.items()}
    assert mb["mixtral_8x7b"] == pytest.approx(352.3, abs=0.05)
    assert mb["qwen15_moe_a27b"] == pytest.approx(17.3, abs=0.05)
    assert mb["olmoe_1b_7b"] == pytest.approx(12.6, abs=0.05)
    assert mb["deepseek_v2_lite"] == pytest.approx(17.3, abs=0.05)
    assert [(s.moe_layers, s.n_experts, s.top_k) for s in SHAPES.values()] == \
        [(32, 8, 2), (24, 60, 4), (16, 64, 8), (26, 64, 6)]


def test_synthetic_routing_is_seeded_distinct_and_sticky():
    r = SyntheticRouting(seed=3)
    a = r.rankings(4, 16, 4, 200)
    assert np.array_equal(a, SyntheticRouting(seed=3).rankings(4, 16, 4, 200))
    assert a.shape == (200, 4, 4)
    assert all(len(set(row)) == 4 for row in a.reshape(-1, 4))
    loose = SyntheticRouting(seed=3, stickiness=0.0).rankings(4, 16, 4, 200)
    assert reuse_rate(a) > reuse_rate(loose) + 0.1
    fb = SyntheticRouting(seed=3, fallback_rate=0.3).fallbacks(4000)
    assert abs(fb.mean() - 0.3) < 0.03


def test_synthetic_steps_little_half_and_fallback_passes():
    ranks = np.array([[[0, 1, 2, 3]], [[4, 5, 6, 7]]])
    big, little, mobile = synthetic_steps(ranks, np.array([False, True]), 2)
    assert big[0].passes[0].layers[0].experts == (0, 1, 2, 3)
    assert little[1].passes[0].layers[0].experts == (4, 5)
    assert little[1].passes[0].layers[0].prefetch == (6, 7)
    assert [len(s.passes) for s in mobile] == [1, 2]


def test_methods_share_one_configuration_and_baseline_speedup_is_one():
    ranks = SyntheticRouting(seed=1).rankings(3, 8, 2, 40)
    big, little, mobile = synthetic_steps(ranks, SyntheticRouting(seed=1).fallbacks(40), 1)
    traces = method_traces(big, little, mobile, 3, 8)
    cfg = OffloadConfig(expert_bytes=1000, dense_bytes_per_layer=100, slots=6,
                        link_bytes_per_s=1e6, device_bytes_per_s=1e8)
    out = compare_methods(traces, cfg)
    assert set(out) == set(offload.METHODS)
    assert out["lru_big"]["speedup_vs_lru"] == 1.0
    assert out["little"]["misses"] < out["lru_big"]["misses"]
    assert out["mobile_prefetch"]["prefetches_issued"] > 0 == out["mobile"]["prefetches_issued"]
    for policy in ("fifo", "lfu"):
        r = simulate(traces["mobile_prefetch"], OffloadConfig(
            expert_bytes=1000, dense_bytes_per_layer=100, slots=6, policy=policy))
        assert r.tokens == 40


def test_link_bound_mixtral_little_only_nearly_halves_time():
    st = study_shape(SHAPES["mixtral_8x7b"], tokens=24, routing=SyntheticRouting(seed=2))
    assert st.config.slots == 64
    assert st.methods["little"]["speedup_vs_lru"] > 1.5
    assert 1.0 < st.methods["mobile"]["speedup_vs_lru"] < st.methods["little"]["speedup_vs_lru"]


def test_tiny_study_and_bench_values(seed):
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, n_experts=8, top_k=4, d_expert=32,
                      max_seq=32)
    model = MoeLM.init_random(cfg, seed % 1000)
    tiny = offload.study_tiny(model, "random test model", windows=1, window=16,
                              taus=(0.0, 1.01), tau=1.01)
    assert tiny.config.slots == 4 and tiny.tau == 1.01
    assert [row["tau"] for row in tiny.sweep] == [0.0, 1.01]
    shapes = {"olmoe_1b_7b": study_shape(SHAPES["olmoe_1b_7b"], tokens=8)}
    values = offload.bench_values(tiny, shapes)
    for key in ("mobile_speedup_vs_lru", "mobile_top1_agreement", "mobile_fallback_rate",
                "mobile_hit_rate", "lru_hit_rate", "mobile_speedup_olmoe_1b_7b"):
        assert np.isfinite(values[key])
    assert values["mobile_fallback_rate"] == 1.0 and values["mobile_top1_agreement"] == 1.0
    text = "\n".join(offload.report_lines(tiny, shapes))
    assert "SYNTHETIC" in text and "random test model" in text and "1.60x-1.72x" in text
    js = offload.study_json(tiny, shapes)
    assert js["shapes"]["olmoe_1b_7b"]["routing"] == "SYNTHETIC"


def test_tiny_lm_compute_is_the_accelerator_cycle_model_by_default():
    """Review finding C: the tiny LM's compute side was a GPU bytes/bandwidth figure with no
    per-layer cost; it is now the accelerator's golden.perf cycle model (labelled)."""
    from golden import perf

    mc = ModelConfig()
    cfg = offload.tiny_config(mc, 16)
    assert cfg.dense_s > 10 * cfg.dense_bytes_per_layer / offload.GPU_BYTES_PER_S
    acc = perf.Accelerator()
    d, f = mc.d_model, mc.d_expert
    # attention projections + router, each a PE-array pass (tiles, pipeline, drain)
    dense_cycles = (4 * perf.layer_cycles("fp16", d, d, acc)
                    + perf.layer_cycles("fp16", mc.n_experts, d, acc)
                    + 2 * offload.DEFAULT_CONTEXT * d / (4 * acc.pes))
    assert cfg.dense_s == pytest.approx(dense_cycles / acc.clock_hz)
    assert cfg.expert_compute_s == pytest.approx(
        (2 * perf.layer_cycles("fp16", f, d, acc) + perf.layer_cycles("fp16", d, f, acc))
        / acc.clock_hz)
    assert cfg.pass_overhead_s == pytest.approx(
        perf.layer_cycles("fp16", mc.vocab, d, acc) / acc.clock_hz)
    assert cfg.compute.startswith("measured: golden.perf") and "assumed" in cfg.compute
    gpu = offload.tiny_config(mc, 16, compute="gpu")
    assert gpu.dense_s == pytest.approx(gpu.dense_bytes_per_layer / offload.GPU_BYTES_PER_S)
    assert gpu.compute.startswith("assumed")
    with pytest.raises(ValueError, match="compute"):
        offload.tiny_config(mc, 16, compute="tpu")


def test_layer_and_pass_overheads_are_paid_by_every_pass():
    b = TraceBuilder(2, 8)
    for passes in ((0,), (0, 0)):          # token 1 falls back: a second pass over both layers
        step = len(passes) - 1
        for _ in passes:
            layer(b, step, 0, [1])
            layer(b, step, 1, [2])
    base = simulate(b.trace, CFG)
    more = simulate(b.trace, OffloadConfig(**{**CFG.__dict__, "layer_overhead_s": 0.5,
                                              "pass_overhead_s": 0.25}))
    # 3 passes of 2 layers: 6 layer overheads and 3 pass overheads, all on the critical path
    assert more.time_s == pytest.approx(base.time_s + 6 * 0.5 + 3 * 0.25)
    with pytest.raises(ValueError):
        OffloadConfig(expert_bytes=1, dense_bytes_per_layer=0, slots=1, pass_overhead_s=-1.0)


def test_headline_speedup_compares_like_with_like_and_overheads_cost_mobile(seed):
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, n_experts=8, top_k=4, d_expert=32,
                      max_seq=32)
    model = MoeLM.init_random(cfg, seed % 1000)
    tiny = offload.study_tiny(model, "random test model", windows=1, window=24,
                              taus=(0.0, 1.01), tau=1.01)
    values = offload.bench_values(tiny, {})
    # neither side prefetches in the headline; the prefetch variant has its own key
    assert values["mobile_speedup_vs_lru"] == tiny.methods["mobile"]["speedup_vs_lru"]
    assert values["mobile_noprefetch_speedup_vs_lru"] == values["mobile_speedup_vs_lru"]
    assert (values["mobile_prefetch_speedup_vs_lru"]
            == tiny.methods["mobile_prefetch"]["speedup_vs_lru"])
    assert values["mobile_hit_rate"] == tiny.methods["mobile"]["hit_rate"]
    assert values["mobile_dense_layer_us"] == pytest.approx(tiny.config.dense_s * 1e6)
    rows = offload.overhead_sensitivity(tiny)
    assert [r["layer_overhead_s"] for r in rows if r["compute"] == "study"] == \
        list(offload.LAYER_OVERHEADS_S)
    # tau > 1: every token falls back and re-runs every layer, so a per-layer cost hurts MoBiLE
    for kind in ("study", "gpu"):
        s = [r["speedup_mobile"] for r in rows if r["compute"] == kind]
        assert s == sorted(s, reverse=True) and s[-1] < s[0]
    zero = next(r for r in rows if r["compute"] == "study" and r["layer_overhead_s"] == 0)
    assert zero["speedup_mobile"] == pytest.approx(values["mobile_speedup_vs_lru"])
