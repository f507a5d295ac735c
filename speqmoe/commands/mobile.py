"""speqmoe mobile: MoBiLE big/little experts vs on-demand LRU offloading (golden models).

Runs the tiny MoE LM on held-out text with the MoBiLE router (little pass, confidence fallback
below tau, prefetch), reports the accuracy proxies over a sweep of tau, and times four methods
with the offloading model (same expert-cache capacity for all): big only with on-demand LRU (the
baseline), little only, MoBiLE, MoBiLE + prefetch; the headline speedup compares MoBiLE without
prefetch with the baseline, which has none either. The tiny LM's compute side is the generated
accelerator's cycle model (golden.perf; array, clock and memory assumed) unless --compute gpu;
fills run to completion in the order they reach the DMA, as in the RTL expert cache. The
published shapes are driven by SYNTHETIC
routing traces (documented in golden.offload.SyntheticRouting). With --replay it instead replays
an expert request trace through the golden cache model and prints its counters.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from speqmoe.errors import UserError


def add_parser(sub):
    p = sub.add_parser("mobile", help="MoBiLE accuracy and offloading speedup vs on-demand LRU",
                       description=__doc__)
    p.add_argument("--tau", type=float, default=None,
                   help="confidence threshold of the fallback (default 0.5)")
    p.add_argument("--taus", default=None, help="comma-separated tau sweep")
    p.add_argument("--windows", type=int, default=4, help="held-out windows (default 4)")
    p.add_argument("--window", type=int, default=128, help="bytes per window (default 128)")
    p.add_argument("--gate-mass", type=float, default=None,
                   help="also promote a layer to big when the little set holds < this share "
                        "of the top-k gate mass")
    p.add_argument("--next-layer", action="store_true", help="next-layer gating prefetch")
    p.add_argument("--no-renormalize-little", action="store_true",
                   help="keep the big-pass gate values for the little set")
    p.add_argument("--little-k", type=int, default=None, help="little set size (default k/2)")
    p.add_argument("--cache-fraction", type=float, default=0.25,
                   help="share of all routed experts the device cache holds (default 0.25)")
    p.add_argument("--policy", default="lru", help="cache policy: lru, fifo, lfu (default lru)")
    p.add_argument("--queue-depth", type=int, default=2, help="prefetch queue depth (default 2)")
    p.add_argument("--link-gbs", type=float, default=25.0,
                   help="host link GB/s (default 25: PCIe 4.0 x16 effective)")
    p.add_argument("--device-gbs", type=float, default=1008.0,
                   help="device memory GB/s for the compute time of the published shapes and "
                        "of the tiny LM with --compute gpu (default 1008, assumed)")
    p.add_argument("--compute", choices=("accelerator", "gpu"), default="accelerator",
                   help="tiny LM compute side: the accelerator's golden.perf cycle model "
                        "(default; 16x16 PEs, 1 GHz and 410 GB/s assumed) or the memory-bound "
                        "GPU-class figure (--device-gbs)")
    p.add_argument("--layer-overhead-us", type=float, default=0.0,
                   help="extra fixed time per layer of every pass, in us (default 0)")
    p.add_argument("--shapes", default="all",
                   help="published shapes: 'all', 'none' or a comma list of "
                        "mixtral_8x7b,qwen15_moe_a27b,olmoe_1b_7b,deepseek_v2_lite")
    p.add_argument("--tokens", type=int, default=128, help="synthetic tokens per shape")
    p.add_argument("--fallback-rate", type=float, default=None,
                   help="synthetic fallback rate (default: the tiny LM's measured rate at tau)")
    p.add_argument("--seed", type=int, default=None, help="seed (default SPEQMOE_SEED)")
    p.add_argument("--trace-out", type=Path, default=None,
                   help="write the tiny LM's MoBiLE + prefetch request trace here")
    p.add_argument("--json", action="store_true",
                   help="print all figures as one JSON object instead of the text report "
                        "(progress goes to stderr)")
    p.add_argument("--replay", type=Path, default=None,
                   help="replay this trace through the golden cache model and print counters")
    p.add_argument("--slots", type=int, default=None,
                   help="cache slots for --replay (default: the trace's meta cache_slots, else 16)")
    p.set_defaults(func=run)
    return p


def _replay(args) -> int:
    from golden.expert_cache import ExpertCacheModel
    from golden.trace import read_trace, replay

    if not args.replay.is_file():
        raise UserError(f"trace file {args.replay} not found")
    try:
        trace = read_trace(args.replay)
        if args.slots is None:
            args.slots = int(trace.meta.get("cache_slots", 16))
        cache = ExpertCacheModel(args.slots, args.policy, queue_depth=args.queue_depth,
                                 expert_bytes=int(trace.meta.get("expert_bytes", 1)),
                                 n_layers=trace.n_layers, n_experts=trace.n_experts)
        replay(trace, cache)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    c = cache.counters
    print(f"replayed {args.replay}: {trace.count('D')} demands, {trace.count('P')} prefetches, "
          f"{args.slots} slots, policy {args.policy}")
    for key, value in c.as_dict().items():
        print(f"  {key:20s} {value}")
    print(f"  {'hit_rate':20s} {c.hit_rate:.4f}")
    return 0


def run(args) -> int:
    if args.replay is not None:
        return _replay(args)
    from golden import offload
    from golden.mobile import MobileConfig
    from golden.seed import base_seed
    from golden.trace import write_trace
    from speqmoe.progress import Progress

    progress = Progress("mobile")
    tau = offload.DEFAULT_TAU if args.tau is None else args.tau
    try:
        taus = (tuple(float(t) for t in args.taus.split(",")) if args.taus
                else offload.DEFAULT_TAUS)
    except ValueError:
        raise UserError(f"--taus must be comma-separated numbers, not {args.taus!r}") from None
    if args.shapes == "all":
        shape_keys = list(offload.SHAPES)
    elif args.shapes == "none":
        shape_keys = []
    else:
        shape_keys = [s.strip() for s in args.shapes.split(",")]
        unknown = [s for s in shape_keys if s not in offload.SHAPES]
        if unknown:
            raise UserError(f"unknown shape(s) {', '.join(unknown)}; known: "
                            f"{', '.join(offload.SHAPES)}")
    for name in ("windows", "window", "tokens", "queue_depth"):
        if getattr(args, name) < (0 if name == "queue_depth" else 1):
            raise UserError(f"--{name.replace('_', '-')} must be positive, "
                            f"not {getattr(args, name)}")
    from golden.expert_cache import POLICIES
    from golden.mobile import little_k_for

    if args.policy not in POLICIES:
        raise UserError(f"--policy must be one of {', '.join(POLICIES)}, not {args.policy!r}")
    if not 0 < args.cache_fraction <= 1:
        raise UserError(f"--cache-fraction must be in (0, 1], not {args.cache_fraction}")
    if not args.layer_overhead_us >= 0:
        raise UserError(f"--layer-overhead-us must be >= 0, not {args.layer_overhead_us}")
    seed = base_seed() if args.seed is None else args.seed
    link = dict(policy=args.policy, queue_depth=args.queue_depth,
                link_bytes_per_s=args.link_gbs * 1e9, device_bytes_per_s=args.device_gbs * 1e9,
                layer_overhead_s=args.layer_overhead_us * 1e-6)
    try:
        mcfg = MobileConfig(tau=tau, little_k=args.little_k, gate_mass=args.gate_mass,
                            next_layer=args.next_layer,
                            renormalize_little=not args.no_renormalize_little)
        model, source = offload.load_tiny_model(seed)
        little_k_for(model.config.top_k, args.little_k)
        progress(f"tiny LM: {source}")
        tiny = offload.study_tiny(model, source, windows=args.windows, window=args.window,
                                  taus=taus, tau=tau, cache_fraction=args.cache_fraction,
                                  mobile_config=mcfg, progress=progress,
                                  compute=args.compute, **link)
        fb, measured = offload.synthetic_fallback_rate(tiny)
        if args.fallback_rate is not None:
            fb, measured = args.fallback_rate, False
        routing = offload.SyntheticRouting(fallback_rate=fb, seed=seed)
        shapes = {}
        for key in shape_keys:
            progress(f"synthetic {offload.SHAPES[key].name} ...")
            shapes[key] = offload.study_shape(offload.SHAPES[key], tokens=args.tokens,
                                              routing=routing, cache_fraction=args.cache_fraction,
                                              **link)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    figures = offload.study_json(tiny, shapes) if args.json else None
    if not args.json:
        print("\n".join(offload.report_lines(tiny, shapes, fallback_measured=measured)))
    if args.next_layer:
        from golden.mobile import next_layer_accuracy

        acc = next_layer_accuracy(tiny.evaluation.point(tau).steps)
        if args.json:
            figures["next_layer_accuracy"] = acc
        else:
            print(f"next-layer gating: {acc:.3f} of the predicted experts were used by the next layer")
    if args.trace_out is not None:
        write_trace(args.trace_out, tiny.traces["mobile_prefetch"])
        print(f"wrote {args.trace_out}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0
