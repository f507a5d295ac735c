"""speqmoe cosim: decode text on the generated accelerator (Verilator), checked byte for byte.

The tiny MoE LM runs its embeddings, norms, attention, routing and sampling on the host
(numpy) and every linear layer as commands of the accelerator top in Verilator through cocotb;
its weights are BSFP planes in host memory and its experts are served by the accelerator's
expert cache (docs/cosim.md). Modes: plain (greedy, full weights), speq (draft passes in draft
mode, one verify pass for gamma + 1 tokens), mobile (MoBiLE little/big experts, fallback below
tau, prefetch). Prints the bytes as they are decoded, then cycles per token, bytes read per
token, cache hits and misses and tokens per second at the configured clock, and checks the
bytes against the golden decoding with the PE array's arithmetic (exit status 1 if they differ).
The [cosim] table of --config sets the accelerator and host memory.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

MODES = ("plain", "speq", "mobile")


def add_parser(sub):
    p = sub.add_parser("cosim", help="decode text on the accelerator RTL (Verilator co-simulation)",
                       description=__doc__)
    p.add_argument("--prompt", required=True, help="prompt text (UTF-8)")
    p.add_argument("--tokens", type=int, default=16, help="bytes to decode (default 16)")
    p.add_argument("--mode", choices=MODES + ("speq+mobile",), default="plain",
                   help="decoding method (default plain)")
    p.add_argument("--gamma", type=int, default=None,
                   help="SPEQ draft tokens per step, 1..3 (default: [cosim] gamma, 3)")
    p.add_argument("--tau", type=float, default=None,
                   help="MoBiLE confidence threshold (default: [cosim] tau, 0.5)")
    p.add_argument("--memory", choices=("rtl", "axiram"), default="rtl",
                   help="host memory model: rtl (inside the Verilog, fast; default) or axiram "
                        "(cocotbext-axi AxiRam, about 10x slower)")
    p.add_argument("--pauses", type=float, default=0.0,
                   help="probability of a pause cycle on each AXI channel (axiram only)")
    p.add_argument("--check", action="store_true",
                   help="run every command on the golden accelerator model too and compare "
                        "every result, response and counter (slower)")
    p.add_argument("--weights", type=Path, default=None,
                   help="model weights (default: the shipped golden/data/tiny_moe.npz)")
    p.add_argument("--config", type=Path, default=None, help="TOML configuration ([cosim] table)")
    p.add_argument("--build", type=Path, default=Path("build/cosim"),
                   help="build folder (default build/cosim)")
    p.add_argument("--waves", action="store_true",
                   help="record every signal: FST (VCD without the lz4 headers) beside the sim.log "
                        "in the build folder; large for long runs (or SPEQMOE_WAVES=1)")
    p.add_argument("--json", action="store_true",
                   help="print the results as one JSON object instead of the text "
                        "(progress goes to stderr)")
    p.set_defaults(func=run)
    return p


def _check(args, cfg):
    from speqmoe.errors import UserError

    if args.mode == "speq+mobile":
        raise UserError("mode speq+mobile needs the golden model of SPEQ x MoBiLE, which does "
                        "not exist yet (golden/spec_mobile.py); use plain, speq or mobile")
    if not args.prompt:
        raise UserError("--prompt must not be empty")
    if args.tokens < 1:
        raise UserError(f"--tokens must be positive, not {args.tokens}")
    gamma = cfg.gamma if args.gamma is None else args.gamma
    if not 1 <= gamma <= 3:
        raise UserError(f"--gamma must be 1..3 (gamma + 1 tokens fill the PE's 4 lanes), "
                        f"not {gamma}")
    tau = cfg.tau if args.tau is None else args.tau
    if not tau >= 0:
        raise UserError(f"--tau must be >= 0, not {tau}")
    if not 0.0 <= args.pauses < 1.0:
        raise UserError(f"--pauses must be a probability in [0, 1), not {args.pauses}")
    if args.pauses and args.memory != "axiram":
        raise UserError("--pauses needs --memory axiram (the RTL memory never pauses)")
    return gamma, tau


def run(args) -> int:
    from golden import model as gm
    from sim.cosim_flow import RunSpec, prepare, run_cosim, summarize
    from sim.runner import simulator_missing
    from speqmoe.config import load_config
    from speqmoe.errors import UserError

    cfg = load_config(args.config).cosim
    gamma, tau = _check(args, cfg)
    reason = simulator_missing("verilator")
    if reason:
        raise UserError(reason)
    try:
        model = gm.MoeLM.load(args.weights) if args.weights else gm.load_default()
        gm.check_prompt(model, args.prompt.encode("utf-8"), args.tokens)
        mmap, params, memory = prepare(model, rows=cfg.rows, cols=cfg.cols, slots=cfg.slots,
                                       policy=cfg.policy, latency=cfg.latency,
                                       bandwidth=cfg.bandwidth)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    weights = args.weights or gm.DEFAULT_WEIGHTS
    spec = RunSpec(prompt=args.prompt.encode("utf-8").hex(), tokens=args.tokens, mode=args.mode,
                   gamma=gamma, tau=tau, memory=args.memory, pauses=args.pauses,
                   lockstep=args.check)
    log = sys.stderr if args.json else sys.stdout
    print(f"accelerator {params.rows}x{params.cols} ({16 * params.pes}-bit bus), "
          f"{params.slots} expert slots of {params.expert_bytes} bytes, host memory "
          f"{memory.size >> 10} KiB with {memory.latency} cycles of read latency; "
          f"building or reusing the Verilator model in {args.build} ...", file=log, flush=True)
    start = time.perf_counter()
    started = []

    def progress(_, byte):
        if not started:
            started.append(True)
            print(f"[{time.perf_counter() - start:.0f} s] {args.prompt}", end="", file=log,
                  flush=True)
        print(bytes([byte]).decode("latin-1") if 32 <= byte < 127 or byte == 10 else
              f"\\x{byte:02x}", end="", file=log, flush=True)

    failed, results = run_cosim(params, memory, weights, [spec], args.build, progress=progress,
                                check=False, waves=True if args.waves else None)
    print(file=log)
    rec = results[0]
    if rec is None:
        raise UserError(f"the co-simulation failed before the end of decoding; see "
                        f"{args.build / 'sim.log'}")
    s = summarize(rec, cfg.clock_mhz * 1e6)
    text = bytes.fromhex(rec["bytes_hex"]).decode("utf-8", errors="replace")
    if args.json:
        print(json.dumps({"text": text, "bytes_hex": rec["bytes_hex"], "mode": args.mode,
                          "gamma": gamma, "tau": tau, "memory": args.memory,
                          "identical_to_golden": rec["identical"],
                          "first_difference": rec["first_difference"], **s,
                          "counters": rec["decode_counters"],
                          "wall_seconds": round(time.perf_counter() - start, 2)}))
    else:
        b = s["bytes_per_token"]
        c = s["cache"]
        print(f"{args.prompt}{text}")
        print("---")
        print(f"mode {args.mode}" + (f", gamma {gamma}" if args.mode == "speq" else "")
              + (f", tau {tau}" if args.mode == "mobile" else "")
              + f": {s['tokens']} bytes, {s['cycles_per_token']:.0f} cycles per token "
              f"(prefill {s['prefill_cycles']} cycles), accelerator busy "
              f"{100 * s['busy_fraction']:.0f}% of the time")
        print(f"bytes read per token: dense weights {b['dense']:.0f}, expert slots "
              f"{b['expert_slots']:.0f}, expert fills from host memory {b['expert_fills']:.0f}, "
              f"activations {b['activations']:.0f}; written {b['written']:.0f}")
        print(f"expert cache: {c['demands']} demands, {c['hits']} hits, {c['misses']} misses, "
              f"{c['prefetches_issued']} prefetch fills ({c['prefetches_useful']} useful)")
        print(f"{s['tokens_per_s']:.0f} tokens/s at {cfg.clock_mhz} MHz (an assumed clock); "
              f"simulation: {s['tokens_per_min_wall']:.1f} tokens per minute of wall time")
        print("identical to the golden decoding with the PE array's arithmetic: "
              + ("yes" if rec["identical"] else f"NO ({rec['first_difference']})"))
    if failed:
        print(f"the co-simulation reported a failure; see {args.build / 'sim.log'}", file=sys.stderr)
    return 0 if rec["identical"] and not failed else 1
