"""Offloaded MoE decoding time model: an expert cache fed over a host link (DESIGN §7, issue 5).

The model times a :mod:`golden.trace` request trace. Every input is listed in
:class:`OffloadConfig`; each default is an *assumption*, stated where it is defined.

Timeline (batch 1 decoding; one compute engine, one host link)
    For every layer pass of the trace (its ``D``/``P`` records up to the ``X`` marker):

    1. the dense part of the layer (attention, router, shared experts; resident on the device)
       takes ``dense_bytes_per_layer / device_bytes_per_s + layer_overhead_s``; the routing
       decision, and so every request of the layer, is known when it ends;
    2. the requests go to the expert cache (:class:`golden.expert_cache.ExpertCacheModel`,
       non-lockstep, the same ``slots`` and ``policy`` for every method). A demand miss starts a
       transfer of ``expert_bytes / link_bytes_per_s + link_latency_s`` on the link as soon as
       the link has no earlier demand transfer. Prefetches are issued in order into the
       controller's queue and use the link whenever no demand transfer needs it: a demand
       preempts a prefetch transfer (the DMA gives demand bursts priority at burst granularity,
       modelled as instant preemption with resume); prefetches complete in queue order;
    3. the layer's experts are computed one after the other, each as soon as its weights are
       resident, each taking ``expert_bytes / device_bytes_per_s`` (memory-bound GEMV). The
       layer ends when the last expert is done; the ``R`` records then unpin the slots.

    Transfers overlap compute (a prefetch for layer l+1 streams while layer l computes). A
    demand for an expert whose prefetch is in flight waits for it (the queue ahead of it
    started first). If a demand finds no slot (every unpinned slot is being filled by a
    prefetch), the oldest prefetch is completed first (its time is charged).

Outputs are :class:`OffloadResult` (total and per-token time, hits, misses, bytes moved,
stall time). Methods are compared on traces built from the *same* token sequence.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

from golden.expert_cache import ExpertCacheModel
from golden.mobile import LayerStep, PassStep, TokenStep, build_trace, little_k_for
from golden.trace import Trace

PCIE4_X16_BYTES_PER_S = 25e9       # PCIe 4.0 x16 effective, pinned memory (MODEL_SHAPES.md)
GPU_BYTES_PER_S = 1008e9           # assumed compute device: RTX 4090-class GDDR6X, 1008 GB/s
METHODS = ("lru_big", "little", "mobile", "mobile_prefetch")
METHOD_LABELS = {"lru_big": "big only, on-demand LRU (baseline)", "little": "little only",
                 "mobile": "MoBiLE", "mobile_prefetch": "MoBiLE + prefetch"}


@dataclass(frozen=True)
class OffloadConfig:
    """Inputs of the time model (all assumed unless a caller measured them)."""

    expert_bytes: int
    dense_bytes_per_layer: int
    slots: int
    policy: str = "lru"
    queue_depth: int = 2          # our choice: deeper queues reserve slots and hurt (see the demo)
    link_bytes_per_s: float = PCIE4_X16_BYTES_PER_S
    link_latency_s: float = 0.0
    device_bytes_per_s: float = GPU_BYTES_PER_S
    layer_overhead_s: float = 0.0

    def __post_init__(self):
        if self.slots < 1:
            raise ValueError(f"slots must be >= 1, not {self.slots!r}")
        if self.policy not in ("lru", "fifo", "lfu"):
            raise ValueError(f"policy must be lru, fifo or lfu, not {self.policy!r}")
        for name in ("expert_bytes", "link_bytes_per_s", "device_bytes_per_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)!r}")
        for name in ("dense_bytes_per_layer", "link_latency_s", "layer_overhead_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)!r}")

    @property
    def transfer_s(self) -> float:
        return self.expert_bytes / self.link_bytes_per_s + self.link_latency_s

    @property
    def expert_compute_s(self) -> float:
        return self.expert_bytes / self.device_bytes_per_s

    @property
    def dense_s(self) -> float:
        return self.dense_bytes_per_layer / self.device_bytes_per_s + self.layer_overhead_s


@dataclass
class OffloadResult:
    time_s: float
    tokens: int
    hits: int
    misses: int
    prefetches_issued: int
    prefetches_useful: int
    bytes_transferred: int
    stall_s: float
    compute_s: float

    @property
    def time_per_token_s(self) -> float:
        return self.time_s / self.tokens if self.tokens else 0.0

    @property
    def hit_rate(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["time_per_token_s"] = self.time_per_token_s
        d["hit_rate"] = self.hit_rate
        return d


@dataclass
class _Fill:
    slot: int
    remaining: float
    end: float | None = None


def simulate(trace: Trace, cfg: OffloadConfig) -> OffloadResult:
    """Time ``trace`` under ``cfg`` (see the module docstring)."""
    cache = ExpertCacheModel(cfg.slots, cfg.policy, queue_depth=cfg.queue_depth,
                             expert_bytes=int(cfg.expert_bytes), n_layers=trace.n_layers,
                             n_experts=trace.n_experts, lockstep=False)
    xfer = cfg.transfer_s
    now = 0.0
    cursor = 0.0              # prefetch progress is accounted up to this time
    demand_free = 0.0         # the link has no demand work after this time
    busy: deque[list[float]] = deque()      # demand transfer intervals not yet passed
    queue: deque[_Fill] = deque()
    ready_at: dict[int, float] = {}
    slot_of: dict[int, int] = {}
    layer_open = False
    ready: list[float] = []
    stall = compute = 0.0
    steps = set()

    def advance(t: float, until: _Fill | None = None) -> None:
        """Give queued prefetches the link time of [cursor, t] that demands leave free
        (with ``until``: as much link time as that fill needs to finish)."""
        nonlocal cursor
        while (until.end is None) if until is not None else (cursor < t):
            while busy and busy[0][1] <= cursor:
                busy.popleft()
            limit = float("inf") if until is not None else t
            if busy and busy[0][0] <= cursor:
                cursor = min(busy[0][1], limit)
                continue
            gap_end = min(busy[0][0] if busy else float("inf"), limit)
            f = next((f for f in queue if f.end is None), None)
            if f is None:            # the link idles until t
                cursor = gap_end
                continue
            dt = min(f.remaining, gap_end - cursor)
            f.remaining -= dt
            cursor += dt
            if f.remaining <= 0:
                f.end = cursor
                ready_at[f.slot] = cursor

    def retire(t: float) -> None:
        advance(t)
        while queue and queue[0].end is not None and queue[0].end <= t:
            queue.popleft()
            cache.complete_prefetches(1)

    def force(slot: int) -> None:
        """Complete the queue up to and including ``slot`` (FIFO order)."""
        nonlocal demand_free
        target = next(f for f in queue if f.slot == slot)
        advance(now, until=target)
        demand_free = max(demand_free, cursor)
        while True:
            f = queue.popleft()
            if f is target:
                break

    for r in trace.records:
        steps.add(r.step)
        if r.op in ("D", "P") and not layer_open:
            now += cfg.dense_s
            compute += cfg.dense_s
            layer_open = True
            ready = []
        if r.op == "D":
            retire(now)
            res = cache.access(r.layer, r.expert, "demand")
            while res.waited and queue:
                force(queue[0].slot)
                cache.complete_prefetches(1)
                res = cache.access(r.layer, r.expert, "demand")
            if res.waited:
                raise ValueError(f"{cfg.slots} slots cannot hold the pins of one layer "
                                 f"(demand {r.id} at step {r.step} would wait forever)")
            if res.in_flight:
                force(res.slot)      # the cache model completed its queue up to this slot
            elif not res.hit:
                start = max(now, demand_free)
                demand_free = start + xfer
                busy.append([start, demand_free])
                ready_at[res.slot] = demand_free
            ready.append(max(now, ready_at.get(res.slot, 0.0)))
            slot_of[r.id] = res.slot
        elif r.op == "P":
            retire(now)
            res = cache.access(r.layer, r.expert, "prefetch")
            if not res.dropped:
                queue.append(_Fill(res.slot, xfer))
                ready_at[res.slot] = float("inf")
        elif r.op == "X":
            t = now
            for rd in sorted(ready):
                if rd > t:
                    stall += rd - t
                    t = rd
                t += cfg.expert_compute_s
                compute += cfg.expert_compute_s
            now = t
            layer_open = False
        elif r.op == "R":
            cache.release(slot_of.pop(r.id))
    c = cache.counters
    return OffloadResult(time_s=now, tokens=len(steps), hits=c.hits, misses=c.misses,
                         prefetches_issued=c.prefetches_issued,
                         prefetches_useful=c.prefetches_useful,
                         bytes_transferred=c.bytes_read, stall_s=stall, compute_s=compute)


def method_traces(big_steps: list[TokenStep], little_steps: list[TokenStep],
                  mobile_steps: list[TokenStep], n_layers: int, n_experts: int,
                  **meta) -> dict[str, Trace]:
    """The four methods' traces over the same tokens (``next_layer`` prefetches go with
    ``mobile_prefetch``)."""
    return {
        "lru_big": build_trace(big_steps, n_layers, n_experts, prefetch=False, next_layer=False,
                               method="lru_big", **meta),
        "little": build_trace(little_steps, n_layers, n_experts, prefetch=False,
                              next_layer=False, method="little", **meta),
        "mobile": build_trace(mobile_steps, n_layers, n_experts, prefetch=False,
                              next_layer=False, method="mobile", **meta),
        "mobile_prefetch": build_trace(mobile_steps, n_layers, n_experts, prefetch=True,
                                       next_layer=True, method="mobile_prefetch", **meta),
    }


def compare_methods(traces: dict[str, Trace], cfg: OffloadConfig) -> dict[str, dict]:
    """Simulate every method; each entry gains ``speedup_vs_lru`` (baseline time / time)."""
    out = {name: simulate(t, cfg).as_dict() for name, t in traces.items()}
    base = out["lru_big"]["time_s"]
    for d in out.values():
        d["speedup_vs_lru"] = base / d["time_s"] if d["time_s"] else float("nan")
    return out


# -- published shapes and synthetic routing ----------------------------------------------

@dataclass(frozen=True)
class MoeShape:
    """A published MoE model's offloading-relevant shape (MODEL_SHAPES.md; BF16 weights)."""

    name: str
    moe_layers: int
    d_model: int
    d_expert: int
    n_experts: int
    top_k: int
    dense_bytes_per_layer: int
    renormalize_gates: bool
    note: str = ""

    @property
    def expert_bytes(self) -> int:
        return 3 * self.d_model * self.d_expert * 2


def _attn_bytes(d_model: int, kv_dim: int) -> int:
    return 2 * (2 * d_model * d_model + 2 * d_model * kv_dim)


SHAPES = {
    "mixtral_8x7b": MoeShape("Mixtral-8x7B", 32, 4096, 14336, 8, 2, _attn_bytes(4096, 1024), True,
                             "attention GQA 32/8 heads, 83.9 MB per layer"),
    "qwen15_moe_a27b": MoeShape("Qwen1.5-MoE-A2.7B", 24, 2048, 1408, 60, 4,
                                _attn_bytes(2048, 2048) + 3 * 2048 * 5632 * 2, False,
                                "attention MHA + shared expert d_ff 5632 resident"),
    "olmoe_1b_7b": MoeShape("OLMoE-1B-7B", 16, 2048, 1024, 64, 8, _attn_bytes(2048, 2048), False,
                            "attention MHA"),
    "deepseek_v2_lite": MoeShape("DeepSeek-V2-Lite", 26, 2048, 1408, 64, 6,
                                 2 * (2048 * 3072 + 2048 * 576 + 512 * 4096 + 2048 * 2048)
                                 + 2 * 3 * 2048 * 1408 * 2, False,
                                 "MLA attention (our estimate, 27.6 MB) + 2 shared experts "
                                 "resident; the first, dense layer is not modelled"),
}


@dataclass(frozen=True)
class SyntheticRouting:
    """Documented synthetic router model (assumed; it labels every result it drives).

    Per layer, expert popularity follows a Zipf law ``p_e ~ (rank_e + 1) ** -zipf`` over a
    random permutation of the experts (per layer, from ``seed``). Per token and layer the
    ranking is Gumbel-top-k sampling (Plackett-Luce without replacement) of the scores
    ``log p_e + stickiness * [e was in the previous token's top-k at this layer] + Gumbel``,
    so consecutive tokens share experts more often than chance. A token falls back
    (MoBiLE's big re-run) independently with probability ``fallback_rate``.
    """

    zipf: float = 0.6
    stickiness: float = 1.0
    fallback_rate: float = 0.2
    seed: int = 0

    def rankings(self, n_layers: int, n_experts: int, top_k: int, tokens: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        logp = np.empty((n_layers, n_experts))
        for layer in range(n_layers):
            perm = rng.permutation(n_experts)
            logp[layer, perm] = -self.zipf * np.log(np.arange(1, n_experts + 1))
        out = np.empty((tokens, n_layers, top_k), dtype=np.int64)
        prev = np.zeros((n_layers, n_experts))
        for t in range(tokens):
            scores = logp + self.stickiness * prev + rng.gumbel(size=(n_layers, n_experts))
            top = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
            out[t] = top
            prev = np.zeros((n_layers, n_experts))
            np.put_along_axis(prev, top, 1.0, axis=1)
        return out

    def fallbacks(self, tokens: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed + 1)
        return rng.random(tokens) < self.fallback_rate


def synthetic_steps(rankings: np.ndarray, fallbacks: np.ndarray, little_k: int
                    ) -> tuple[list[TokenStep], list[TokenStep], list[TokenStep]]:
    """``(big, little, mobile)`` token steps of synthetic rankings (prefetch recorded)."""
    big, little, mobile = [], [], []
    for t, (rank, fb) in enumerate(zip(rankings, fallbacks)):
        big_pass = PassStep("big", [LayerStep(l, tuple(map(int, r)), big=True)
                                    for l, r in enumerate(rank)])
        little_pass = PassStep("little", [LayerStep(l, tuple(map(int, r[:little_k])),
                                                    prefetch=tuple(map(int, r[little_k:])))
                                          for l, r in enumerate(rank)])
        big.append(TokenStep(t, [big_pass]))
        little.append(TokenStep(t, [little_pass]))
        mobile.append(TokenStep(t, [little_pass, big_pass] if fb else [little_pass]))
    return big, little, mobile


def reuse_rate(rankings: np.ndarray) -> float:
    """Mean fraction of a token's top-k experts (per layer) that the previous token also used."""
    if len(rankings) < 2:
        return 0.0
    k = rankings.shape[2]
    shared = [len(set(a) & set(b)) / k for t in range(1, len(rankings))
              for a, b in zip(rankings[t], rankings[t - 1])]
    return float(np.mean(shared))


def shape_config(shape: MoeShape, cache_fraction: float = 0.25, **kw) -> OffloadConfig:
    """Offload configuration for a published shape: ``cache_fraction`` of all routed experts
    fit in the device cache (assumed, the same for every method)."""
    if not 0 < cache_fraction <= 1:
        raise ValueError(f"cache_fraction must be in (0, 1], not {cache_fraction!r}")
    slots = max(shape.top_k, int(round(cache_fraction * shape.moe_layers * shape.n_experts)))
    return OffloadConfig(expert_bytes=shape.expert_bytes,
                         dense_bytes_per_layer=shape.dense_bytes_per_layer, slots=slots, **kw)


@dataclass
class ShapeStudy:
    shape: MoeShape
    config: OffloadConfig
    routing: SyntheticRouting
    tokens: int
    reuse_rate: float
    methods: dict[str, dict] = field(default_factory=dict)


def study_shape(shape: MoeShape, *, tokens: int = 64,
                routing: SyntheticRouting = SyntheticRouting(), cache_fraction: float = 0.25, **kw) -> ShapeStudy:
    """Compare the four methods on a SYNTHETIC routing trace of a published shape."""
    little_k = little_k_for(shape.top_k)
    ranks = routing.rankings(shape.moe_layers, shape.n_experts, shape.top_k, tokens)
    big, little, mobile = synthetic_steps(ranks, routing.fallbacks(tokens), little_k)
    traces = method_traces(big, little, mobile, shape.moe_layers, shape.n_experts,
                           source=f"synthetic routing for {shape.name}")
    cfg = shape_config(shape, cache_fraction, **kw)
    return ShapeStudy(shape, cfg, routing, tokens, reuse_rate(ranks), compare_methods(traces, cfg))


def tiny_config(model_config, slots: int, **kw) -> OffloadConfig:
    """Offload configuration for the tiny LM: FP16 SwiGLU experts (3 d_model x d_expert
    matrices); the dense part of a layer is its attention and router weights (embeddings and
    the output head are left out: the same for every method)."""
    d, f = model_config.d_model, model_config.d_expert
    dense = 2 * (4 * d * d + model_config.n_experts * d)
    return OffloadConfig(expert_bytes=3 * d * f * 2, dense_bytes_per_layer=dense, slots=slots, **kw)


# -- the whole study: tiny LM (measured routing) and published shapes (synthetic) ------------

DEFAULT_TAUS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01)
DEFAULT_TAU = 0.5
PAPER_SPEEDUP = (1.60, 1.72)        # MoBiLE abstract: over its offloading baseline


def load_tiny_model(seed: int = 0):
    """``(model, source)``: the trained tiny LM if its weights exist, else random weights
    (clearly labelled)."""
    from golden import model as lm

    try:
        return lm.load_default(), f"trained tiny LM ({lm.DEFAULT_WEIGHTS.name})"
    except FileNotFoundError:
        return (lm.MoeLM.init_random(lm.ModelConfig(), seed),
                f"RANDOM WEIGHTS (init_random seed {seed}): trained tiny LM not available")


ASSUMED_FALLBACK_RATE = 0.2        # used for synthetic traces when the tiny LM is untrained


def synthetic_fallback_rate(tiny: "TinyStudy") -> tuple[float, bool]:
    """``(rate, measured)``: the tiny LM's measured fallback rate at its tau, or the assumed
    :data:`ASSUMED_FALLBACK_RATE` when the tiny LM has random weights."""
    if tiny.source.startswith("RANDOM"):
        return ASSUMED_FALLBACK_RATE, False
    return tiny.evaluation.point(tiny.tau).fallback_rate, True


@dataclass
class TinyStudy:
    """MoBiLE on the tiny LM: accuracy over a tau sweep, times of the four methods."""

    source: str
    tau: float
    config: OffloadConfig
    evaluation: object
    methods: dict[str, dict]
    sweep: list[dict]          # per tau: agreement, nll_delta, fallback_rate, speedups
    traces: dict[str, Trace] = field(repr=False, default_factory=dict)


def study_tiny(model, source: str, *, windows: int = 4, window: int = 128, taus=DEFAULT_TAUS,
               tau: float = 0.5, cache_fraction: float = 0.25, mobile_config=None,
               progress=None, **kw) -> TinyStudy:
    """Measured MoBiLE study on held-out text (``golden.text`` split) of ``model``."""
    from golden.mobile import MobileConfig, evaluate, heldout_windows
    from golden.text import split

    cfg_m = mobile_config or MobileConfig(tau=tau)
    taus = sorted(set(float(t) for t in taus) | {float(tau)})
    mc = model.config
    window = min(window, mc.max_seq)
    wins = heldout_windows(split()[1], window, windows)
    ev = evaluate(model, wins, taus, cfg_m, progress=progress)
    slots = max(mc.top_k, int(round(cache_fraction * mc.n_layers * mc.n_experts)))
    cfg = tiny_config(mc, slots, **kw)
    meta = dict(source=source.replace("\n", " "), top_k=mc.top_k, little_k=ev.little_k,
                cache_slots=cfg.slots, policy=cfg.policy, queue_depth=cfg.queue_depth,
                expert_bytes=cfg.expert_bytes)
    sweep = []
    chosen = None
    for p in ev.sweep:
        traces = method_traces(ev.big_steps, ev.little.steps, p.steps, mc.n_layers,
                               mc.n_experts, tau=p.tau, **meta)
        methods = compare_methods(traces, cfg)
        sweep.append({"tau": p.tau, "top1_agreement": p.top1_agreement,
                      "nll_delta": p.nll_delta, "fallback_rate": p.fallback_rate,
                      "speedup_mobile": methods["mobile"]["speedup_vs_lru"],
                      "speedup_mobile_prefetch": methods["mobile_prefetch"]["speedup_vs_lru"]})
        if p.tau == float(tau):
            chosen = (methods, traces)
    return TinyStudy(source, float(tau), cfg, ev, chosen[0], sweep, chosen[1])


def format_methods(methods: dict[str, dict], unit: str = "ms") -> list[str]:
    scale = {"ms": 1e3, "us": 1e6}[unit]
    lines = [f"  {'method':36s} {'time/token':>12s} {'hit rate':>9s} {'MB moved':>9s} "
             f"{'speedup':>8s}"]
    for name in METHODS:
        d = methods[name]
        lines.append(f"  {METHOD_LABELS[name]:36s} {d['time_per_token_s'] * scale:9.3f} {unit} "
                     f"{d['hit_rate']:9.3f} {d['bytes_transferred'] / 1e6:9.1f} "
                     f"{d['speedup_vs_lru']:7.2f}x")
    return lines


def bench_values(tiny: TinyStudy, shapes: dict[str, ShapeStudy]) -> dict:
    """The bench keys of issue 5 (plus the no-prefetch variants)."""
    m = tiny.methods
    p = tiny.evaluation.point(tiny.tau)
    out = {"mobile_speedup_vs_lru": m["mobile_prefetch"]["speedup_vs_lru"],
           "mobile_noprefetch_speedup_vs_lru": m["mobile"]["speedup_vs_lru"],
           "mobile_top1_agreement": p.top1_agreement,
           "mobile_nll_delta": p.nll_delta,
           "mobile_fallback_rate": p.fallback_rate,
           "mobile_hit_rate": m["mobile_prefetch"]["hit_rate"],
           "lru_hit_rate": m["lru_big"]["hit_rate"],
           "mobile_tau": tiny.tau}
    for key, st in shapes.items():
        out[f"mobile_speedup_{key}"] = st.methods["mobile_prefetch"]["speedup_vs_lru"]
        out[f"mobile_noprefetch_speedup_{key}"] = st.methods["mobile"]["speedup_vs_lru"]
    return {k: float(v) for k, v in out.items()}


def report_lines(tiny: TinyStudy, shapes: dict[str, ShapeStudy], *,
                 fallback_measured: bool = True) -> list[str]:
    """Human-readable comparison (printed by ``speqmoe mobile``, used by the demo)."""
    ev = tiny.evaluation
    c = tiny.config
    mc_note = (f"tau={tiny.tau:g}, little_k={ev.little_k}, top_k={ev.top_k}"
               if hasattr(ev, "little_k") else f"tau={tiny.tau:g}")
    out = [f"MoBiLE on the tiny LM: {tiny.source}",
           f"  measured on held-out text ({ev.positions} predicted bytes), {mc_note}",
           f"  {'tau':>6s} {'top-1 agr':>10s} {'NLL delta':>10s} {'fallback':>9s} "
           f"{'MoBiLE':>8s} {'+prefetch':>10s}"]
    for row in tiny.sweep:
        mark = " <" if row["tau"] == tiny.tau else ""
        out.append(f"  {row['tau']:6.3g} {row['top1_agreement']:10.3f} {row['nll_delta']:+10.4f} "
                   f"{row['fallback_rate']:9.3f} {row['speedup_mobile']:7.2f}x "
                   f"{row['speedup_mobile_prefetch']:9.2f}x{mark}")
    out.append(f"  little only: top-1 agreement {ev.little.top1_agreement:.3f}, "
               f"NLL delta {ev.little.nll_delta:+.4f} nats/byte")
    out.append(f"  offloading (routing measured; link and device assumed): {c.slots} slots of "
               f"{c.expert_bytes} B experts, policy {c.policy}, "
               f"link {c.link_bytes_per_s / 1e9:g} GB/s, "
               f"device {c.device_bytes_per_s / 1e9:g} GB/s, queue {c.queue_depth}")
    out += format_methods(tiny.methods, "us")
    if shapes:
        r = next(iter(shapes.values())).routing
        out.append("")
        out.append(f"Published shapes, SYNTHETIC routing traces (zipf {r.zipf:g}, stickiness "
                   f"{r.stickiness:g}, fallback rate {r.fallback_rate:.3f} "
                   f"{'measured on the tiny LM at tau' if fallback_measured else 'assumed'}, "
                   f"cache {c.policy}):")
        out.append(f"  {'model':20s} {'slots':>6s} {'MB/expert':>10s} {'reuse':>6s} "
                   f"{'LRU ms/tok':>11s} {'little':>7s} {'MoBiLE':>7s} {'+prefetch':>9s}")
        for st in shapes.values():
            m = st.methods
            out.append(f"  {st.shape.name:20s} {st.config.slots:6d} "
                       f"{st.shape.expert_bytes / 1e6:10.1f} {st.reuse_rate:6.2f} "
                       f"{m['lru_big']['time_per_token_s'] * 1e3:11.2f} "
                       f"{m['little']['speedup_vs_lru']:6.2f}x {m['mobile']['speedup_vs_lru']:6.2f}x "
                       f"{m['mobile_prefetch']['speedup_vs_lru']:8.2f}x")
    out.append(f"Paper (MoBiLE abstract): {PAPER_SPEEDUP[0]:.2f}x-{PAPER_SPEEDUP[1]:.2f}x over its "
               f"offloading baseline, negligible accuracy loss.")
    return out


def study_json(tiny: TinyStudy, shapes: dict[str, ShapeStudy]) -> dict:
    """Every figure of a study, with its provenance."""
    ev = tiny.evaluation
    return {
        "tiny": {"source": tiny.source, "tau": tiny.tau, "positions": ev.positions,
                 "routing": "measured (tiny LM on held-out text)",
                 "offload_config": asdict(tiny.config), "methods": tiny.methods,
                 "sweep": tiny.sweep,
                 "little_only": {"top1_agreement": ev.little.top1_agreement,
                                 "nll_delta": ev.little.nll_delta}},
        "shapes": {key: {"name": st.shape.name, "routing": "SYNTHETIC",
                         "synthetic_routing": asdict(st.routing), "tokens": st.tokens,
                         "reuse_rate": st.reuse_rate, "offload_config": asdict(st.config),
                         "shape": asdict(st.shape), "expert_bytes": st.shape.expert_bytes,
                         "methods": st.methods}
                   for key, st in shapes.items()},
        "paper_speedup": list(PAPER_SPEEDUP),
        "assumed": ["link 25 GB/s (PCIe 4.0 x16 effective) unless set",
                    "device 1008 GB/s memory-bound compute unless set",
                    "cache = cache_fraction of all routed experts, same for every method",
                    "published shapes: synthetic routing (SyntheticRouting)"],
    }
