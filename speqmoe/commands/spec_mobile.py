"""speqmoe spec-mobile: SPEQ x MoBiLE, lossless speculative decoding of an offloaded MoE.

Decodes --prompt with the combination (draft = BSFP draft planes of the little expert set and
the router, attention and LM head at full FP16 unless --draft-dense draft; verify = full
precision, all k experts, gamma + 1 tokens at once; greedy verification, checked against
plain greedy decoding of the full model), then compares four methods on the same
held-out text and the same link with the offloading time model (golden.offload): on-demand
LRU at full precision, MoBiLE, SPEQ on the offloaded model without little experts, and the
combination: time per token, link bytes per token, top-1 agreement with the full model. The
routing of the tiny LM is measured; the link, the cache and the compute side are modelled
(assumptions printed); --shapes adds the published MoE shapes with SYNTHETIC routing.
"""

from __future__ import annotations

import json
import sys
import time


def add_parser(sub):
    from golden.spec_mobile import DEFAULT_DRAFT_DENSE, DRAFT_DENSE, DRAFT_ROUTERS

    p = sub.add_parser("spec-mobile", help="SPEQ x MoBiLE: lossless speculative decoding of an "
                                           "offloaded MoE, compared with LRU, MoBiLE and SPEQ",
                       description=__doc__)
    p.add_argument("--prompt", required=True, help="prompt text (UTF-8)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="bytes to generate (default 64)")
    p.add_argument("--gamma", type=int, default=3, help="most draft tokens per step (default 3)")
    p.add_argument("--adaptive", type=float, default=None,
                   help="stop drafting after a draft token whose probability is below this "
                        "(default 0.7; 0 drafts gamma tokens always)")
    p.add_argument("--lut-scale", type=float, default=None,
                   help="scale of the draft lut values (default: chosen on training text)")
    p.add_argument("--draft-router", choices=DRAFT_ROUTERS, default="draft",
                   help="router weights of the draft pass (default draft)")
    p.add_argument("--draft-dense", choices=DRAFT_DENSE, default=DEFAULT_DRAFT_DENSE,
                   help="attention and LM head weights of the draft pass: full FP16 (default; "
                        "resident on the device, the experts stay drafts) or their BSFP draft")
    p.add_argument("--prompts", type=int, default=4,
                   help="held-out prompts of the four-way comparison (default 4; 0 skips it)")
    p.add_argument("--cache-fraction", type=float, default=0.25,
                   help="share of all routed experts the device cache holds (default 0.25)")
    p.add_argument("--link-gbs", type=float, default=25.0,
                   help="host link GB/s (default 25: PCIe 4.0 x16 effective)")
    p.add_argument("--host", choices=("nonblocking", "blocking"), default="nonblocking",
                   help="host of the time model, the same for all four methods (default "
                        "nonblocking: requests go out when a layer's router has run, hits under "
                        "a miss; blocking: the next request after a demand's response)")
    p.add_argument("--predict", choices=("none", "ahead", "jit"), default="none",
                   help="prefetch from predictions: none (default), ahead (the draft's "
                        "predictions a step ahead), jit (just in time); MoBiLE then uses its "
                        "own prefetch, LRU has none")
    p.add_argument("--shapes", action="store_true",
                   help="also compare on the published MoE shapes (SYNTHETIC routing)")
    p.add_argument("--json", action="store_true",
                   help="print the decoded text and the comparison as one JSON object instead of "
                        "the text (progress goes to stderr)")
    p.set_defaults(func=run)
    return p


def _run(args) -> int:
    from golden import model as gm
    from golden import offload, spec_mobile
    from speqmoe.errors import UserError
    from speqmoe.progress import Progress

    if not args.prompt:
        raise UserError("--prompt must not be empty")
    for name in ("max_new_tokens", "gamma"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be positive, "
                            f"not {getattr(args, name)}")
    if args.prompts < 0:
        raise UserError(f"--prompts must be >= 0, not {args.prompts}")
    from golden.spec_mobile import DEFAULT_ADAPTIVE

    if args.adaptive is None:
        args.adaptive = DEFAULT_ADAPTIVE
    if not 0 <= args.adaptive <= 1:
        raise UserError(f"--adaptive must be in [0, 1], not {args.adaptive}")
    if not 0 < args.cache_fraction <= 1:
        raise UserError(f"--cache-fraction must be in (0, 1], not {args.cache_fraction}")
    if not args.link_gbs > 0:
        raise UserError(f"--link-gbs must be positive, not {args.link_gbs}")
    if args.lut_scale is not None and not 0 < args.lut_scale < 4:
        raise UserError(f"--lut-scale must be in (0, 4), not {args.lut_scale}")
    progress = Progress("spec-mobile")
    adaptive = args.adaptive or None
    try:
        model = gm.load_default()
        if args.lut_scale is None:
            progress("choosing the draft lut scale on training text ...")
            scale, _ = spec_mobile.choose_lut_scale(model, adaptive=adaptive,
                                                    draft_router=args.draft_router,
                                                    draft_dense=args.draft_dense)
        else:
            scale = args.lut_scale
        draft = spec_mobile.scaled_luts(model, scale)
        spec = dict(adaptive=adaptive, draft=draft, draft_router=args.draft_router,
                    draft_dense=args.draft_dense)
        prompt = args.prompt.encode("utf-8")
        start = time.perf_counter()
        res = spec_mobile.generate(model, prompt, args.max_new_tokens, gamma=args.gamma, **spec)
        seconds = time.perf_counter() - start
        same = gm.generate(model, prompt, args.max_new_tokens) == res.bytes
        study = shapes = None
        if args.prompts:
            study = offload.study_spec_mobile(model, "trained tiny LM", n_prompts=args.prompts,
                                              gamma=args.gamma, spec=spec, progress=progress,
                                              cache_fraction=args.cache_fraction,
                                              link_bytes_per_s=args.link_gbs * 1e9,
                                              host=args.host, overlap={
                                                  "none": False, "ahead": True,
                                                  "jit": "jit"}[args.predict])
            if args.shapes:
                s = study.speq_stats["spec_mobile"]
                shapes = {}
                for key, shape in offload.SHAPES.items():
                    progress(f"synthetic {shape.name} ...")
                    shapes[key] = offload.study_spec_shape(
                        shape, gamma=args.gamma, alpha=s["token_acceptance"],
                        mobile_agreement=study.methods["mobile"]["top1_agreement"],
                        cache_fraction=args.cache_fraction, host=args.host,
                        link_bytes_per_s=args.link_gbs * 1e9, draft_dense=args.draft_dense)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    stats = res.stats.as_dict() | {"adaptive_stops": res.adaptive_stops, "lut_scale": scale,
                                   "draft_router": args.draft_router,
                                   "draft_dense": args.draft_dense,
                                   "seconds": round(seconds, 3)}
    if args.json:
        out = {"text": res.text, "bytes_hex": res.bytes.hex(), "identical_to_plain_greedy": same,
               "stats": stats}
        if study is not None:
            out["comparison"] = offload.spec_study_json(study, shapes)
        print(json.dumps(out, indent=2, default=float))
    else:
        print(args.prompt + res.text)
        print("---")
        s = res.stats
        print(f"SPEQ x MoBiLE, gamma {s.gamma} (adaptive {args.adaptive:g}, lut scale {scale:g}, "
              f"{args.draft_router} router, {args.draft_dense} dense parts in the draft): "
              f"{s.generated} bytes in "
              f"{s.verify_passes} verify and {s.draft_passes} draft passes; acceptance "
              f"{s.token_acceptance:.3f} per checked draft token; identical to plain greedy "
              f"decoding: {'yes' if same else 'NO'}")
        if study is not None:
            print("\n".join(offload.spec_report_lines(study, shapes)))
    if not same:
        print("speqmoe spec-mobile: error: the output differs from plain greedy decoding",
              file=sys.stderr)
        return 1
    return 0


def run(args) -> int:
    from golden.model import blas_threads

    with blas_threads(1):        # small matmuls: one BLAS thread is much faster on a loaded machine
        return _run(args)
