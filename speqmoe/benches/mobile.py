"""Bench section ``mobile``: MoBiLE vs on-demand LRU expert offloading.

Measured: the tiny LM's routing, fallback rate and accuracy proxies on held-out text (4 windows
of 128 bytes of the ``golden.text`` held-out split), at the default tau (0.5). The tiny LM's
compute side is the generated accelerator's golden.perf cycle model (16 x 16 PEs; the 1 GHz
clock and 410 GB/s memory are assumed): ``mobile_dense_layer_us`` per layer (attention
projections, router), ``mobile_expert_compute_us`` per expert, the output head once per pass;
``mobile_layer_overhead_us`` (0) is any further per-layer cost (the demo shows the sensitivity).
Assumed: the link (PCIe 4.0 x16, 25 GB/s), the cache (a quarter of all routed experts, the same
for every method), and for the published shapes a memory-bound 1008 GB/s device. Fills run to
completion in the order they reach the DMA, as in the RTL expert cache.

Headline: ``mobile_speedup_vs_lru`` and ``mobile_speedup_<shape>`` compare like with like:
MoBiLE **without prefetch** against big-only on-demand LRU, which has no prefetch either
(``mobile_noprefetch_*`` are the same figures under their old names).
``mobile_prefetch_speedup_*`` are MoBiLE + prefetch against the same baseline (prefetch on one
side only). ``mobile_speedup_<shape>`` use SYNTHETIC routing traces of the published shapes
(``golden.offload.SyntheticRouting``) with the tiny LM's measured fallback rate (an assumed 0.2
while only random weights exist). ``mobile_trained_model`` is 1 when the trained tiny LM was
used, 0 when it was missing and random weights stood in. The tiny LM's MoBiLE + prefetch
request trace is written to ``<out>/mobile.trace`` for the RTL testbench.

SPEQ x MoBiLE (issue 13, ``golden.offload.study_spec_mobile``): the four methods on the same
text (the full model's greedy continuation of 4 held-out prompts, 96 bytes each) and link, with
a plane cache of the same bytes for all (split for SPEQ and the combination: draft planes, and
the residual planes of one verify group, streamed): ``specmoe_speedup_vs_lru`` (the combination over
on-demand LRU), ``specmoe_top1_agreement`` (measured share of its emitted bytes equal to the
full model's), ``specmoe_link_bytes_per_token_<method>`` for ``lru_big``, ``mobile``, ``speq``
and ``spec_mobile``; the drafts run their attention projections and LM head at full FP16
(resident on the device; router and experts on their draft planes, ``draft_dense="full"``),
with the lut scale chosen on training text for that draft (``specmoe_lut_scale``) and adaptive
length 0.7. The host of the time model is the non-blocking one for all four methods (requests out as
soon as a layer's router has run, hits under a waiting miss, per-expert release; no prefetch
from predictions), docs/spec_mobile.md. ``specmoe_speedup_bound_no_prediction`` and
``specmoe_speedup_bound_ideal`` are LRU's modelled time over the combination's lower bounds
(dense parts + link; max(compute, link)): how far any host could take it without and with
prefetch from predictions.
"""

from __future__ import annotations

from golden import offload
from golden.seed import base_seed
from golden.trace import write_trace


def run(ctx) -> dict:
    seed = base_seed()
    model, source = offload.load_tiny_model(seed)
    ctx.progress(f"tiny LM: {source}")
    tiny = offload.study_tiny(model, source, progress=ctx.progress)
    fb, measured = offload.synthetic_fallback_rate(tiny)
    routing = offload.SyntheticRouting(fallback_rate=fb, seed=seed)
    shapes = {}
    for key, shape in offload.SHAPES.items():
        ctx.progress(f"synthetic {shape.name}")
        shapes[key] = offload.study_shape(shape, tokens=128, routing=routing)
    for line in offload.report_lines(tiny, shapes, fallback_measured=measured):
        ctx.progress(line)
    write_trace(ctx.out_dir / "mobile.trace", tiny.traces["mobile_prefetch"])
    values = offload.bench_values(tiny, shapes)
    values["mobile_trained_model"] = 0.0 if source.startswith("RANDOM") else 1.0
    values.update(_spec(ctx, model, source))
    return values


def _spec(ctx, model, source) -> dict:
    from golden import spec_mobile
    from golden.model import blas_threads

    with blas_threads(1):
        spec = dict(adaptive=spec_mobile.DEFAULT_ADAPTIVE,
                    draft_dense=spec_mobile.DEFAULT_DRAFT_DENSE)
        scale, _ = spec_mobile.choose_lut_scale(model, **spec)
        spec["draft"] = spec_mobile.scaled_luts(model, scale)
        study = offload.study_spec_mobile(model, source, spec=spec, progress=ctx.progress,
                                          **offload.spec_lengths(model.config))
    for line in offload.spec_report_lines(study):
        ctx.progress(line)
    return offload.spec_bench_values(study) | {"specmoe_lut_scale": float(scale)}
