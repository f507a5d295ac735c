"""Performance model: time per generated token for FP16, weight-only 8/4-bit and SPEQ decoding.

An accelerator (docs/architecture.md, "PE and PE array") is ``pes`` processing elements of 4
MAC lanes at ``clock_hz``, each consuming one 16-bit weight word per cycle, fed by a memory of ``mem_bw`` bytes/s. A *pass* runs
``T`` tokens through every weight matrix once; its time is the larger of

- compute: for each ``(N, K)`` matrix, the PE array golden model's cycle count
  (:func:`golden.pe_array.cycles`, the figure the RTL is checked against): verify/FP16 mode maps
  one output row per PE (4 lanes = up to 4 tokens), draft mode 4 rows per PE (one nibble each)
  for one token, about ``tiles * K`` cycles plus pipeline and drain; the baselines' PEs take
  one 16-bit word of 2 (8-bit) or 4 (4-bit) weights per cycle. Attention (``q.k`` and ``a.v``
  over the context) adds ``2 * T * context * d_model`` MACs per layer at ``4 * pes`` MACs per
  cycle;
- memory: weight bytes of the pass (:func:`golden.pe_array.weight_bytes`: the draft plane, plus
  the packed 12-bit residual plane in verify mode) + KV-cache bytes (read the whole context once per pass,
  write ``T`` new entries; FP16 keys and values in every scheme).

Only 4 tokens fit the PE's 4 lanes, so a verify pass of ``T > 4`` tokens is ``ceil(T / 4)``
*weight passes* over each dense matrix (attention projections, router, output head), and every
weight pass streams that matrix from memory again: its cycles **and its weight bytes** are
multiplied (one MATMUL command takes 1..4 tokens and reads its weights once, and nothing keeps
a matrix on chip between commands). An expert's matrices are streamed once per group of up to
4 of the tokens routed to it (:meth:`ModelShape.expert_passes`). The attention over the
context and its KV-cache bytes are charged once per pass (they are not weight-streaming
passes of the array). Weights are streamed from memory on every pass, and passes do not
overlap. Schemes:

- ``fp16``: one token per pass, 2 bytes per weight (the baseline of every speedup);
- ``w8`` (Olive-like) and ``w4`` (Tender-like) weight-only quantisation: one token per pass,
  8 bits or 4 bits + an FP16 scale per group of 128 weights; lossy, unlike SPEQ;
- ``speq``: per step ``gamma`` draft passes of one token reading the draft plane (a quarter of
  the FP16 weight bytes) and one verify pass of ``gamma + 1`` tokens reading all 16 bits. The
  expected tokens per step from a per-token acceptance ``alpha`` is
  ``(1 - alpha^(gamma+1)) / (1 - alpha)``, which assumes acceptances are independent and
  identically distributed; a measured tokens-per-step can be given instead.

For MoE shapes a pass reads only the experts its tokens use: one token reads ``top_k`` experts,
``T`` tokens are assumed to pick uniformly and independently, reading
``E * (1 - (1 - k/E)^T)`` distinct experts on average (an assumption, stated in the output),
each once per group of up to 4 of its tokens (``E * E[ceil(X / 4)]``, ``X ~ Bin(T, k/E)``).
Every result carries an ``inputs`` table saying which inputs are measured and which assumed.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

PAPER_ACCEPTANCE = 0.976
PAPER_SPEEDUPS = {"fp16": 2.07, "olive": 1.53, "tender": 1.45}
SCHEMES = ("fp16", "w8", "w4", "speq")


@dataclass(frozen=True)
class Accelerator:
    """The PE array and its memory (all inputs assumed unless a caller measured them).

    Defaults: a 16 x 16 PE array at 1 GHz (1024 MACs/cycle) on one HBM2e stack (410 GB/s),
    roughly balanced: the array consumes 512 GB/s of weight words at full rate. The 1 GHz
    ASIC clock is an assumption; :meth:`fpga` builds a target whose clock is a measured Fmax.
    ``mul_stages``/``add_stages`` are the PEs' pipeline depth (the array interleaves
    ``add_stages + 1`` tiles and its latency grows, :func:`golden.pe_array.cycles`).
    """

    rows: int = 16
    cols: int = 16
    clock_hz: float = 1.0e9
    mem_bw: float = 410e9
    macs_per_pe: int = 4
    mul_stages: int = 0
    add_stages: int = 0
    clock_source: str = "assumed: ASIC clock"
    mem_source: str = "assumed: one HBM2e stack"

    @classmethod
    def fpga(cls, *, rows: int, cols: int, fmax_mhz: float, mem_bw: float, device: str,
             mem_source: str, mul_stages: int = 0, add_stages: int = 0) -> "Accelerator":
        """An FPGA target clocked at a measured Fmax (nextpnr's, on *device*)."""
        return cls(rows=rows, cols=cols, clock_hz=fmax_mhz * 1e6, mem_bw=mem_bw,
                   mul_stages=mul_stages, add_stages=add_stages,
                   clock_source=f"measured: nextpnr Fmax {fmax_mhz:.1f} MHz on {device}",
                   mem_source=mem_source)

    def __post_init__(self):
        for name in ("rows", "cols"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if self.macs_per_pe != 4:
            raise ValueError("the reconfigurable PE has 4 MAC lanes; "
                             f"macs_per_pe={self.macs_per_pe!r} is not supported")
        if not self.clock_hz > 0 or not self.mem_bw > 0:
            raise ValueError("clock_hz and mem_bw must be positive")
        # hw.fp.MUL_MAX_STAGES and ADD_MAX_STAGES (golden does not import hw)
        if not (0 <= self.mul_stages <= 4 and 0 <= self.add_stages <= 3):
            raise ValueError(f"pipeline depth mul_stages={self.mul_stages!r} (0..4), "
                             f"add_stages={self.add_stages!r} (0..3) is not supported")

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    @property
    def interleave(self) -> int:
        return self.add_stages + 1

    @property
    def latency(self) -> int:
        from golden.pe_array import array_latency
        return array_latency(self.mul_stages, self.add_stages)


@dataclass(frozen=True)
class ModelShape:
    """A decoder's shape. ``n_experts = top_k = 1`` for dense models."""

    name: str
    n_layers: int
    d_model: int
    d_ff: int
    n_heads: int
    n_kv_heads: int
    vocab: int
    n_experts: int = 1
    top_k: int = 1

    @property
    def kv_dim(self) -> int:
        return self.d_model // self.n_heads * self.n_kv_heads

    def attn_matrices(self) -> list[tuple[int, int]]:
        d = self.d_model
        return [(d, d), (self.kv_dim, d), (self.kv_dim, d), (d, d)]

    def expert_matrices(self) -> list[tuple[int, int]]:
        return [(self.d_ff, self.d_model), (self.d_ff, self.d_model), (self.d_model, self.d_ff)]

    def router_matrices(self) -> list[tuple[int, int]]:
        return [(self.n_experts, self.d_model)] if self.n_experts > 1 else []

    def experts_read(self, tokens: int) -> float:
        """Expected distinct experts per layer a pass over ``tokens`` tokens reads."""
        if self.n_experts == 1:
            return 1.0
        k, e = self.top_k, self.n_experts
        return e * (1.0 - (1.0 - k / e) ** tokens)

    def expert_passes(self, tokens: int, lanes: int = 4) -> float:
        """Expected weight passes over expert matrices per layer for a pass of ``tokens``
        tokens: every expert streams its weights once per group of up to ``lanes`` of the tokens
        routed to it, i.e. ``E * E[ceil(X / lanes)]`` with ``X ~ Binomial(tokens, k / E)``
        under uniform independent routing. Equals :meth:`experts_read` for ``tokens <= lanes``
        and ``ceil(tokens / lanes)`` for a dense model (``k = E = 1``)."""
        k, e = self.top_k, self.n_experts
        p = k / e
        expected = sum(math.comb(tokens, x) * p ** x * (1.0 - p) ** (tokens - x)
                       * math.ceil(x / lanes) for x in range(1, tokens + 1))
        return e * expected

    def weights_per_token(self) -> int:
        """Weights one token uses (active parameters without the embedding table)."""
        per_layer = sum(n * k for n, k in self.attn_matrices() + self.router_matrices())
        per_layer += self.top_k * sum(n * k for n, k in self.expert_matrices())
        return self.n_layers * per_layer + self.vocab * self.d_model

    def total_weights(self) -> int:
        per_layer = sum(n * k for n, k in self.attn_matrices() + self.router_matrices())
        per_layer += self.n_experts * sum(n * k for n, k in self.expert_matrices())
        return self.n_layers * per_layer + self.vocab * self.d_model


# Published shapes: docs/model_shapes.md (the models' Hugging Face config.json files).
SHAPES: dict[str, ModelShape] = {
    "llama-2-7b": ModelShape("Llama-2-7B", 32, 4096, 11008, 32, 32, 32000),
    "llama-2-13b": ModelShape("Llama-2-13B", 40, 5120, 13824, 40, 40, 32000),
    "llama-3.1-8b": ModelShape("Llama-3.1-8B", 32, 4096, 14336, 32, 8, 128256),
}


def tiny_shape(config=None) -> ModelShape:
    """Our tiny MoE LM's shape (the given :class:`golden.model.ModelConfig`, else the
    shipped model's, else the trainer's default)."""
    if config is None:
        from golden import model as gm

        try:
            config = gm.load_default().config
        except FileNotFoundError:
            from golden.model import ModelConfig

            config = ModelConfig()
    return ModelShape("tiny-moe", config.n_layers, config.d_model, config.d_expert,
                      config.n_heads, config.n_heads, config.vocab, config.n_experts, config.top_k)


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).replace("llama2", "llama-2") \
        .replace("llama3", "llama-3").strip("-")


def shape_names() -> list[str]:
    return ["tiny"] + list(SHAPES)


def get_shape(name: str) -> ModelShape:
    """A shape by name (``tiny``, ``llama-2-7b``, ``llama-2-13b``, ``llama-3.1-8b``;
    case and ``_``/``-`` do not matter). Unknown names are a ``ValueError``."""
    key = _key(name)
    if key in ("tiny", "tiny-moe"):
        return tiny_shape()
    if key in SHAPES:
        return SHAPES[key]
    raise ValueError(f"unknown model shape {name!r}; known: {', '.join(shape_names())}")


def expected_tokens_per_step(alpha: float, gamma: int) -> float:
    """``(1 - alpha^(gamma+1)) / (1 - alpha)``: expected tokens per verify step when each draft
    token is accepted independently with probability ``alpha`` (the i.i.d. assumption)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"acceptance must lie in [0, 1], not {alpha!r}")
    if gamma < 1:
        raise ValueError(f"gamma must be >= 1, not {gamma!r}")
    if alpha == 1.0:
        return gamma + 1.0
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def layer_cycles(mode: str, n: int, k: int, acc: Accelerator) -> int:
    """Cycles of one pass of the array over an ``(n, k)`` matrix (one group of <= 4 tokens).

    ``draft`` and ``verify``/``fp16`` are :func:`golden.pe_array.cycles` (the PE array's golden
    timing, which the RTL is checked against); the baselines use the same formula with 2 (w8)
    or 4 (w4) weights per 16-bit word, i.e. ``ceil(N / 2)`` or ``ceil(N / 4)`` row groups.
    """
    from golden import pe_array

    g = acc.interleave
    if mode in ("draft", "verify", "fp16"):
        return pe_array.cycles("verify" if mode == "fp16" else mode, n, k, acc.rows, acc.cols,
                               interleave=g, latency=acc.latency)
    per_word = {"w8": 2, "w4": 4}[mode]
    groups = -(-(-(-n // per_word)) // (acc.pes * g))
    return (k - 1) * g + acc.latency + (groups - 1) * g * max(k, acc.pes) + g * acc.pes


def layer_weight_bytes(mode: str, n: int, k: int) -> float:
    """Weight bytes one pass reads: :func:`golden.pe_array.weight_bytes` for the draft plane
    and for draft + packed residual planes (verify and fp16: 2 bytes per weight); 1 byte + an
    FP16 scale per row (w8) or 0.5 byte + an FP16 scale per 128 weights (w4) for the baselines."""
    from golden import pe_array

    if mode in ("draft", "verify", "fp16"):
        return float(pe_array.weight_bytes("verify" if mode == "fp16" else mode, n, k))
    if mode == "w8":
        return n * k + 2.0 * n
    return n * k / 2 + 2.0 * math.ceil(n * k / 128)


def pass_time(shape: ModelShape, acc: Accelerator, mode: str, tokens: int,
              context: int) -> dict:
    """Time of one pass of ``tokens`` tokens in ``mode`` (``fp16``, ``w8``, ``w4``, ``draft``,
    ``verify``) with ``context`` tokens already in the KV cache."""
    if mode not in ("fp16", "w8", "w4", "draft", "verify"):
        raise ValueError(f"unknown pass mode {mode!r}")
    if tokens < 1 or (mode != "verify" and tokens != 1):
        raise ValueError(f"a {mode} pass runs {'1 to any' if mode == 'verify' else 'one'} "
                         f"token(s), not {tokens}")
    # 4 lanes = at most 4 tokens per weight pass; every weight pass streams the matrix again
    groups = math.ceil(tokens / acc.macs_per_pe)
    cycles = 0.0
    weight_bytes = 0.0
    mats = [(m, float(groups)) for m in shape.attn_matrices() + shape.router_matrices()]
    mats += [(m, shape.expert_passes(tokens, acc.macs_per_pe)) for m in shape.expert_matrices()]
    for (n, k), passes in mats:
        cycles += passes * layer_cycles(mode, n, k, acc)
        weight_bytes += passes * layer_weight_bytes(mode, n, k)
    cycles *= shape.n_layers
    weight_bytes *= shape.n_layers
    cycles += layer_cycles(mode, shape.vocab, shape.d_model, acc) * groups
    weight_bytes += layer_weight_bytes(mode, shape.vocab, shape.d_model) * groups
    attn_macs = shape.n_layers * 2 * tokens * (context + tokens) * shape.d_model
    cycles += attn_macs / (acc.macs_per_pe * acc.pes)
    kv_bytes = shape.n_layers * 2 * shape.kv_dim * 2 * (context + tokens)
    compute_s = cycles / acc.clock_hz
    memory_s = (weight_bytes + kv_bytes) / acc.mem_bw
    return {"mode": mode, "tokens": tokens, "weight_passes": groups, "cycles": cycles,
            "weight_bytes": weight_bytes,
            "kv_bytes": kv_bytes, "compute_s": compute_s, "memory_s": memory_s,
            "time_s": max(compute_s, memory_s),
            "bound": "memory" if memory_s >= compute_s else "compute"}


def speq_time_per_token(shape: ModelShape, acc: Accelerator, gamma: int, context: int, *,
                        acceptance: float | None = None,
                        tokens_per_step: float | None = None) -> dict:
    """Expected SPEQ time per generated token, from an acceptance rate (i.i.d. assumption) or
    a measured number of tokens per verify step."""
    if (acceptance is None) == (tokens_per_step is None):
        raise ValueError("give exactly one of acceptance and tokens_per_step")
    if tokens_per_step is None:
        tokens_per_step = expected_tokens_per_step(acceptance, gamma)
    elif not 1.0 <= tokens_per_step <= gamma + 1:
        raise ValueError(f"tokens_per_step must lie in [1, gamma+1], not {tokens_per_step!r}")
    draft = pass_time(shape, acc, "draft", 1, context)
    verify = pass_time(shape, acc, "verify", gamma + 1, context)
    step = gamma * draft["time_s"] + verify["time_s"]
    return {"time_s": step / tokens_per_step, "tokens_per_step": tokens_per_step,
            "step_s": step, "draft": draft, "verify": verify,
            "bytes": (gamma * (draft["weight_bytes"] + draft["kv_bytes"])
                      + verify["weight_bytes"] + verify["kv_bytes"]) / tokens_per_step}


def compare(shape: ModelShape | str, acc: Accelerator | None = None, *, gamma: int = 3,
            context: int = 512, acceptance: float | None = None,
            tokens_per_step: float | None = None, acceptance_source: str = "assumed") -> dict:
    """Time per token of every scheme, speedups, and the provenance of every input.

    ``acceptance_source`` says where ``acceptance``/``tokens_per_step`` came from (e.g.
    ``"measured: tiny MoE LM, held-out text"`` or ``"assumed: paper's 0.976"``).
    """
    if isinstance(shape, str):
        shape = get_shape(shape)
    acc = acc or Accelerator()
    if context < 0:
        raise ValueError(f"context must be >= 0, not {context}")
    if acceptance is None and tokens_per_step is None:
        acceptance, acceptance_source = PAPER_ACCEPTANCE, "assumed: the paper's mean 0.976"
    times = {}
    for scheme in ("fp16", "w8", "w4"):
        times[scheme] = pass_time(shape, acc, scheme, 1, context)
    times["speq"] = speq_time_per_token(shape, acc, gamma, context, acceptance=acceptance,
                                        tokens_per_step=tokens_per_step)
    t = {s: v["time_s"] for s, v in times.items()}
    how = ("(1 - a^(g+1)) / (1 - a), i.i.d. acceptance assumed" if tokens_per_step is None
           else "given directly")
    return {
        "shape": asdict(shape), "accelerator": asdict(acc), "gamma": gamma, "context": context,
        "time_per_token_s": t,
        "tokens_per_s": {s: 1.0 / v for s, v in t.items()},
        "speedup_vs_fp16": {s: t["fp16"] / v for s, v in t.items()},
        "speq_speedup_vs": {s: t[s] / t["speq"] for s in ("fp16", "w8", "w4")},
        "bound": {s: times[s]["bound"] for s in ("fp16", "w8", "w4")}
        | {"speq_draft": times["speq"]["draft"]["bound"],
           "speq_verify": times["speq"]["verify"]["bound"]},
        "speq_tokens_per_step": times["speq"]["tokens_per_step"],
        "speq_verify_weight_passes": times["speq"]["verify"]["weight_passes"],
        "inputs": {
            "shape": f"published configuration ({shape.name})" if shape.name != "tiny-moe"
            else "our tiny MoE LM's configuration",
            "accelerator": "assumed: " + ", ".join(
                f"{k}={v:g}" for k, v in asdict(acc).items() if not k.endswith("_source")),
            "clock": acc.clock_source,
            "memory": acc.mem_source,
            "context": f"assumed: {context} tokens in the KV cache (FP16 keys and values)",
            "acceptance": f"{acceptance_source}"
                          + (f": alpha={acceptance:.4f}" if acceptance is not None else
                             f": tokens/step={tokens_per_step:.3f}"),
            "tokens_per_step": how,
            "weights": "assumed: streamed from memory every weight pass (a verify pass of "
                       "gamma+1 > 4 tokens is ceil((gamma+1)/4) weight passes, each reading "
                       "the weights again); w8 per-row, w4 group-128 FP16 scales; draft pass "
                       "reads the draft plane (1/4 of the FP16 bytes)",
            "cycles": "golden.pe_array.cycles per matrix (tiles, pipeline, drain); "
                      "passes do not overlap",
            "moe_routing": "assumed: uniform independent routing of a pass's tokens"
                           if shape.n_experts > 1 else "dense model",
        },
    }


def speedup_vs_gamma(shape: ModelShape | str, acceptance: float, gammas=range(1, 9),
                     acc: Accelerator | None = None, context: int = 512) -> dict[int, float]:
    """SPEQ speedup over FP16 for each gamma (i.i.d. acceptance)."""
    return {g: compare(shape, acc, gamma=g, context=context,
                       acceptance=acceptance)["speedup_vs_fp16"]["speq"] for g in gammas}


def format_report(result: dict) -> str:
    """The comparison as text, with every input's provenance."""
    lines = [f"{result['shape']['name']}, gamma={result['gamma']}, context={result['context']}"]
    for s in SCHEMES:
        lines.append(f"  {s:5s} {result['time_per_token_s'][s] * 1e3:9.4f} ms/token "
                     f"{result['tokens_per_s'][s]:10.1f} tok/s  speedup vs fp16 "
                     f"{result['speedup_vs_fp16'][s]:5.2f}x")
    v = result["speq_speedup_vs"]
    lines.append(f"  SPEQ speedup: {v['fp16']:.2f}x vs FP16, {v['w8']:.2f}x vs w8, "
                 f"{v['w4']:.2f}x vs w4 (paper: 2.07x / 1.53x Olive / 1.45x Tender); "
                 f"{result['speq_tokens_per_step']:.2f} tokens/step; the verify of "
                 f"{result['gamma'] + 1} tokens is {result['speq_verify_weight_passes']} weight "
                 f"pass(es), each streaming the weights")
    lines.append("  inputs:")
    lines += [f"    {k}: {val}" for k, val in result["inputs"].items()]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command-level cycle model of the accelerator top, calibrated by the RTL co-simulation


#: Overhead terms of :class:`CommandCycleModel`, each a count per batch of commands.
OVERHEAD_FEATURES = ("batches", "csr_writes", "commands", "dense_matmuls", "slot_matmuls",
                     "load_acts", "demand_misses", "prefetch_fills", "written_lines")


def batch_features(commands, *, rows: int, cols: int, latency: int, line_cycles: float,
                   expert_lines: int, hits=(), prefetch_fills: int = 0,
                   csr_writes: int = 0, mul_stages: int = 0,
                   add_stages: int = 0) -> tuple[float, dict[str, float]]:
    """The physics and the overhead counts of one batch of accelerator commands.

    ``commands`` are :mod:`golden.accel` command objects run back to back (the host waits for
    the last); ``hits`` one bool per DEMAND (was it a hit); ``prefetch_fills`` the prefetches
    the cache issued; ``csr_writes`` the register writes the host made to push the batch;
    ``line_cycles`` the cycles host memory needs per bus line (1 at full bandwidth);
    ``latency`` its read latency in cycles; ``mul_stages``/``add_stages`` the PEs' pipeline
    depth (the array interleaves ``add_stages + 1`` tiles, padding tiles included).

    Returns ``(base, features)``: ``base`` is what the hardware cannot do faster (per MATMUL the
    larger of the PE array's cycles, :func:`golden.pe_array.cycles`, and the bus time of its
    dense weights; the read latency of every dense MATMUL, activation load and demand miss; the
    bus time of activation lines and of expert fills), and ``features`` the counts of
    :data:`OVERHEAD_FEATURES`, whose cycles :class:`CommandCycleModel` calibrates.
    """
    from golden import accel, pe_array

    pes = rows * cols
    base = 0.0
    f = dict.fromkeys(OVERHEAD_FEATURES, 0.0)
    f["batches"] = 1.0
    f["csr_writes"] = float(csr_writes)
    f["prefetch_fills"] = float(prefetch_fills)
    hits = list(hits)
    tokens = 1
    for cmd in commands:
        f["commands"] += 1
        if isinstance(cmd, accel.LoadActs):
            tokens = cmd.tokens
            f["load_acts"] += 1
            base += latency + cmd.tokens * -(-cmd.k // pes) * line_cycles
        elif isinstance(cmd, accel.Matmul):
            pe = pe_array.cycles(cmd.mode, cmd.n, cmd.k, rows, cols,
                                 interleave=add_stages + 1,
                                 latency=pe_array.array_latency(mul_stages, add_stages))
            out_tokens = 1 if cmd.mode == "draft" else tokens
            f["written_lines"] += out_tokens * -(-(4 * cmd.n) // (2 * pes))
            if cmd.slot is None:
                t = accel.verify_tiles(cmd.n, pes)
                lines = t * cmd.k // 4 * (4 if cmd.mode == "verify" else 1)
                base += max(pe, lines * line_cycles) + latency
                f["dense_matmuls"] += 1
            else:
                base += pe
                f["slot_matmuls"] += 1
        elif isinstance(cmd, accel.Demand):
            if not hits.pop(0):
                base += latency + expert_lines * line_cycles
                f["demand_misses"] += 1
    return base, f


@dataclass(frozen=True)
class CommandCycleModel:
    """Cycles of a batch = ``base`` (:func:`batch_features`) + the sum of ``overheads[name] *
    features[name]``: command start, register pushes, write-back tails, the part of prefetch
    fills a FENCE waits for. The overheads are measured: :meth:`fit` takes them from RTL
    batches by least squares (the co-simulation's ``make bench`` section ``cosim`` does)."""

    overheads: tuple[tuple[str, float], ...]

    def cycles(self, base: float, features: dict[str, float]) -> float:
        return base + sum(c * features[name] for name, c in self.overheads)

    @classmethod
    def fit(cls, batches) -> "CommandCycleModel":
        """Least-squares overheads from ``(base, features, measured cycles)`` batches; an
        overhead whose feature never occurs is 0."""
        import numpy as np

        batches = list(batches)
        if not batches:
            raise ValueError("need at least one measured batch to calibrate the model")
        x = np.array([[f[n] for n in OVERHEAD_FEATURES] for _, f, _ in batches], dtype=float)
        y = np.array([c - b for b, _, c in batches], dtype=float)
        used = x.any(axis=0)
        coef = np.zeros(len(OVERHEAD_FEATURES))
        coef[used] = np.linalg.lstsq(x[:, used], y, rcond=None)[0]
        return cls(tuple((n, float(c)) for n, c in zip(OVERHEAD_FEATURES, coef)))

    def as_dict(self) -> dict[str, float]:
        return dict(self.overheads)
