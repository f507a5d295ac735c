"""speqmoe train: train the tiny MoE language model (needs the optional extra torch).

Writes an FP16 weights file that records its configuration, its training settings and its
held-out bits per byte (last 10% of pydoc_data.topics). The shipped golden/data/tiny_moe.npz
was produced with the defaults.
"""

from __future__ import annotations

from pathlib import Path


def add_parser(sub):
    from golden.model import DEFAULT_WEIGHTS

    p = sub.add_parser("train", help="train the tiny MoE language model (torch, CPU)",
                       description=__doc__)
    p.add_argument("--out", type=Path, default=Path("build/train/tiny_moe.npz"),
                   help="weights file to write (default build/train/tiny_moe.npz; the shipped "
                        f"one is golden/data/{DEFAULT_WEIGHTS.name})")
    p.add_argument("--minutes", type=float, default=25.0,
                   help="time budget; training stops early when it runs out (default 25)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default 900)")
    p.add_argument("--batch", type=int, default=None, help="windows per step (default 16)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: faster than 2 on a shared 2-core machine)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from speqmoe.errors import UserError
    from speqmoe.progress import Progress

    try:
        from golden import train as gt
    except ImportError as exc:
        raise UserError(str(exc)) from None
    for name in ("minutes", "steps", "batch", "threads"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name} must be positive, not {value}")
    try:
        gt._import_torch()
    except ImportError as exc:
        raise UserError(str(exc)) from None
    model = gt.train(args.out, steps=args.steps or gt.DEFAULT_STEPS,
                     batch=args.batch or gt.DEFAULT_BATCH, minutes=args.minutes,
                     seed=args.seed, threads=args.threads, progress=Progress("train"))
    print(f"held-out bits per byte: {model.metadata['heldout_bits_per_byte']:.4f} "
          f"({model.metadata['train_steps']} steps, {model.metadata['train_seconds']:.0f} s); "
          f"wrote {args.out}")
    return 0
