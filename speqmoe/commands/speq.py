"""speqmoe speq: self-speculative decoding of the tiny MoE LM with its BSFP-4 draft.

Generates text after --prompt with SPEQ (draft = 4 of the 16 bits of every weight, verify =
all 16), prints it and the statistics (acceptance rate, tokens per verify step, draft and verify
passes). With greedy verification the output is checked against plain greedy decoding. With
--hw-arith every matmul uses the PE array's arithmetic (FP16 activations, binary32 sequential
accumulation), so the text is what the accelerator would produce.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("speq", help="SPEQ self-speculative decoding of the tiny MoE LM",
                       description=__doc__)
    p.add_argument("--prompt", required=True, help="prompt text (UTF-8)")
    p.add_argument("--gamma", type=int, default=3, help="draft tokens per step (default 3)")
    p.add_argument("--verify", choices=("greedy", "sample"), default="greedy",
                   help="greedy (exact) or rejection-sampling verification (default greedy)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="bytes to generate (default 64)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (--verify sample)")
    p.add_argument("--hw-arith", action="store_true",
                   help="compute every matmul with the PE array's binary32 sequential arithmetic")
    p.add_argument("--weights", type=Path, default=None,
                   help="model weights file (default: the shipped golden/data/tiny_moe.npz)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the comparison with plain greedy decoding")
    p.add_argument("--perf", metavar="SHAPE", default=None,
                   help="also project this run's acceptance onto a model shape "
                        "(tiny, llama-2-7b, llama-3.1-8b, llama-2-13b)")
    p.add_argument("--json", action="store_true",
                   help="print the text and statistics as one JSON object instead of the text "
                        "(progress goes to stderr)")
    p.set_defaults(func=run)
    return p


def _run(args) -> int:
    from golden import model as gm
    from golden import perf, speq
    from speqmoe.errors import UserError

    if args.gamma < 1:
        raise UserError(f"--gamma must be at least 1, not {args.gamma}")
    if not args.prompt:
        raise UserError("--prompt must not be empty")
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be positive, not {args.max_new_tokens}")
    try:
        shape = perf.get_shape(args.perf) if args.perf else None
        model = gm.MoeLM.load(args.weights) if args.weights else gm.load_default()
        linear = speq.hw_arith_linear if args.hw_arith else None
        start = time.perf_counter()
        result = speq.generate(model, args.prompt.encode("utf-8"), args.max_new_tokens,
                               gamma=args.gamma, verify=args.verify, seed=args.seed,
                               linear=linear)
        seconds = time.perf_counter() - start
        same = None
        if args.verify == "greedy" and not args.no_check:
            same = gm.generate(model, args.prompt.encode("utf-8"), args.max_new_tokens,
                               linear=linear) == result.bytes
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    s = result.stats
    stats = s.as_dict() | {"seconds": round(seconds, 3), "hw_arith": args.hw_arith,
                           "identical_to_plain_greedy": same}
    if args.json:
        print(json.dumps({"text": result.text} | stats, indent=2))
    else:
        print(args.prompt + result.text)
        print("---")
        print(f"gamma {s.gamma}, {s.verify} verification{', hardware arithmetic' if args.hw_arith else ''}: "
              f"{s.generated} bytes in {s.verify_passes} verify passes and {s.draft_passes} draft "
              f"passes ({seconds:.2f} s)")
        print(f"acceptance rate {s.token_acceptance:.3f} per checked draft token "
              f"({s.accepted}/{s.accepted + s.rejected}); {s.acceptance_rate:.3f} of all "
              f"{s.drafted} drafted tokens kept; {s.tokens_per_step:.2f} tokens per verify step")
        if same is not None:
            print(f"identical to plain greedy decoding: {'yes' if same else 'NO'}")
    if shape is not None:
        r = perf.compare(shape, gamma=s.gamma, tokens_per_step=s.tokens_per_step,
                         acceptance_source="measured: this run's tokens per verify step")
        print(perf.format_report(r))
    if same is False:
        return 1
    return 0


def run(args) -> int:
    from golden.model import blas_threads

    with blas_threads(1):        # small matmuls: one BLAS thread is much faster on a loaded machine
        return _run(args)
