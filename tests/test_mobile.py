"""golden.mobile: big/little routing, confidence fallback, prefetch records, traces, accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from golden.mobile import (MobileConfig, MobileDecoder, build_trace, compare, evaluate,
                           heldout_windows, little_k_for, next_layer_accuracy, nll)
from golden.model import ModelConfig, MoeLM, top_k_route
from golden.trace import parse_trace, format_trace
from speqmoe.cli import main

SMALL = ModelConfig(d_model=32, n_layers=3, n_heads=2, n_experts=8, top_k=4, d_expert=32,
                    max_seq=64)


@pytest.fixture
def model(seed):
    return MoeLM.init_random(SMALL, seed % 10_000)


@pytest.fixture
def tokens(rng):
    return rng.integers(0, 256, size=24)


def test_little_set_is_half_of_even_k():
    assert little_k_for(4) == 2 and little_k_for(2) == 1 and little_k_for(8) == 4


def test_odd_k_is_refused_unless_little_k_is_explicit():
    with pytest.raises(ValueError, match="odd"):
        little_k_for(3)
    assert little_k_for(3, 1) == 1 and little_k_for(3, 2) == 2


@pytest.mark.parametrize("k,little", [(1, None), (4, 0), (4, 4), (4, 2.5)])
def test_bad_little_sizes_are_refused(k, little):
    with pytest.raises(ValueError):
        little_k_for(k, little)


def test_decoder_refuses_odd_top_k_model():
    odd = MoeLM.init_random(ModelConfig(d_model=16, n_layers=1, n_heads=1, n_experts=4, top_k=3,
                                        d_expert=8, max_seq=8), 0)
    with pytest.raises(ValueError, match="odd"):
        MobileDecoder(odd)
    MobileDecoder(odd, MobileConfig(little_k=1))


@pytest.mark.parametrize("kw", [dict(tau=-0.1), dict(tau=float("nan")), dict(gate_mass=1.5)])
def test_bad_mobile_config_is_refused(kw):
    with pytest.raises(ValueError):
        MobileConfig(**kw)


def test_big_mode_is_bit_identical_to_default_top_k_forward(model, tokens):
    run = MobileDecoder(model).run(tokens, "big")
    assert np.array_equal(run.logits, model.forward(tokens, model.new_cache()))
    assert all(len(ls.experts) == SMALL.top_k for s in run.steps for ls in s.passes[0].layers)


def test_little_pass_uses_first_half_of_ranking_and_prefetches_the_rest(model, tokens):
    seen = []

    class Spy:
        config = model.config

        def new_cache(self):
            return model.new_cache()

        def forward(self, toks, cache, *, linear=None, route=None):
            def spy(layer, pos, probs):
                seen.append(top_k_route(probs, SMALL.top_k, True)[0].tolist())
                return route(layer, pos, probs)
            return model.forward(toks, cache, linear=linear, route=spy)

    run = MobileDecoder(Spy(), MobileConfig(tau=0.0)).run(tokens[:6], "little")
    layers = [ls for s in run.steps for ls in s.passes[0].layers]
    assert len(layers) == len(seen) == 6 * SMALL.n_layers
    for ls, ranking in zip(layers, seen):
        assert list(ls.experts) == ranking[:2] and list(ls.prefetch) == ranking[2:]


def test_tau_zero_never_falls_back_and_equals_little_only(model, tokens):
    d = MobileDecoder(model, MobileConfig(tau=0.0))
    run = d.run(tokens, "mobile")
    assert run.fallback_rate == 0.0
    assert np.array_equal(run.logits, d.run(tokens, "little").logits)


def test_fallback_reruns_token_big_and_overwrites_its_kv_entries(model, tokens):
    d = MobileDecoder(model, MobileConfig(tau=1.01))
    run = d.run(tokens, "mobile")
    assert run.fallback_rate == 1.0
    big = d.run(tokens, "big")
    # every token fell back: KV overwritten, so the output is exactly the big model's
    assert np.array_equal(run.logits, big.logits)
    assert all([p.kind for p in s.passes] == ["little", "big"] for s in run.steps)


def test_fallback_decision_follows_little_pass_confidence(model, tokens):
    d = MobileDecoder(model, MobileConfig(tau=0.0))
    confs = np.array([s.confidence for s in d.run(tokens, "little").steps])
    tau = float(np.median(confs))
    run = MobileDecoder(model, MobileConfig(tau=tau)).run(tokens, "mobile")
    # the first token has identical history in both runs
    assert run.steps[0].confidence == confs[0]
    for s in run.steps:
        assert s.fallback == (s.confidence < tau)
    assert 0.0 < run.fallback_rate < 1.0


def test_little_gate_renormalisation_flag_changes_gates(model, tokens):
    a = MobileDecoder(model, MobileConfig(tau=0.0, renormalize_little=True)).run(tokens, "little")
    b = MobileDecoder(model, MobileConfig(tau=0.0, renormalize_little=False)).run(tokens, "little")
    assert not np.array_equal(a.logits, b.logits)


def test_gate_mass_one_promotes_every_layer_to_big(model, tokens):
    run = MobileDecoder(model, MobileConfig(tau=0.0, gate_mass=1.0)).run(tokens, "mobile")
    big = MobileDecoder(model).run(tokens, "big")
    assert np.array_equal(run.logits, big.logits)
    assert all(ls.big and not ls.prefetch for s in run.steps for ls in s.passes[0].layers)
    zero = MobileDecoder(model, MobileConfig(tau=0.0, gate_mass=0.0)).run(tokens, "mobile")
    little = MobileDecoder(model, MobileConfig(tau=0.0)).run(tokens, "little")
    assert np.array_equal(zero.logits, little.logits)


def test_next_layer_gating_predicts_without_changing_output(model, tokens):
    plain = MobileDecoder(model, MobileConfig(tau=0.3)).run(tokens, "mobile")
    nl = MobileDecoder(model, MobileConfig(tau=0.3, next_layer=True)).run(tokens, "mobile")
    assert np.array_equal(plain.logits, nl.logits)
    for s in nl.steps:
        for p in s.passes:
            for ls in p.layers:
                want = 0 if ls.layer == SMALL.n_layers - 1 else (4 if p.kind == "big" else 2)
                assert len(ls.next_prefetch) == want
    assert 0.0 <= next_layer_accuracy(nl.steps) <= 1.0
    assert np.isnan(next_layer_accuracy(plain.steps))


def test_trace_holds_demands_prefetches_and_releases_per_layer(model, tokens):
    run = MobileDecoder(model, MobileConfig(tau=0.5, next_layer=True)).run(tokens, "mobile")
    trace = build_trace(run.steps, SMALL.n_layers, SMALL.n_experts, source="test")
    assert parse_trace(format_trace(trace)) == trace
    n_demands = sum(len(ls.experts) for s in run.steps for p in s.passes for ls in p.layers)
    assert trace.count("D") == trace.count("R") == n_demands
    assert trace.count("X") == sum(len(p.layers) for s in run.steps for p in s.passes)
    open_pins = max_pins = 0
    for r in trace.records:
        open_pins += {"D": 1, "R": -1}.get(r.op, 0)
        max_pins = max(max_pins, open_pins)
    assert max_pins <= SMALL.top_k
    no_pf = build_trace(run.steps, SMALL.n_layers, SMALL.n_experts, prefetch=False,
                        next_layer=False)
    assert no_pf.count("P") == 0 and no_pf.count("D") == n_demands
    assert trace.count("P") > 0


def test_accuracy_proxies_of_identical_runs(model, tokens):
    d = MobileDecoder(model)
    big = d.run(tokens, "big")
    stats = compare(big, big)
    assert stats["top1_agreement"] == 1.0 and stats["nll_delta"] == 0.0
    assert stats["positions"] == len(tokens) - 1
    logits = np.zeros((3, 256), np.float32)
    assert np.allclose(nll(logits, np.array([0, 1, 2])), np.log(256))


def test_evaluate_sweep_extremes(model, rng):
    wins = [rng.integers(0, 256, size=16) for _ in range(2)]
    ev = evaluate(model, wins, [0.0, 1.01])
    assert ev.point(0.0).fallback_rate == 0.0
    assert ev.point(0.0).top1_agreement == ev.little.top1_agreement
    assert ev.point(1.01).fallback_rate == 1.0 and ev.point(1.01).top1_agreement == 1.0
    assert ev.point(1.01).nll_delta == 0.0 and ev.positions == 30


def test_heldout_windows_are_deterministic_and_checked():
    data = bytes(range(200))
    w = heldout_windows(data, 50, 3)
    assert [int(x[0]) for x in w] == [0, 75, 150] and all(len(x) == 50 for x in w)
    with pytest.raises(ValueError):
        heldout_windows(data, 500, 1)
    with pytest.raises(ValueError):
        heldout_windows(data, 1, 1)


# -- command line ------------------------------------------------------------------------

def test_cli_replay_of_malformed_trace_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.trace"
    bad.write_text("speqmoe-expert-trace 1\nmeta n_layers 1\nmeta n_experts 2\nD 0 0 5 0\n")
    assert main(["mobile", "--replay", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.trace:4: expert 5 out of range" in err[0]


@pytest.mark.parametrize("argv,words", [
    (["--replay", "missing.trace"], "not found"),
    (["--shapes", "gpt4"], "unknown shape"),
    (["--windows", "0"], "--windows"),
    (["--taus", "a,b"], "--taus"),
    (["--little-k", "4", "--shapes", "none"], "little_k"),
    (["--cache-fraction", "0", "--shapes", "none"], "--cache-fraction"),
    (["--policy", "mru", "--shapes", "none", "--windows", "1", "--window", "8"], "policy"),
])
def test_cli_bad_input_is_a_user_error(argv, words, capsys):
    assert main(["mobile"] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


def test_cli_replay_prints_counters(tmp_path, capsys):
    path = tmp_path / "ok.trace"
    path.write_text("speqmoe-expert-trace 1\nmeta n_layers 1\nmeta n_experts 2\n"
                    "D 0 0 1 0\nX 0 0 1\nR 0 0\nD 1 0 1 1\nX 1 0 1\nR 1 1\n")
    assert main(["mobile", "--replay", str(path), "--slots", "2"]) == 0
    out = capsys.readouterr().out
    assert "hits                 1" in out and "misses               1" in out
    assert main(["mobile", "--replay", str(path), "--slots", "0"]) == 2


def test_bench_and_demo_sections_with_a_small_stand_in_model(tmp_path, monkeypatch, seed):
    from golden import offload
    from speqmoe.bench import BenchContext
    from speqmoe.benches import mobile as bench_mobile
    from speqmoe.demo import DemoContext
    from speqmoe.demos import mobile as demo_mobile
    from speqmoe.progress import Progress
    from golden.trace import read_trace

    small = MoeLM.init_random(ModelConfig(d_model=16, n_layers=2, n_heads=1, n_experts=8,
                                          top_k=2, d_expert=16, max_seq=16), seed % 1000)
    monkeypatch.setattr(offload, "load_tiny_model", lambda seed=0: (small, "RANDOM WEIGHTS (test)"))
    monkeypatch.setattr(offload, "DEFAULT_TAUS", (0.0, 1.01))
    values = bench_mobile.run(BenchContext(out_dir=tmp_path, progress=Progress(quiet=True)))
    for key in ("mobile_speedup_vs_lru", "mobile_top1_agreement", "mobile_fallback_rate",
                "mobile_hit_rate", "lru_hit_rate", "mobile_speedup_mixtral_8x7b",
                "mobile_speedup_qwen15_moe_a27b", "mobile_speedup_olmoe_1b_7b",
                "mobile_speedup_deepseek_v2_lite"):
        assert np.isfinite(values[key]), key
    assert values["mobile_trained_model"] == 0.0
    trace = read_trace(tmp_path / "mobile.trace")
    assert trace.meta["method"] == "mobile_prefetch" and trace.count("D") > 0
    section = demo_mobile.run(DemoContext(out_dir=tmp_path, build_dir=tmp_path,
                                          progress=Progress(quiet=True), quick=True))
    assert (tmp_path / "mobile_speedup_vs_agreement.png").stat().st_size > 1000
    assert "SYNTHETIC" in section.markdown and "1.60x-1.72x" in section.markdown
    assert "RANDOM" in section.summary[0]


def test_cli_json_is_one_object_on_stdout(capsys):
    assert main(["mobile", "--windows", "1", "--window", "32", "--taus", "0.5", "--shapes", "none",
                 "--json"]) == 0
    out = capsys.readouterr().out
    figures = json.loads(out)          # nothing but the object on stdout
    assert figures["tiny"]["tau"] == 0.5
