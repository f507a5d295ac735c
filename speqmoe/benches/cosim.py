"""Bench section ``cosim``: the shipped tiny LM decoded on the 4x4 accelerator top (Verilator).

One co-simulation (:mod:`sim.cosim`, RTL host memory, :data:`LATENCY` cycles of read latency,
one 32-byte line per cycle) decodes :data:`TOKENS` bytes after :data:`PROMPT` in each mode;
every byte is checked against the golden decoding with the PE array's arithmetic (the run fails
otherwise), and the decode-phase counters (bytes, MACs, cache hits, misses, victims) against
the same decoding on the golden accelerator model (:class:`golden.accel.AccelModel`).

* ``cosim_cycles_per_token_plain`` / ``_speq`` (gamma 3) / ``_mobile`` (tau 0.5): simulated
  clock cycles of the decode phase / decoded bytes (the host's register traffic included; its
  numpy work takes no simulated time).
* ``cosim_speq_speedup``: plain / SPEQ cycles per token, measured in RTL;
  ``cosim_speq_speedup_perf_model``: what :func:`golden.perf.compare` predicts for the same
  array and memory bandwidth with this run's tokens per verify step (it assumes uniform expert
  routing and no expert cache: every pass streams its experts from memory).
* ``cosim_model_error``: the largest ``|model - RTL| / RTL`` cycles per token over the modes, where
  the model is :class:`golden.perf.CommandCycleModel` calibrated on the *plain* run's batches and
  applied to the golden decoding of every mode (so SPEQ and MoBiLE are held out); per mode as
  ``cosim_model_error_<mode>``.
* ``cosim_tokens_per_min``: decoded bytes per minute of wall time in plain mode (simulation
  speed, host program and RTL memory included).
* ``cosim_counters_match``: 1.0 when every decode-phase counter of every mode equals the golden
  accelerator model's.
"""

from __future__ import annotations

import asyncio
import json
import time

PROMPT = b"The history of the "
TOKENS = 32
ROWS, COLS, SLOTS = 4, 4, 16
LATENCY = 64
GAMMA, TAU = 3, 0.5
MODES = ("plain", "speq", "mobile")
CLOCK_HZ = 1e9            # assumed (docs/cosim.md); only converts cycles into seconds


def _golden(model, mmap, params, mode, timing, tokens, cycle_model=None):
    from golden.mobile import MobileConfig
    from golden.model import blas_threads
    from sim.cosim import Decoder, GoldenBackend, golden_model

    backend = GoldenBackend(golden_model(params, mmap), mmap.line, timing=timing,
                            cycle_model=cycle_model)
    dec = Decoder(model, mmap, backend, mode, gamma=GAMMA, mobile=MobileConfig(tau=TAU))
    with blas_threads(1):
        return asyncio.run(dec.generate(PROMPT, tokens))


def measure(build_dir, progress, *, tokens: int = TOKENS) -> dict:
    """Run the three modes on the RTL and the golden models; returns the detailed results."""
    from golden import perf
    from golden.model import DEFAULT_WEIGHTS, load_default
    from sim.cosim import Timing
    from sim.cosim_flow import RunSpec, prepare, run_cosim, summarize

    model = load_default()
    mmap, params, memory = prepare(model, rows=ROWS, cols=COLS, slots=SLOTS, latency=LATENCY)
    timing = Timing.of(params, memory.latency, memory.bandwidth)
    runs = [RunSpec(prompt=PROMPT.hex(), tokens=tokens, mode=m, gamma=GAMMA, tau=TAU,
                    lockstep=False) for m in MODES]
    progress(f"Verilator: tiny LM on a {ROWS}x{COLS} top, {SLOTS} expert slots, {LATENCY} cycles "
             f"of read latency; {tokens} bytes in each of {', '.join(MODES)} (the first run "
             "generates and builds the model, about 3 minutes) ...")
    t0 = time.perf_counter()
    _, recs = run_cosim(params, memory, DEFAULT_WEIGHTS, runs, build_dir,
                        progress=None)
    progress(f"co-simulation done in {time.perf_counter() - t0:.0f} s")
    out = {"params": {"rows": ROWS, "cols": COLS, "slots": SLOTS, "latency": LATENCY,
                      "expert_bytes": params.expert_bytes, "bus_bits": 16 * params.pes,
                      "clock_hz": CLOCK_HZ, "gamma": GAMMA, "tau": TAU},
           "prompt": PROMPT.decode(), "tokens": tokens, "modes": {}}
    fitted = perf.CommandCycleModel.fit(
        [(b, f, c) for b, f, c in recs[0]["batches"]])
    out["cycle_model"] = fitted.as_dict()
    for mode, rec in zip(MODES, recs):
        progress(f"golden model of {mode} ...")
        gold = _golden(model, mmap, params, mode, timing, tokens, fitted)
        rtl_counters = {k: v for k, v in rec["decode_counters"].items()
                        if not k.endswith("cycles")}
        gold_counters = {k: v for k, v in gold.decode_counters().items()
                         if not k.endswith("cycles")}
        s = summarize(rec, CLOCK_HZ)
        out["modes"][mode] = {
            "text": bytes.fromhex(rec["bytes_hex"]).decode("utf-8", "replace"),
            "identical_to_golden": rec["identical"] and gold.bytes.hex() == rec["bytes_hex"],
            "counters_match": rtl_counters == gold_counters,
            "counter_differences": {k: (rtl_counters.get(k), gold_counters.get(k))
                                    for k in set(rtl_counters) | set(gold_counters)
                                    if rtl_counters.get(k) != gold_counters.get(k)},
            "model_cycles_per_token": gold.cycles_per_token,
            "passes": {k: sum(1 for p in rec["passes"] if p["kind"] == k)
                       for k in sorted({p["kind"] for p in rec["passes"]})},
            **s,
        }
    speq_passes = out["modes"]["speq"]["passes"]
    tokens_per_step = tokens / max(1, speq_passes.get("verify", 0) - _prefill_passes(recs[1]))
    acc = perf.Accelerator(rows=ROWS, cols=COLS, clock_hz=CLOCK_HZ,
                           mem_bw=2 * params.pes * CLOCK_HZ / timing.line_cycles)
    shape = perf.tiny_shape(model.config)
    cmp = perf.compare(shape, acc, gamma=GAMMA, context=len(PROMPT) + tokens // 2,
                       tokens_per_step=min(GAMMA + 1.0, max(1.0, tokens_per_step)),
                       acceptance_source="measured: this co-simulation's tokens per step")
    out["perf_model"] = {"tokens_per_step": tokens_per_step,
                         "speq_speedup": cmp["speq_speedup_vs"]["fp16"],
                         "compare": _jsonable(cmp)}
    return out


def _prefill_passes(rec) -> int:
    """Verify passes of the prompt (before the first decoded byte)."""
    return sum(1 for p in rec["passes"] if p["kind"] == "verify"
               and p["position"] + p["tokens"] < len(PROMPT))


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: str(o)))


def values(res: dict) -> dict:
    m = res["modes"]
    out = {f"cosim_cycles_per_token_{k}": m[k]["cycles_per_token"] for k in MODES}
    out["cosim_speq_speedup"] = m["plain"]["cycles_per_token"] / m["speq"]["cycles_per_token"]
    out["cosim_speq_speedup_perf_model"] = float(res["perf_model"]["speq_speedup"])
    errors = {k: abs(m[k]["model_cycles_per_token"] - m[k]["cycles_per_token"])
              / m[k]["cycles_per_token"] for k in MODES}
    out.update({f"cosim_model_error_{k}": v for k, v in errors.items()})
    out["cosim_model_error"] = max(errors.values())
    out["cosim_tokens_per_min"] = m["plain"]["tokens_per_min_wall"]
    out["cosim_counters_match"] = float(all(m[k]["counters_match"] for k in MODES))
    out["cosim_identical_to_golden"] = float(all(m[k]["identical_to_golden"] for k in MODES))
    for k in MODES:
        out[f"cosim_cache_hit_rate_{k}"] = (m[k]["cache"]["hits"] / m[k]["cache"]["demands"]
                                            if m[k]["cache"]["demands"] else 0.0)
    return out


def run(ctx) -> dict:
    from sim.runner import simulator_missing

    reason = simulator_missing("verilator")
    if reason:
        ctx.progress(f"verilator missing: {reason}; co-simulation figures omitted")
        return {}
    res = measure(ctx.build_dir / "cosim", ctx.progress)
    (ctx.out_dir / "cosim.json").write_text(json.dumps(res, indent=2) + "\n")
    return values(res)
