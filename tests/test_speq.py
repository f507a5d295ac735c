"""SPEQ self-speculative decoding (golden/speq.py): exactness, losslessness, statistics, errors."""

from __future__ import annotations

import numpy as np
import pytest

from golden import model as gm
from golden import speq
from conftest import SMALL
from golden.model import ModelConfig, MoeLM

PROMPTS = [b"x", b"def f(a, b):\n    return ", b"The Python language ", bytes(range(40, 70))]

# chi-square critical values at significance 0.001 (df -> value); with the fixed seed the test
# is deterministic, with another SPEQMOE_SEED a correct implementation fails 0.1 % of the time.
CHI2_999 = {3: 16.266, 4: 18.467, 15: 37.697}


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    assert expected.min() >= 5, "cells too small for a chi-square test"
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("gamma", [1, 2, 3, 4, 5, 6])
def test_greedy_speq_equals_plain_greedy_on_every_prompt(small, gamma):
    accepted = rejected = 0
    for prompt in PROMPTS:
        ref = gm.generate(small, prompt, 40)
        res = speq.generate(small, prompt, 40, gamma=gamma)
        assert res.bytes == ref, (prompt, gamma)
        accepted += res.stats.accepted
        rejected += res.stats.drafted - res.stats.accepted
    # the comparison only means something if drafts were both accepted and rejected
    assert accepted > 0 and rejected > 0


def test_greedy_speq_equals_plain_greedy_on_the_shipped_model():
    # The weights ship with the repository: missing ones are a failure, not a skip.
    assert gm.DEFAULT_WEIGHTS.exists(), f"shipped weights {gm.DEFAULT_WEIGHTS} missing"
    model = gm.load_default()
    for prompt in (b"The ", b"for x in range(", b"Return the "):
        ref = gm.generate(model, prompt, 24)
        for gamma in range(1, 7):
            assert speq.generate(model, prompt, 24, gamma=gamma).bytes == ref, (prompt, gamma)


def test_greedy_speq_with_hardware_arithmetic_equals_plain_greedy_with_it(small):
    prompt = PROMPTS[1]
    ref = gm.generate(small, prompt, 10, linear=speq.hw_arith_linear)
    res = speq.generate(small, prompt, 10, gamma=3, linear=speq.hw_arith_linear)
    assert res.bytes == ref


def test_hw_arith_linear_is_sequential_binary32_accumulation_of_fp16_products(rng):
    w = (rng.standard_normal((9, 37)) * rng.choice([1e-4, 1.0, 300.0], size=(9, 37))).astype(np.float16)
    w[0] = -0.0
    w[1, :5] = 0.0
    x = (rng.standard_normal(37) * 10).astype(np.float32)
    got = speq.hw_arith_linear("t", w, x)
    a16 = x.astype(np.float16)
    want = np.zeros(9, np.float32)
    for n in range(9):
        acc = np.float32(0.0)
        for k in range(37):
            acc = np.float32(acc + np.float32(np.float32(w[n, k]) * np.float32(a16[k])))
        want[n] = acc
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert got.view(np.uint32)[0] == 0          # +0.0: the accumulator starts from +0.0
    from golden.fp import mac      # project code: an ImportError is a failure, not a skip
    lane = mac(w.view(np.uint16), a16.view(np.uint16)[None, :])
    assert np.array_equal(got.view(np.uint32), lane.astype(np.uint32))


def test_statistics_add_up(small):
    res = speq.generate(small, PROMPTS[2], 33, gamma=4)
    s = res.stats
    assert s.generated == len(res.tokens) == 33
    assert s.draft_passes == s.drafted
    assert s.verify_tokens == s.drafted + s.verify_passes
    assert s.generated == s.accepted + s.verify_passes
    assert sum(s.accepted_per_step) == s.accepted and len(s.accepted_per_step) == s.verify_passes
    assert s.tokens_per_step == pytest.approx(33 / s.verify_passes)
    assert 0.0 <= s.acceptance_rate <= s.token_acceptance <= 1.0
    assert s.rejected <= s.verify_passes and s.accepted + s.rejected <= s.drafted
    # every step that accepted fewer than gamma drafts and was not shortened at the end rejected
    assert s.rejected >= sum(1 for n in s.accepted_per_step[:-2] if n < s.gamma)
    assert s.prefill_tokens == len(PROMPTS[2]) - 1


def test_draft_weights_are_bsfp_drafts_cached_per_model(small):
    from golden.bsfp import encode

    d1 = speq.draft_weights(small)
    assert speq.draft_weights(small) is d1
    assert set(d1) == set(small.linear_names())
    w = small.params["layers.0.attn.wq"]
    assert np.array_equal(d1["layers.0.attn.wq"].view(np.uint16),
                          encode(w).decode_draft().view(np.uint16))
    assert not np.array_equal(d1["head"], small.params["head"])
    # the draft has at most 16 distinct values per tensor (sign x 8 lut entries)
    assert len(np.unique(d1["head"])) <= 16


def test_rejection_sampling_emits_the_target_distribution(rng):
    V, gamma, trials = 5, 3, 20000
    p = rng.dirichlet(np.ones(V), size=gamma + 1)
    q = rng.dirichlet(np.ones(V) * 0.5, size=gamma)
    first = np.zeros(V)
    accepted_first = 0
    for _ in range(trials):
        drafts = [int(rng.choice(V, p=q[i])) for i in range(gamma)]
        n_acc, nxt = speq.rejection_verify(drafts, q, p, rng)
        tok = drafts[0] if n_acc > 0 else nxt
        first[tok] += 1
        accepted_first += n_acc > 0
    assert chi_square(first, p[0]) < CHI2_999[V - 1]
    # the test is sensitive: the draft distribution itself is rejected by it
    assert chi_square(first, q[0]) > CHI2_999[V - 1]
    # and the acceptance probability of the first draft is sum(min(p, q))
    alpha = np.minimum(p[0], q[0]).sum()
    assert abs(accepted_first / trials - alpha) < 4 * np.sqrt(alpha * (1 - alpha) / trials)


def test_greedy_verify_accepts_the_matching_prefix():
    logits = np.eye(6)[[2, 4, 1, 5]]          # target argmax per row: 2, 4, 1, 5
    assert speq.greedy_verify([2, 4, 1], logits) == (3, 5)
    assert speq.greedy_verify([2, 3, 1], logits) == (1, 4)
    assert speq.greedy_verify([0, 4, 1], logits) == (0, 2)


def _peaked_small_vocab_model(seed: int) -> MoeLM:
    """A 4-token model whose distributions are far from uniform (so draft and target differ)."""
    cfg = ModelConfig(vocab=4, d_model=16, n_layers=1, n_heads=2, n_experts=4, top_k=2,
                      d_expert=8, max_seq=16)
    base = MoeLM.init_random(cfg, seed)
    params = {n: (w.astype(np.float32) * (40.0 if w.ndim == 2 else 1.0)).astype(np.float16)
              for n, w in base.params.items()}
    return MoeLM(cfg, params)


def test_sampling_speq_is_lossless_on_a_small_vocabulary_model(seed):
    model = _peaked_small_vocab_model(seed)
    prompt, runs = bytes([1, 3]), 3000
    # exact target probabilities of the first two generated tokens
    p1 = speq._probs(model.forward(prompt, model.new_cache())[-1], 1.0)
    joint = np.array([p1[a] * speq._probs(model.forward(prompt + bytes([a]),
                                                        model.new_cache())[-1], 1.0)
                      for a in range(4)]).reshape(16)
    draft = speq._probs(model.forward(prompt, model.new_cache(),
                                      linear=speq.draft_linear(model))[-1], 1.0)
    assert np.abs(draft - p1).sum() > 0.05, "draft too close to the target for a meaningful test"
    rng = np.random.default_rng(seed)
    counts = np.zeros(16)
    for _ in range(runs):
        res = speq.generate(model, prompt, 4, gamma=3, verify="sample",
                            seed=int(rng.integers(2**32)))
        counts[res.tokens[0] * 4 + res.tokens[1]] += 1
    keep = joint * runs >= 5                  # pool the rare cells into one
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(joint[keep], joint[~keep].sum())
    if exp[-1] * runs < 5:
        obs, exp = obs[:-1], exp[:-1]
    stat = chi_square(obs, exp / exp.sum())
    assert stat < CHI2_999.get(len(obs) - 1, 16.266 + 1.1 * (len(obs) - 4)), stat


def test_sampling_is_reproducible_from_the_seed(small):
    a = speq.generate(small, PROMPTS[2], 20, gamma=3, verify="sample", seed=7)
    b = speq.generate(small, PROMPTS[2], 20, gamma=3, verify="sample", seed=7)
    assert a.bytes == b.bytes and a.stats.as_dict() == b.stats.as_dict()


@pytest.mark.parametrize("kwargs,match", [
    ({"gamma": 0}, "gamma"), ({"gamma": -2}, "gamma"), ({"gamma": 1.5}, "gamma"),
    ({"verify": "beam"}, "verify"), ({"prompt": b""}, "empty"),
    ({"prompt": b"a" * 90, "max_new_tokens": 20}, "context"),
])
def test_bad_input_is_a_clear_value_error(small, kwargs, match):
    args = {"prompt": b"hello", "max_new_tokens": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        speq.generate(small, **args)


def test_speq_command_prints_text_statistics_and_the_greedy_check(small, tmp_path, capsys):
    from speqmoe.cli import main

    path = tmp_path / "m.npz"
    small.save(path)
    rc = main(["speq", "--prompt", "def ", "--gamma", "2", "--max-new-tokens", "12",
               "--weights", str(path), "--perf", "llama-2-7b"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "acceptance rate" in out and "tokens per verify step" in out
    assert "identical to plain greedy decoding: yes" in out
    assert "Llama-2-7B" in out and "measured" in out


@pytest.mark.parametrize("argv,match", [
    (["--gamma", "0"], "gamma"), (["--weights", "absent.npz"], "not found"),
    (["--perf", "gpt-9"], "unknown model shape"), (["--max-new-tokens", "0"], "max-new-tokens"),
])
def test_speq_command_reports_user_errors_in_one_line(small, tmp_path, capsys, argv, match):
    from speqmoe.cli import main

    path = tmp_path / "m.npz"
    small.save(path)
    argv = ["speq", "--prompt", "x", "--weights", str(path)] + argv
    if "absent.npz" in argv:
        argv[argv.index("absent.npz")] = str(tmp_path / "absent.npz")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("speqmoe speq: error:") and match in err and "\n" not in err


def test_hw_arith_linear_matches_the_pe_array_golden_model_in_both_modes(small, rng):
    from golden import pe_array
    from golden.bsfp import encode

    w = small.params["layers.1.experts.2.w_down"]           # (32, 16)
    x = (rng.standard_normal(w.shape[1]) * 3).astype(np.float32)
    a16 = x.astype(np.float16)
    enc = encode(w)
    verify = pe_array.matmul("verify", enc, a16[None, :])[0]
    draft = pe_array.matmul("draft", enc, a16)
    assert np.array_equal(speq.hw_arith_linear("w", w, x).view(np.uint32), verify.view(np.uint32))
    dw = speq.draft_weights(small)["layers.1.experts.2.w_down"]
    assert np.array_equal(speq.hw_arith_linear("w", dw, x).view(np.uint32), draft.view(np.uint32))
