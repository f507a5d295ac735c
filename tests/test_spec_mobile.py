"""SPEQ x MoBiLE (golden/spec_mobile.py), trace v2 and the plane cache of golden/offload.py."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from golden import model as gm
from golden import offload, spec_mobile, speq
from golden.offload import OffloadConfig, simulate
from golden.trace import TraceBuilder, format_trace, parse_trace
from test_speq import CHI2_999, PROMPTS, _peaked_small_vocab_model, chi_square


@pytest.mark.parametrize("gamma", [1, 2, 3, 4])
@pytest.mark.parametrize("router", ["draft", "full"])
def test_greedy_equals_plain_greedy_on_every_prompt(small, gamma, router):
    # dense parts on their drafts: with them at full precision the small random model's draft
    # is rarely rejected (the default draft is checked on the shipped model below)
    accepted = rejected = 0
    for prompt in PROMPTS:
        ref = gm.generate(small, prompt, 40)
        res = spec_mobile.generate(small, prompt, 40, gamma=gamma, draft_router=router,
                                   draft_dense="draft")
        assert res.bytes == ref, (prompt, gamma, router)
        accepted += res.stats.accepted
        rejected += res.stats.rejected
    assert accepted > 0 and rejected > 0        # both branches of the check were exercised


def test_greedy_equals_plain_greedy_on_the_shipped_model_with_every_draft_option():
    model = gm.load_default()
    luts = spec_mobile.scaled_luts(model, 1.06)
    for prompt in (b"The ", b"Return the "):
        ref = gm.generate(model, prompt, 32)
        for kw in ({}, {"draft_router": "full"}, {"draft_experts": "all"}, {"adaptive": 0.6},
                   {"draft": luts}, {"gamma": 5}, {"draft_dense": "draft", "draft": luts}):
            assert spec_mobile.generate(model, prompt, 32, **kw).bytes == ref, (prompt, kw)


def test_hardware_arithmetic_greedy_equals_plain_greedy_with_it(small):
    ref = gm.generate(small, PROMPTS[1], 8, linear=speq.hw_arith_linear)
    assert spec_mobile.generate(small, PROMPTS[1], 8, linear=speq.hw_arith_linear).bytes == ref


def test_draft_pass_uses_the_little_set_and_draft_weights(small):
    res = spec_mobile.generate(small, PROMPTS[2], 12, gamma=3)
    k, kl = small.config.top_k, res.little_k
    assert kl == k // 2
    for s in res.steps:
        assert all(len(ls.experts) == kl for p in s.drafts for ls in p.layers)
        assert all(len(ls.experts) == k for p in s.verify for ls in p.layers)
        assert len(s.verify) == len(s.drafts) + 1
    # the draft hook computes with the draft weights (full router only on request)
    x = np.ones(small.config.d_model, np.float32)
    d = speq.draft_weights(small)
    for router, name, w in (("draft", "layers.0.router", d["layers.0.router"]),
                            ("full", "layers.0.router", small.params["layers.0.router"]),
                            ("full", "head", d["head"])):
        hook = spec_mobile.draft_hook(small, router=router)
        np.testing.assert_array_equal(hook(name, None, x), w.astype(np.float32) @ x)


def test_full_dense_draft_runs_attention_and_head_at_full_precision_only(small):
    d = speq.draft_weights(small)
    full = spec_mobile.draft_hook(small, dense="full")
    seen = []

    def linear(name, w, x):
        seen.append((name, w))
        return np.asarray(w, np.float32) @ x

    via = spec_mobile.draft_hook(small, linear, dense="full")
    for name in ("layers.0.attn.wq", "layers.1.attn.wo", "head", "layers.0.router",
                 "layers.1.experts.3.w_down"):
        dense = ".attn." in name or name == "head"
        w = small.params[name] if dense else d[name]
        x = np.linspace(-1, 1, w.shape[1]).astype(np.float32)
        assert not np.array_equal(w, d[name] if dense else small.params[name]), name
        np.testing.assert_array_equal(full(name, small.params[name], x),
                                      w.astype(np.float32) @ x)
        via(name, small.params[name], x)
        assert seen[-1][1] is (small.params[name] if dense else d[name]), name
    res = spec_mobile.generate(small, PROMPTS[0], 24, draft_dense="full")
    assert res.bytes == gm.generate(small, PROMPTS[0], 24) and res.draft_dense == "full"


def test_weight_traffic_charges_full_dense_parts_four_times_their_draft_plane(small):
    from golden.pe_array import weight_bytes

    cfg = small.config
    res = spec_mobile.generate(small, PROMPTS[2], 24, gamma=3, draft_dense="draft")
    base = spec_mobile.weight_traffic(res, cfg)
    res.draft_dense = "full"
    full = spec_mobile.weight_traffic(res, cfg)
    d = cfg.d_model
    extra = (cfg.n_layers * 4 * (weight_bytes("verify", d, d) - weight_bytes("draft", d, d))
             + weight_bytes("verify", cfg.vocab, d) - weight_bytes("draft", cfg.vocab, d))
    assert weight_bytes("verify", d, d) == 4 * weight_bytes("draft", d, d)
    assert full["draft_bytes"] - base["draft_bytes"] == res.stats.draft_passes * extra
    assert full["verify_bytes"] == base["verify_bytes"] and full["tokens"] == 24
    # a verify of <= 4 tokens reads every dense matrix and each expert of its union once
    s = res.steps[0]
    union = sum(len({e for p in s.verify for e in p.layers[l].experts})
                for l in range(cfg.n_layers))
    one = spec_mobile.SpecMobileResult(b"", res.tokens, res.stats, [s], res.little_k, cfg.top_k)
    dense = sum(weight_bytes("verify", *small.params[n].shape) for n in small.linear_names()
                if ".experts." not in n)
    expert = sum(weight_bytes("verify", *small.params[f"layers.0.experts.0.{w}"].shape)
                 for w in ("w_gate", "w_up", "w_down"))
    assert spec_mobile.weight_traffic(one, cfg)["verify_bytes"] == dense + union * expert


def test_adaptive_draft_length_stops_early_and_stays_exact(small):
    plain = spec_mobile.generate(small, PROMPTS[3], 40, gamma=4)
    adaptive = spec_mobile.generate(small, PROMPTS[3], 40, gamma=4, adaptive=0.99)
    assert adaptive.bytes == plain.bytes
    assert adaptive.adaptive_stops > 0
    assert adaptive.stats.draft_passes < plain.stats.draft_passes
    assert all(1 <= len(s.drafts) <= 4 for s in adaptive.steps[:-1])
    never = spec_mobile.generate(small, PROMPTS[3], 40, gamma=4, adaptive=0.0)
    assert never.stats.as_dict() == plain.stats.as_dict() and never.adaptive_stops == 0


def test_rejection_sampling_is_lossless_in_distribution(seed):
    model = _peaked_small_vocab_model(seed)
    prompt, runs = bytes([1, 3]), 2000
    p1 = speq._probs(model.forward(prompt, model.new_cache())[-1], 1.0)
    joint = np.array([p1[a] * speq._probs(model.forward(prompt + bytes([a]),
                                                        model.new_cache())[-1], 1.0)
                      for a in range(4)]).reshape(16)
    rng = np.random.default_rng(seed)
    counts = np.zeros(16)
    rejected = 0
    for _ in range(runs):
        res = spec_mobile.generate(model, prompt, 3, gamma=2, verify="sample",
                                   seed=int(rng.integers(2**32)))
        counts[res.tokens[0] * 4 + res.tokens[1]] += 1
        rejected += res.stats.rejected
    assert rejected > runs // 20, "draft too close to the target for a meaningful test"
    keep = joint * runs >= 5
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(joint[keep], joint[~keep].sum())
    if exp[-1] * runs < 5:
        obs, exp = obs[:-1], exp[:-1]
    stat = chi_square(obs, exp / exp.sum())
    assert stat < CHI2_999.get(len(obs) - 1, 16.266 + 1.1 * (len(obs) - 4)), stat


@pytest.mark.parametrize("kwargs,match", [
    ({"gamma": 0}, "gamma"), ({"verify": "beam"}, "verify"), ({"adaptive": 1.5}, "adaptive"),
    ({"draft_router": "x"}, "draft_router"), ({"draft_experts": "some"}, "draft_experts"),
    ({"draft_dense": "half"}, "draft_dense must be one of draft, full"),
    ({"little_k": 2}, "little_k"), ({"prompt": b""}, "empty"),
    ({"draft": {"head": np.zeros((1, 1), np.float16)}}, "draft weights lack"),
])
def test_bad_input_is_a_clear_value_error(small, kwargs, match):
    args = {"prompt": b"hello", "max_new_tokens": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        spec_mobile.generate(small, **args)


def test_trace_of_a_run_is_version_2_with_planes_and_round_trips(small):
    res = spec_mobile.generate(small, PROMPTS[1], 20, gamma=3)
    cfg = small.config
    tr = spec_mobile.build_trace(res, cfg.n_layers, cfg.n_experts, method="test")
    text = format_trace(tr)
    assert text.startswith("speqmoe-expert-trace 2\n")
    assert parse_trace(text) == tr
    drafts = [r for r in tr.records if r.op == "D" and r.plane == "draft"]
    assert len(drafts) == res.stats.draft_passes * cfg.n_layers * res.little_k
    layers = [r for r in tr.records if r.op == "L"]
    assert sum(r.mode == "full" for r in layers) == res.stats.verify_passes * cfg.n_layers
    assert sum(r.tokens for r in layers if r.mode == "full") == \
        res.stats.verify_tokens * cfg.n_layers
    # a verify layer demands the union of its tokens' experts once, never more than k pinned
    pinned = 0
    for r in tr.records:
        pinned += (r.op == "D") - (r.op == "R")
        assert pinned <= cfg.top_k


def test_version_1_traces_still_read_and_time_the_same_with_a_plane_cache():
    v1 = ("speqmoe-expert-trace 1\nmeta n_layers 2\nmeta n_experts 4\n"
          "D 0 0 1 0\nX 0 0 1\nR 0 0\nD 1 0 1 1\nD 1 0 2 2\nX 1 0 2\nR 1 1\nR 1 2\n")
    t = parse_trace(v1)
    assert t.version == 1 and all(r.plane is None for r in t.records if r.op == "D")
    assert format_trace(t) == v1
    cfg = OffloadConfig(expert_bytes=100, dense_bytes_per_layer=200, slots=4,
                        link_bytes_per_s=100.0, device_bytes_per_s=1000.0)
    a = simulate(t, cfg)
    b = simulate(t, OffloadConfig(**{**cfg.__dict__, "plane_cache": True}))
    assert a.time_s == pytest.approx(b.time_s) and a.bytes_transferred == b.bytes_transferred
    assert (a.misses, b.misses) == (2, 8)          # a plane cache fills four quarters


def test_bad_version_2_records_are_refused_with_a_line_number():
    head = "speqmoe-expert-trace 2\nmeta n_layers 2\nmeta n_experts 4\n"
    for body, words in (("D 0 0 1 0 draft\n", "before the first L"),
                        ("L 0 0 full 1\nD 0 1 1 0 full\n", "inside the layer pass"),
                        ("L 0 0 half 1\n", "mode must be"),
                        ("L 0 0 full 0\n", "tokens >= 1"),
                        ("L 0 0 full 1\nD 0 0 1 0 top\n", "plane must be"),
                        ("L 0 0 full 1\nD 0 0 1 0\n", "5 fields")):
        with pytest.raises(ValueError, match=words):
            parse_trace(head + body, name="t")


def test_a_draft_plane_fetched_for_a_draft_is_reused_by_the_verify():
    # transfer of an expert 1.0 s (a plane unit 0.25 s), expert compute 0.1 s, dense 0.2 s
    cfg = OffloadConfig(expert_bytes=100, dense_bytes_per_layer=200, slots=4,
                        link_bytes_per_s=100.0, device_bytes_per_s=1000.0, plane_cache=True,
                        draft_ratio=0.5)
    b = TraceBuilder(1, 4)
    b.layer(0, 0, "draft", 1)
    i = b.demand(0, 0, 2, plane="draft")
    b.compute(0, 0, 1)
    b.release(0, i)
    b.layer(0, 0, "full", 2)
    i = b.demand(0, 0, 2, plane="full")
    b.compute(0, 0, 1)
    b.release(0, i)
    r = simulate(b.trace, cfg, tokens=2)
    # draft: dense 0.1, fill 0.25, compute 0.05 -> 0.4; verify: dense 0.2, three residual
    # quarters 0.75 (the draft plane hits), compute 0.1 -> 1.45
    assert r.time_s == pytest.approx(1.45) and r.time_per_token_s == pytest.approx(0.725)
    assert (r.hits, r.misses) == (1, 4) and r.bytes_transferred == 100
    with pytest.raises(ValueError, match="plane_cache"):
        simulate(b.trace, OffloadConfig(**{**cfg.__dict__, "plane_cache": False}))


def test_split_plane_cache_keeps_draft_planes_while_residuals_stream():
    base = dict(expert_bytes=100, dense_bytes_per_layer=200, slots=2, link_bytes_per_s=100.0,
                device_bytes_per_s=1000.0, plane_cache=True)
    b = TraceBuilder(1, 4)

    def layer_pass(mode, groups):
        b.layer(0, 0, mode, 1 if mode == "draft" else 2)
        for group in groups:
            ids = [b.demand(0, 0, e, plane="draft" if mode == "draft" else "full")
                   for e in group]
            b.compute(0, 0, len(ids))
            for i in ids:
                b.release(0, i)

    layer_pass("draft", [[0, 1]])
    layer_pass("full", [[0], [1], [2]])        # one expert per verify group
    layer_pass("draft", [[0, 1]])
    one = simulate(b.trace, OffloadConfig(**base))
    split = simulate(b.trace, OffloadConfig(**base, draft_units=5))
    # one LRU cache of 8 units: expert 2 evicts expert 0's draft plane with its residual, and
    # refetching that plane evicts expert 1's, so the second draft misses both; split (5 draft
    # units, 3 residual units): residuals stream and both draft planes stay
    assert (one.hits, one.misses, one.bytes_transferred) == (2, 14, 350)
    assert (split.hits, split.misses, split.bytes_transferred) == (4, 12, 300)
    for bad in (dict(base, draft_units=8), dict(base, plane_cache=False, draft_units=4)):
        with pytest.raises(ValueError, match="draft_units"):
            OffloadConfig(**bad)
    assert offload.split_config(OffloadConfig(**base), 2).draft_units == 2
    assert offload.split_config(OffloadConfig(**base), 3).draft_units == 0   # too small
    # room for every draft plane: the draft part holds one per expert, residuals get the rest
    assert offload.split_config(OffloadConfig(**base), 1, experts=3).draft_units == 3
    assert offload.split_config(OffloadConfig(**base), 1, experts=9).draft_units == 5


NB = dict(expert_bytes=100, dense_bytes_per_layer=0, slots=2, link_bytes_per_s=100.0,
          dense_time_s=0.5, expert_time_s=0.25)      # a fill 1.0 s, dense 0.5 s, expert 0.25 s


def test_nonblocking_host_fills_a_verify_group_while_the_previous_one_computes():
    # one verify layer pass over 2 tokens, 4 experts in two groups of 2, 2 slots, all misses
    b = TraceBuilder(1, 4)
    b.layer(0, 0, "full", 2)
    for group in ((0, 1), (2, 3)):
        ids = [b.demand(0, 0, e) for e in group]
        b.compute(0, 0, 2)
        for i in ids:
            b.release(0, i)
    blocking = simulate(b.trace, OffloadConfig(**NB))
    nb = simulate(b.trace, OffloadConfig(**NB, host="nonblocking"))
    # blocking: fills 0.5-1.5, 1.5-2.5, computes to 2.75, then fills 2.75-4.75, compute 5.0;
    # non-blocking: expert 0 is computed (1.5-1.75) and released while expert 1 fills, so
    # expert 2's fill follows expert 1's at 2.5: fills back to back, last compute 4.5-4.75
    assert blocking.time_s == pytest.approx(5.0) and nb.time_s == pytest.approx(4.75)
    assert [f.start for f in nb.fills] == pytest.approx([0.5, 1.5, 2.5, 3.5])
    assert (nb.misses, nb.bytes_transferred, nb.dense_s) == (4, 400, 0.5)
    assert blocking.misses == 4 and nb.compute_s == pytest.approx(blocking.compute_s)


def test_full_dense_draft_pays_a_full_pass_of_dense_compute_in_the_time_model():
    cfg = OffloadConfig(expert_bytes=4000, dense_bytes_per_layer=2000, slots=8,
                        plane_cache=True, pass_overhead_s=1e-6, layer_overhead_s=1e-7)
    full = replace(cfg, draft_dense_ratio=1.0)
    assert cfg.layer_time_s("draft") < cfg.layer_time_s("full") == full.layer_time_s("draft")
    assert full.head_time_s("draft") == full.head_time_s("full") == 1e-6
    assert full.expert_time_for("draft", 1) == cfg.expert_time_for("draft", 1)
    b = TraceBuilder(2, 4, top_k=2)
    for layer in range(2):
        b.layer(0, layer, "draft", 1)
        ids = [b.demand(0, layer, e, plane="draft") for e in (0, 1)]
        b.compute(0, layer, 2)
        for rid in ids:
            b.release(0, rid)
    for host in ("blocking", "nonblocking"):
        r0 = simulate(b.trace, replace(cfg, host=host))
        r1 = simulate(b.trace, replace(full, host=host))
        extra = 2 * 0.75 * (cfg.dense_s - cfg.layer_overhead_s) + 0.75 * 1e-6
        assert r1.dense_s - r0.dense_s == pytest.approx(extra)
        assert r1.bytes_transferred == r0.bytes_transferred
    with pytest.raises(ValueError, match="draft_dense_ratio"):
        replace(cfg, draft_dense_ratio=0.0)
    with pytest.raises(ValueError, match="draft_dense must be one of draft, full"):
        offload.study_spec_shape(offload.SHAPES[next(iter(offload.SHAPES))], alpha=0.9,
                                 mobile_agreement=0.9, draft_dense="half")


def test_nonblocking_host_serves_a_hit_under_a_waiting_miss():
    b = TraceBuilder(1, 4)
    for step, experts in ((0, (0,)), (1, (1, 0))):
        b.layer(step, 0, "full", 1)
        ids = [b.demand(step, 0, e) for e in experts]
        b.compute(step, 0, len(ids))
        for i in ids:
            b.release(step, i)
    blocking = simulate(b.trace, OffloadConfig(**NB))
    nb = simulate(b.trace, OffloadConfig(**NB, host="nonblocking"))
    # step 0: 0.5 + fill 1.0 + 0.25 = 1.75; step 1 router at 2.25, expert 1 misses (fill
    # 2.25-3.25); blocking: the hit on expert 0 waits for that response, both compute after
    # 3.25 (3.75); non-blocking: expert 0 is computed at once (2.25-2.5), expert 1 at 3.25
    assert blocking.time_s == pytest.approx(3.75) and nb.time_s == pytest.approx(3.5)
    assert (nb.hits, nb.misses) == (blocking.hits, blocking.misses) == (1, 2)
    with pytest.raises(ValueError, match="host"):
        OffloadConfig(**NB, host="eager")


def test_overlap_trace_adds_only_prefetches_of_predicted_or_verified_experts(small):
    res = spec_mobile.generate(small, PROMPTS[2], 24, gamma=3)
    cfg = small.config
    for s in res.steps:
        assert len(s.predicted) == len(s.drafts)
        for pred, p in zip(s.predicted, s.drafts):
            # the little set is the head of the draft router's ranking
            assert [pr[:res.little_k] for pr in pred] == [ls.experts for ls in p.layers]
            assert all(len(pr) == cfg.top_k for pr in pred)
    plain = spec_mobile.build_trace(res, cfg.n_layers, cfg.n_experts)
    over = spec_mobile.build_trace(res, cfg.n_layers, cfg.n_experts, overlap=True)

    def demands(t):
        return sorted((r.step, r.layer, r.expert, r.plane) for r in t.records if r.op == "D")

    assert demands(plain) == demands(over) and plain.count("P") == 0 < over.count("P")
    known = {(s.position, layer, e) for s in res.steps for layer in range(cfg.n_layers)
             for e in ({e for pr in s.predicted for e in pr[layer]}
                       | {e for p in s.verify for e in p.layers[layer].experts})}
    assert all((r.step, r.layer, r.expert) in known and r.plane == "full"
               for r in over.records if r.op == "P")
    jit = spec_mobile.build_trace(res, cfg.n_layers, cfg.n_experts, overlap="jit")
    predicted = {(s.position, layer, e) for s in res.steps for layer in range(cfg.n_layers)
                 for pr in s.predicted for e in pr[layer]}
    assert demands(jit) == demands(plain) and jit.count("P") > 0
    assert all((r.step, r.layer, r.expert) in predicted for r in jit.records if r.op == "P")
    with pytest.raises(ValueError, match="overlap"):
        spec_mobile.build_trace(res, cfg.n_layers, cfg.n_experts, overlap="later")
    oc = offload.split_config(OffloadConfig(expert_bytes=400, dense_bytes_per_layer=200,
                                            slots=8, plane_cache=True), cfg.top_k)
    assert simulate(over, oc).bytes_transferred > 0


def test_four_way_study_is_lossless_for_the_speculative_methods(seed):
    cfg = gm.ModelConfig(d_model=32, n_layers=2, n_heads=2, n_experts=8, top_k=4, d_expert=32,
                         max_seq=48)
    model = gm.MoeLM.init_random(cfg, seed % 1000)
    st = offload.study_spec_mobile(model, "random test model", n_prompts=2, prompt_len=8,
                                   new_tokens=16)
    m = st.methods
    # by default the drafts run attention and head at full precision, and pay for it
    assert st.draft_dense == "full" == st.runs["spec_mobile"][0].draft_dense
    assert st.config.dense_draft_ratio == 1.0
    assert set(m) == set(offload.SPEC_METHODS) and m["lru_big"]["speedup_vs_lru"] == 1.0
    for name in ("lru_big", "speq", "spec_mobile"):
        assert m[name]["top1_agreement"] == 1.0
    assert all(d["tokens"] == 32 and d["link_bytes_per_token"] > 0 for d in m.values())
    # SPEQ's draft reads the draft planes of all k experts, the combination of k/2
    assert st.traces["speq"][0].count("D") > st.traces["spec_mobile"][0].count("D")
    rows = offload.spec_cache_sweep(st)
    assert [r["slots"] for r in rows] == sorted(r["slots"] for r in rows)
    assert rows[-1]["lru_big_time_per_token_s"] <= rows[0]["lru_big_time_per_token_s"]
    text = "\n".join(offload.spec_report_lines(st))
    assert "random test model" in text and "Assumptions" in text and "nonblocking host" in text
    # no method prefetches: nothing is known while a dense part runs, so no run beats
    # dense parts + link, nor its compute
    assert st.config.host == "nonblocking"
    for d in m.values():
        assert d["time_per_token_s"] >= d["bound_no_prediction_per_token_s"] * (1 - 1e-12)
        assert d["bound_no_prediction_per_token_s"] >= d["bound_ideal_per_token_s"]


def test_command_json_is_one_object_and_bad_input_is_one_line(capsys):
    import json

    from speqmoe.cli import main

    assert main(["spec-mobile", "--prompt", "The ", "--max-new-tokens", "8", "--prompts", "0",
                 "--lut-scale", "1.0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stats"]["draft_dense"] == "full"
    ref = gm.generate(gm.load_default(), b"The ", 8)
    assert out["identical_to_plain_greedy"] is True and bytes.fromhex(out["bytes_hex"]) == ref
    assert main(["spec-mobile", "--prompt", "x", "--adaptive", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--adaptive" in err[0]
