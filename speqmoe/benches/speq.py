"""Bench section ``speq``: the tiny MoE LM's held-out score, draft acceptance per gamma, and speedups.

Measured: held-out bits per byte of the shipped FP16 model (last 10 % of pydoc_data.topics);
greedy SPEQ acceptance and tokens per verify step for gamma 1..6 on 16 held-out prompts of 64
bytes, 96 new bytes each. ``speq_acceptance_gamma{g}`` is the per-token acceptance (accepted /
checked draft tokens, the alpha of the i.i.d. model and of the paper's 0.976);
``speq_draft_kept_gamma{g}`` is accepted / drafted (drafts after a rejection count as lost). Projected with golden.perf (assumed accelerator: 256 PEs, 1 GHz,
410 GB/s; context 512): speedups over FP16 and over the 8-/4-bit weight-only baselines, with the
measured tokens per step and with the paper's acceptance 0.976; ``speq_speedup_llama2_7b_gamma{g}``
with the measured tokens per step at each gamma (a verify of gamma + 1 > 4 tokens is
ceil((gamma+1)/4) weight passes of the 4-lane PEs, each streaming the weights again). Also measured: the
rejection-sampling acceptance at gamma 3, and with the PE array's arithmetic (--hw-arith) whether
greedy SPEQ still equals plain greedy and for how many leading bytes it matches float32 decoding. The full projection with every
input's provenance goes to <out>/speq_perf.json.
"""

from __future__ import annotations

import json

from golden import model as gm
from golden import perf, speq

GAMMAS = range(1, 7)


def _run(ctx) -> dict:
    model = gm.load_default()
    values: dict = {}
    ctx.progress("held-out bits per byte ...")
    from golden.text import split

    values["lm_heldout_bits_per_byte"] = float(model.bits_per_byte(split()[1]))
    ctx.progress(f"held-out bits per byte {values['lm_heldout_bits_per_byte']:.4f}")
    stats = speq.measure_acceptance(model, GAMMAS, progress=ctx.progress)
    for g, s in stats.items():
        values[f"speq_acceptance_gamma{g}"] = float(s.token_acceptance)
        values[f"speq_draft_kept_gamma{g}"] = float(s.acceptance_rate)
        values[f"speq_tokens_per_step_gamma{g}"] = float(s.tokens_per_step)
    sampled = speq.measure_acceptance(model, [3], verify="sample", seed=1, n_prompts=8,
                                      new_tokens=64)[3]
    values["speq_acceptance_sample_gamma3"] = float(sampled.token_acceptance)
    ctx.progress(f"rejection-sampling acceptance at gamma 3: {sampled.token_acceptance:.3f}")
    # the accelerator's arithmetic: greedy SPEQ stays exact, and how far it tracks float32
    prompt = speq.heldout_prompts(1, 64)[0]
    hw = speq.generate(model, prompt, 32, gamma=3, linear=speq.hw_arith_linear)
    hw_plain = gm.generate(model, prompt, 32, linear=speq.hw_arith_linear)
    fp32 = gm.generate(model, prompt, 32)
    values["speq_hw_arith_greedy_identical"] = float(hw.bytes == hw_plain)
    values["speq_hw_arith_fp32_common_prefix_bytes"] = float(
        next((i for i, (a, b) in enumerate(zip(hw.bytes, fp32)) if a != b), len(fp32)))
    values["speq_hw_arith_acceptance_gamma3"] = float(hw.stats.token_acceptance)
    report = {"measured": {g: s.as_dict() for g, s in stats.items()},
              "measured_sample_gamma3": sampled.as_dict(),
              "hw_arith": {"prompt": prompt.decode("utf-8", "replace"), "speq": hw.text,
                           "plain_fp32": fp32.decode("utf-8", "replace")},
              "projections": {}}
    projected, report["projections"] = perf_values(
        {g: s.tokens_per_step for g, s in stats.items()})
    values.update(projected)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / "speq_perf.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    return values


def perf_values(tokens_per_step: dict[int, float]) -> tuple[dict, dict]:
    """The golden.perf projections of the bench from measured tokens per verify step per gamma
    (gamma 3 must be present): ``(bench values, full projections for speq_perf.json)``."""
    values: dict = {}
    projections: dict = {}
    for key, shape in (("llama2_7b", "llama-2-7b"), ("llama3_1_8b", "llama-3.1-8b")):
        measured = perf.compare(shape, gamma=3, tokens_per_step=tokens_per_step[3],
                                acceptance_source="measured: tiny MoE LM, greedy SPEQ on "
                                                  "held-out prompts, gamma 3")
        paper = perf.compare(shape, gamma=3, acceptance=perf.PAPER_ACCEPTANCE,
                             acceptance_source="assumed: the paper's mean acceptance 0.976")
        values[f"speq_speedup_{key}"] = measured["speq_speedup_vs"]["fp16"]
        values[f"speq_speedup_{key}_paper_acceptance"] = paper["speq_speedup_vs"]["fp16"]
        values[f"speq_speedup_vs_w8_{key}"] = measured["speq_speedup_vs"]["w8"]
        values[f"speq_speedup_vs_w4_{key}"] = measured["speq_speedup_vs"]["w4"]
        values[f"speq_speedup_vs_w8_{key}_paper_acceptance"] = paper["speq_speedup_vs"]["w8"]
        values[f"speq_speedup_vs_w4_{key}_paper_acceptance"] = paper["speq_speedup_vs"]["w4"]
        values[f"w8_speedup_{key}"] = measured["speedup_vs_fp16"]["w8"]
        values[f"w4_speedup_{key}"] = measured["speedup_vs_fp16"]["w4"]
        projections[key] = {"measured_acceptance": measured, "paper_acceptance": paper}
    for g, tps in tokens_per_step.items():
        r = perf.compare("llama-2-7b", gamma=g, tokens_per_step=tps,
                         acceptance_source=f"measured: tiny MoE LM, gamma {g}")
        values[f"speq_speedup_llama2_7b_gamma{g}"] = r["speq_speedup_vs"]["fp16"]
    return values, projections


def run(ctx) -> dict:
    from golden.model import blas_threads

    with blas_threads(1):        # small matmuls: one BLAS thread is much faster on a loaded machine
        return _run(ctx)
