"""Demo section: MoBiLE big/little experts against on-demand LRU offloading (golden models)."""

from __future__ import annotations

import json
from dataclasses import replace

from golden import offload
from golden.seed import base_seed
from speqmoe.demo import DemoSection

ORDER = 50


def _plot(tiny, shapes, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    agr = [r["top1_agreement"] for r in tiny.sweep]
    ax.plot(agr, [r["speedup_mobile"] for r in tiny.sweep], "o-", label="MoBiLE (tiny LM)")
    ax.plot(agr, [r["speedup_mobile_prefetch"] for r in tiny.sweep], "s--",
            label="MoBiLE + prefetch (tiny LM)")
    for r in tiny.sweep:
        ax.annotate(f"{r['tau']:g}", (r["top1_agreement"], r["speedup_mobile"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axhspan(*offload.PAPER_SPEEDUP, color="tab:green", alpha=0.2,
               label="paper 1.60x-1.72x (abstract)")
    ax.axhline(1.0, color="gray", lw=0.8)
    styles = ("-", "--", "-.", ":")
    for i, st in enumerate(shapes.values()):
        ax.axhline(st.methods["mobile"]["speedup_vs_lru"], color=f"C{i + 3}", lw=0.8,
                   ls=styles[i % 4], label=f"{st.shape.name} (MoBiLE, synthetic routing)")
    ax.set_xlabel("top-1 agreement with the big model (fraction; tiny LM, held-out text)")
    ax.set_ylabel("speedup over big-only on-demand LRU (no prefetch), x")
    ax.set_title("MoBiLE: speedup vs agreement over tau (labels: tau)\n"
                 "horizontal lines: published shapes, MoBiLE, SYNTHETIC routing", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(ctx) -> DemoSection:
    seed = base_seed()
    model, source = offload.load_tiny_model(seed)
    ctx.progress(f"tiny LM: {source}")
    windows = 2 if ctx.quick else 4
    tiny = offload.study_tiny(model, source, windows=windows, progress=ctx.progress)
    fb, measured = offload.synthetic_fallback_rate(tiny)
    routing = offload.SyntheticRouting(fallback_rate=fb, seed=seed)
    shapes = {}
    for key, shape in offload.SHAPES.items():
        ctx.progress(f"synthetic {shape.name}")
        shapes[key] = offload.study_shape(shape, tokens=64 if ctx.quick else 128, routing=routing)
    plot = ctx.out_dir / "mobile_speedup_vs_agreement.png"
    _plot(tiny, shapes, plot)
    sens = offload.overhead_sensitivity(tiny)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / "mobile.json").write_text(
        json.dumps(offload.study_json(tiny, shapes) | {"layer_overhead_sensitivity": sens},
                   indent=2) + "\n")
    trained = not source.startswith("RANDOM")
    p = tiny.evaluation.point(tiny.tau)
    m = tiny.methods
    lo, hi = offload.PAPER_SPEEDUP
    md = [f"Tiny LM: **{source}**" + ("" if trained else " — figures below are not meaningful "
                                        "for accuracy until the trained model exists."),
          "",
          f"Accuracy proxies (*measured*, teacher forcing on {tiny.evaluation.positions} held-out "
          f"bytes) and offloading speedup (*measured* routing, *assumed* link "
          f"{tiny.config.link_bytes_per_s / 1e9:g} GB/s, {tiny.config.slots} cache slots for "
          f"every method). Compute: {tiny.config.compute}; extra layer overhead "
          f"{tiny.config.layer_overhead_s * 1e6:g} us (sensitivity below). Fills run to "
          "completion in the order they reach the DMA, as in the RTL expert cache (a demand "
          "goes ahead only of prefetches still queued). Speedups are over big-only on-demand "
          "LRU, which has no prefetch: the **MoBiLE** column is the like-for-like headline "
          "(`mobile_speedup_vs_lru`), **MoBiLE + prefetch** adds prefetch on MoBiLE's side only.",
          "",
          "| tau | top-1 agreement | NLL delta (nats/byte) | fallback rate | MoBiLE | MoBiLE + prefetch |",
          "|---|---|---|---|---|---|"]
    for r in tiny.sweep:
        md.append(f"| {r['tau']:g}{' (default)' if r['tau'] == tiny.tau else ''} | "
                  f"{r['top1_agreement']:.3f} | {r['nll_delta']:+.4f} | {r['fallback_rate']:.3f} | "
                  f"{r['speedup_mobile']:.2f}x | {r['speedup_mobile_prefetch']:.2f}x |")
    md += ["", "| method (tiny LM, default tau) | time/token | hit rate | speedup |", "|---|---|---|---|"]
    for name in offload.METHODS:
        d = m[name]
        md.append(f"| {offload.METHOD_LABELS[name]} | {d['time_per_token_s'] * 1e6:.2f} us | "
                  f"{d['hit_rate']:.3f} | {d['speedup_vs_lru']:.2f}x |")
    md += ["", "Prefetch queue depth (tiny LM, default tau; an issued prefetch reserves its slot until "
           "its fill completes; fills run to completion in the order they reach the DMA, which "
           "holds the running fill and one more, so only from depth 3 on can a demand go ahead "
           "of a queued prefetch):", "",
           "| queue depth | MoBiLE + prefetch speedup | hit rate | prefetches useful / issued |",
           "|---|---|---|---|"]
    base_time = m["lru_big"]["time_s"]
    for depth in (1, 2, 4, 8):
        r = offload.simulate(tiny.traces["mobile_prefetch"],
                             replace(tiny.config, queue_depth=depth))
        md.append(f"| {depth}{' (default)' if depth == tiny.config.queue_depth else ''} | "
                  f"{base_time / r.time_s:.2f}x | {r.hit_rate:.3f} | "
                  f"{r.prefetches_useful} / {r.prefetches_issued} |")
    md += ["", "Sensitivity to a fixed per-layer overhead (kernel launches, command issue; "
           "added to every layer of every pass, so each fallback pays it again for every "
           "layer). *accelerator*: the compute side above; *GPU figure*: the memory-bound "
           f"{tiny.config.device_bytes_per_s / 1e9:g} GB/s device of the published shapes "
           "instead (the tiny LM's former default):", "",
           "| layer overhead | MoBiLE (accelerator) | + prefetch (accelerator) | "
           "MoBiLE (GPU figure) | + prefetch (GPU figure) |", "|---|---|---|---|---|"]
    by = {(r["compute"], r["layer_overhead_s"]): r for r in sens}
    for o in offload.LAYER_OVERHEADS_S:
        a, g = by[("study", o)], by[("gpu", o)]
        md.append(f"| {o * 1e6:g} us{' (default)' if o == tiny.config.layer_overhead_s else ''} | "
                  f"{a['speedup_mobile']:.2f}x | {a['speedup_mobile_prefetch']:.2f}x | "
                  f"{g['speedup_mobile']:.2f}x | {g['speedup_mobile_prefetch']:.2f}x |")
    st0 = next(iter(shapes.values()))
    worst = max(10e-6 * st.shape.moe_layers / st.methods["lru_big"]["time_per_token_s"]
                for st in shapes.values())
    md += ["", f"Published shapes, **SYNTHETIC** routing traces (Zipf {routing.zipf:g} popularity, "
           f"stickiness {routing.stickiness:g}, fallback rate {fb:.3f} "
           f"{'measured on the tiny LM' if measured else 'ASSUMED (tiny LM untrained)'}; "
           f"cache = 25% of all routed experts; BF16 experts over PCIe 4.0 x16; compute: "
           f"memory-bound {st0.config.device_bytes_per_s / 1e9:g} GB/s device, assumed; a "
           f"per-layer overhead of 10 us would add at most {worst:.2%} to a baseline token "
           f"here):", "",
           "| model | slots | MB/expert | LRU ms/token | little only | MoBiLE | MoBiLE + prefetch | paper |",
           "|---|---|---|---|---|---|---|---|"]
    for st in shapes.values():
        sm = st.methods
        md.append(f"| {st.shape.name} | {st.config.slots} | {st.shape.expert_bytes / 1e6:.1f} | "
                  f"{sm['lru_big']['time_per_token_s'] * 1e3:.1f} | "
                  f"{sm['little']['speedup_vs_lru']:.2f}x | {sm['mobile']['speedup_vs_lru']:.2f}x | "
                  f"{sm['mobile_prefetch']['speedup_vs_lru']:.2f}x | {lo:.2f}x-{hi:.2f}x |")
    md += ["", f"![speedup vs agreement]({plot.name})", "",
           "*Plot: measured* top-1 agreement and routing of the tiny LM over the tau sweep "
           "(labels on the points), *modelled* speedup (offloading time model, link and cache "
           "assumed); the horizontal lines are the published shapes' MoBiLE speedups on "
           "*synthetic* routing; the band is the paper's reported range.", ""]
    md += _spec_markdown(ctx, model, source)
    md += ["",
           "Every figure and its provenance: `mobile.json`. Reproduce: `python -m speqmoe mobile`."]
    summary = [f"tiny LM ({'trained' if trained else 'RANDOM weights'}), tau={tiny.tau:g}: "
               f"top-1 agreement {p.top1_agreement:.3f}, fallback {p.fallback_rate:.3f}, "
               f"speedup vs LRU {m['mobile']['speedup_vs_lru']:.2f}x "
               f"({m['mobile_prefetch']['speedup_vs_lru']:.2f}x with prefetch)",
               "synthetic published shapes (MoBiLE): " + ", ".join(
                   f"{st.shape.name} {st.methods['mobile']['speedup_vs_lru']:.2f}x"
                   for st in shapes.values()) + f"; paper {lo:.2f}x-{hi:.2f}x"]
    figures = offload.bench_values(tiny, shapes)
    figures["mobile_trained_model"] = 1.0 if trained else 0.0
    return DemoSection(title="MoBiLE expert offloading (golden models)", markdown="\n".join(md),
                       summary=summary, figures=figures, ok=True)


def _spec_plot(rows, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = [r["slots"] for r in rows]
    for (name, label), mark in zip(offload.SPEC_LABELS.items(), "os^D"):
        ax.plot(x, [r[f"{name}_time_per_token_s"] * 1e6 for r in rows], f"{mark}-", label=label)
    ax.set_xlabel("device cache size (expert slots of full-precision bytes)")
    ax.set_ylabel("time per token (us)")
    ax.set_title("Four methods on the tiny LM vs cache size\n(same text and link; "
                 "routing measured, time modelled)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _spec_markdown(ctx, model, source) -> list[str]:
    """SPEQ x MoBiLE: the four-way table and time per token vs cache size (issue 13)."""
    from golden import spec_mobile
    from golden.model import blas_threads

    with blas_threads(1):
        a = spec_mobile.DEFAULT_ADAPTIVE
        spec = dict(adaptive=a, draft_dense=spec_mobile.DEFAULT_DRAFT_DENSE)
        scale = 1.0 if ctx.quick else spec_mobile.choose_lut_scale(model, **spec)[0]
        spec["draft"] = spec_mobile.scaled_luts(model, scale)
        study = offload.study_spec_mobile(model, source, n_prompts=2 if ctx.quick else 4,
                                          spec=spec, progress=ctx.progress,
                                          **offload.spec_lengths(model.config))
    rows = offload.spec_cache_sweep(study)
    plot = ctx.out_dir / "specmoe_time_vs_cache.png"
    _spec_plot(rows, plot)
    (ctx.out_dir / "spec_mobile.json").write_text(json.dumps(
        offload.spec_study_json(study) | {"cache_sweep": rows, "lut_scale": scale},
        indent=2, default=float) + "\n")
    s = study.speq_stats["spec_mobile"]
    md = ["", "### SPEQ x MoBiLE: lossless speculative decoding of the offloaded MoE", "",
          f"The same text for every method ({study.tokens} greedy bytes of the full model after "
          f"held-out prompts), gamma {study.gamma}, adaptive draft length {a:g}, draft lut "
          f"scale {scale:g}, attention and LM head of the drafts "
          f"{'at full FP16' if study.draft_dense == 'full' else 'on their draft planes'}; top-1 agreement and routing *measured*, time and link bytes "
          f"*modelled* (offloading time model, {study.config.slots} expert slots of cache as "
          "quarter-expert plane units, split for the speculative methods: draft planes and "
          "the residuals of one verify group; link "
          f"{study.config.link_bytes_per_s / 1e9:g} GB/s; {study.config.host} host, the same "
          "for all four).", "",
          "| method | time/token | link KB/token | top-1 agreement | speedup vs LRU |",
          "|---|---|---|---|---|"]
    for name in offload.SPEC_METHODS:
        d = study.methods[name]
        md.append(f"| {offload.SPEC_LABELS[name]} | {d['time_per_token_s'] * 1e6:.2f} us | "
                  f"{d['link_bytes_per_token'] / 1e3:.1f} | {d['top1_agreement']:.3f} | "
                  f"{d['speedup_vs_lru']:.2f}x |")
    md += ["", f"Combination: acceptance {s['token_acceptance']:.3f} per checked draft token, "
           f"{s['tokens_per_step']:.2f} tokens per verify pass. Lower bounds of the "
           f"combination (us/token): "
           f"{study.methods['spec_mobile']['bound_no_prediction_per_token_s'] * 1e6:.1f} for a "
           f"host that requests only what it knows (dense parts + link), "
           f"{study.methods['spec_mobile']['bound_ideal_per_token_s'] * 1e6:.1f} for any host "
           f"(max(compute, link)). Assumptions: "
           + "; ".join(offload.spec_assumed(study.config.host, study.overlap)) + ".", "",
           f"![time per token vs cache size]({plot.name})", "",
           "*Plot: modelled* time per token (us) of the four methods on the same *measured* "
           "tiny-LM traces for device caches of 4 to 64 expert slots (bytes of full-precision "
           "experts); every method sees the same cache bytes and link (LRU and MoBiLE one "
           "cache; SPEQ and the combination split theirs into draft planes and streamed "
           "residuals, docs/spec_mobile.md) and the same host.",
           "Reproduce: `python -m speqmoe spec-mobile --prompt TEXT`."]
    return md
