"""SPEQ x MoBiLE: lossless speculative decoding of an offloaded MoE (docs/spec_mobile.md).

The *draft* of a token is the tiny LM with the BSFP-4 draft weights (:mod:`golden.speq`) of its
routers and routed experts, its attention projections and LM head at full FP16 (resident on
the device; ``draft_dense``), **and** MoBiLE's little expert set (:mod:`golden.mobile`: the first
``little_k`` = k/2 experts of the router's ranking, their probabilities renormalised), so a draft
pass reads only the draft planes of ``little_k`` experts per layer: a quarter of their bytes. The
*verify* pass is the full model (both planes, all k experts) over the ``g + 1`` tokens
``S[-1], d_1 .. d_g`` at once; greedy verification then emits exactly the bytes of
:func:`golden.model.generate`, rejection sampling is lossless in distribution (the acceptance
rule is :func:`golden.speq.rejection_verify`).

Choices (each measured by ``speqmoe spec-mobile`` or the bench, see docs/spec_mobile.md):

Router of the draft pass (``draft_router``)
    ``"draft"`` (default): the router matmul of the draft pass uses its BSFP draft, like every
    other matmul; ``"full"``: the full FP16 router weights. Measured on the shipped tiny LM
    (16 held-out prompts x 96 bytes, gamma 3, greedy): acceptance per checked draft token
    0.842 with the draft router, 0.831 with the full one (all k experts: 0.858 and 0.859).
    The draft router is both cheaper (a quarter of the router's bytes) and no worse, so it is
    the default: a draft whose router and experts are both drafts stays self-consistent.
Dense parts of the draft pass (``draft_dense``)
    ``"full"`` (default, :data:`DEFAULT_DRAFT_DENSE`): the attention projections and the LM
    head use their full FP16 weights, only the routed experts (and the router, see
    ``draft_router``) their BSFP drafts; ``"draft"``: every matmul uses its draft, as in
    :mod:`golden.speq` (the previous default). The accelerator runs a matrix in verify mode or
    draft mode per command, so nothing in the hardware changes. In the offloaded setting the
    dense weights are resident in device memory at full precision, so this costs no link
    bytes, only the draft pass's reads of them (4 times their draft plane). Measured on the
    shipped tiny LM (little set, adaptive 0.7, lut scale chosen for each draft): acceptance
    per checked draft token 0.914 against 0.878 with drafts of the dense parts
    (docs/spec_mobile.md, "Choices, as measured").
Draft experts (``draft_experts``)
    ``"little"`` (default): the little set; ``"all"``: all k experts (SPEQ on the offloaded
    model without little experts, the third method of the offload comparison).
Adaptive draft length (``adaptive``)
    With a threshold ``a``, a step stops drafting after a draft token whose draft probability
    (the largest softmax probability of the draft logits) is below ``a``; that token is still
    verified. ``None`` (default) always drafts ``gamma`` tokens.
Draft weights (``draft``)
    A name -> FP16 dict of draft matrices; default :func:`golden.speq.draft_weights` (the
    encoder's luts, the mean |w| of each window). :func:`acceptance_luts` gives the
    activation-weighted luts (same words and windows, only the 8 lut values change).

Every pass is recorded (:class:`golden.mobile.PassStep`: the experts of every layer) so that
:func:`build_trace` can write the request trace (version 2: planes and passes of several
tokens, docs/trace.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from golden.mobile import LayerStep, PassStep, little_k_for
from golden.model import LinearHook, MoeLM, check_prompt, top_k_route
from golden.speq import (VERIFY_MODES, SpeqStats, _probs, _sample, draft_weights,
                         greedy_verify, rejection_verify)
from golden.trace import Trace, TraceBuilder

DRAFT_ROUTERS = ("full", "draft")
DRAFT_DENSE = ("draft", "full")
DEFAULT_DRAFT_DENSE = "full"    # the dense weights are resident: see docs/spec_mobile.md
DEFAULT_ADAPTIVE = 0.7      # measured: see docs/spec_mobile.md
DRAFT_EXPERTS = ("little", "all")


@dataclass
class StepRecord:
    """One speculative step: its draft passes (one token each) and its verify pass, the
    position of its first verified token, and what it emitted."""

    position: int
    drafts: list[PassStep]
    verify: list[PassStep]          # one PassStep per verified token (same pass)
    accepted: int
    emitted: int
    predicted: list[list[tuple[int, ...]]] = field(default_factory=list)
    """Per draft pass, per layer: the draft router's top-k (all k, not only the little set),
    the draft's prediction of the verify's route of the same input token."""


@dataclass
class SpecMobileResult:
    prompt: bytes
    tokens: np.ndarray              # the generated tokens (int64), prompt excluded
    stats: SpeqStats
    steps: list[StepRecord] = field(default_factory=list, repr=False)
    little_k: int = 0
    top_k: int = 0
    draft_router: str = "draft"
    draft_dense: str = DEFAULT_DRAFT_DENSE

    @property
    def bytes(self) -> bytes:
        return bytes(np.asarray(self.tokens, dtype=np.uint8).tolist())

    @property
    def text(self) -> str:
        return self.bytes.decode("utf-8", errors="replace")

    adaptive_stops: int = 0         # steps whose drafting the adaptive threshold cut short


class _Recorder:
    """Route hook that records the experts of every layer of a pass."""

    def __init__(self, k: int, renormalize: bool, predict_k: int = 0):
        self.k = k
        self.renormalize = renormalize
        self.predict_k = predict_k
        self.layers: list[LayerStep] = []
        self.predicted: list[tuple[int, ...]] = []

    def __call__(self, layer, position, probs):
        experts, gates = top_k_route(probs, self.k, self.renormalize)
        self.layers.append(LayerStep(int(layer), tuple(int(e) for e in experts),
                                     big=self.k > 0))
        if self.predict_k:
            ranked, _ = top_k_route(probs, self.predict_k, False)
            self.predicted.append(tuple(int(e) for e in ranked))
        return experts, gates

    def take(self, kind: str) -> PassStep:
        p = PassStep(kind, self.layers)
        self.layers = []
        return p

    def take_predicted(self) -> list[tuple[int, ...]]:
        p, self.predicted = self.predicted, []
        return p


def check_choice(name: str, value, allowed) -> None:
    """Raise the ValueError of an option ``name`` whose ``value`` is not in ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


def is_router(name: str) -> bool:
    """A router matrix (``layers.<l>.router``)."""
    return name.endswith(".router")


def is_dense(name: str) -> bool:
    """A dense part that ``draft_dense="full"`` runs at full precision in the draft pass: an
    attention projection or the LM head (not a router, not a routed expert)."""
    return ".attn." in name or name == "head"


def full_in_draft(name: str, router: str = "draft", dense: str = "draft") -> bool:
    """Whether the draft pass runs matrix ``name`` on its full FP16 weights."""
    return (router == "full" and is_router(name)) or (dense == "full" and is_dense(name))


def draft_hook(model: MoeLM, linear: LinearHook | None = None, *, router: str = "draft",
               weights: dict[str, np.ndarray] | None = None,
               dense: str = "draft") -> LinearHook:
    """The draft pass's linear hook: ``linear`` (default float32 BLAS) on the draft weights
    (``weights``, default :func:`golden.speq.draft_weights`); the router matmuls use the full
    weights when ``router == "full"``, the attention projections and the LM head when
    ``dense == "full"`` (:func:`full_in_draft`)."""
    check_choice("draft_router", router, DRAFT_ROUTERS)
    check_choice("draft_dense", dense, DRAFT_DENSE)
    w16 = weights if weights is not None else draft_weights(model)
    missing = [n for n in model.linear_names() if n not in w16]
    if missing:
        raise ValueError(f"draft weights lack {len(missing)} matrices, e.g. {missing[0]}")
    full = {n for n in model.linear_names() if full_in_draft(n, router, dense)}
    if linear is None:
        w32 = {n: (model._w32[n] if n in full else np.asarray(w16[n], np.float32))
               for n in model.linear_names()}

        def hook(name, w, x):
            return w32[name] @ x
    else:
        def hook(name, w, x):
            if name in full:
                return linear(name, w, x)
            return linear(name, w16[name], x)
    return hook


def _check(gamma, verify, temperature, adaptive, draft_router, draft_experts, draft_dense):
    if isinstance(gamma, bool) or not isinstance(gamma, (int, np.integer)) or gamma < 1:
        raise ValueError(f"gamma must be an integer >= 1, not {gamma!r}")
    check_choice("verify", verify, VERIFY_MODES)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, not {temperature!r}")
    if adaptive is not None and not 0.0 <= adaptive <= 1.0:
        raise ValueError(f"adaptive must be a probability in [0, 1] or None, not {adaptive!r}")
    check_choice("draft_router", draft_router, DRAFT_ROUTERS)
    check_choice("draft_experts", draft_experts, DRAFT_EXPERTS)
    check_choice("draft_dense", draft_dense, DRAFT_DENSE)


def generate(model: MoeLM, prompt: bytes, max_new_tokens: int, gamma: int = 3,
             verify: str = "greedy", seed: int | None = None,
             linear: LinearHook | None = None, *, temperature: float = 1.0,
             little_k: int | None = None, draft_router: str = "draft",
             draft_experts: str = "little", adaptive: float | None = None,
             draft: dict[str, np.ndarray] | None = None,
             draft_dense: str = DEFAULT_DRAFT_DENSE) -> SpecMobileResult:
    """Speculative decoding with a little-expert BSFP draft and a full verify (module docstring).

    Parameters
    ----------
    gamma : int
        Most draft tokens per step (>= 1).
    verify : {"greedy", "sample"}
        Greedy (output identical to :func:`golden.model.generate`) or rejection sampling
        (distributed as sampling the full model at ``temperature``).
    seed : int, optional
        Seed of the sampling random generator (``verify="sample"``).
    linear : callable, optional
        Linear hook of the full model; the draft applies it to its draft weights.
    little_k : int, optional
        Draft expert count (default k/2, :func:`golden.mobile.little_k_for`).
    draft_router, draft_experts, adaptive, draft, draft_dense
        See the module docstring.
    """
    _check(gamma, verify, temperature, adaptive, draft_router, draft_experts, draft_dense)
    cfg = model.config
    k = int(cfg.top_k)
    kl = k if draft_experts == "all" else little_k_for(k, little_k)
    prompt = check_prompt(model, prompt, max_new_tokens)
    rng = np.random.default_rng(seed)
    dlin = draft_hook(model, linear, router=draft_router, weights=draft, dense=draft_dense)
    stats = SpeqStats(gamma=int(gamma), verify=verify)
    result = SpecMobileResult(prompt, np.zeros(0, np.int64), stats, [], kl, k,
                              draft_router=draft_router, draft_dense=draft_dense)
    if max_new_tokens == 0:
        return result
    little = _Recorder(kl, True if kl < k else bool(cfg.renormalize_gates), predict_k=k)
    big = _Recorder(k, bool(cfg.renormalize_gates))
    cache = model.new_cache()
    if len(prompt) > 1:
        model.forward(prompt[:-1], cache, linear=linear)
    stats.prefill_tokens = len(prompt) - 1
    out: list[int] = []
    last = prompt[-1]
    while len(out) < max_new_tokens:
        base = cache.length
        g = min(int(gamma), max_new_tokens - len(out) - 1)
        drafts, q_rows, dpasses, predicted = [], [], [], []
        tok = last
        for _ in range(g):
            logits = model.forward([tok], cache, linear=dlin, route=little)[0]
            dpasses.append(little.take("draft"))
            predicted.append(little.take_predicted())
            stats.draft_passes += 1
            q = _probs(logits, temperature)
            if verify == "greedy":
                tok = int(np.argmax(logits))
            else:
                q_rows.append(q)
                tok = _sample(q, rng)
            drafts.append(tok)
            if adaptive is not None and float(q.max()) < adaptive and len(drafts) < g:
                result.adaptive_stops += 1
                break
        g = len(drafts)
        cache.truncate(base)
        vpasses = []
        rows = []
        for t in [last] + drafts:
            rows.append(model.forward([t], cache, linear=linear, route=big)[0])
            vpasses.append(big.take("verify"))
        target = np.array(rows)
        stats.verify_passes += 1
        stats.verify_tokens += g + 1
        if verify == "greedy":
            n_acc, nxt = greedy_verify(drafts, target)
        else:
            n_acc, nxt = rejection_verify(drafts, np.array(q_rows).reshape(g, cfg.vocab),
                                          _probs(target, temperature), rng)
        cache.truncate(base + 1 + n_acc)
        stats.drafted += g
        stats.accepted += n_acc
        stats.rejected += int(n_acc < g)
        stats.accepted_per_step.append(n_acc)
        result.steps.append(StepRecord(len(out), dpasses, vpasses, n_acc, n_acc + 1,
                                       predicted))
        out.extend(drafts[:n_acc])
        out.append(nxt)
        last = nxt
    stats.generated = len(out)
    result.tokens = np.array(out, dtype=np.int64)
    return result


def weight_traffic(result: SpecMobileResult, config) -> dict:
    """Weight bytes a run reads on chip (device memory and expert slots; not link bytes), from
    :func:`golden.pe_array.weight_bytes`: a draft pass reads the draft plane of every matrix
    it runs in draft mode (the little set's experts, and the dense parts unless
    ``draft_dense="full"`` / ``draft_router="full"`` run them in verify mode: both planes, 4
    times the bytes); a verify pass of ``t`` tokens reads both planes of every dense matrix
    and of every expert of its union, ``ceil(t / 4)`` times (4 PE lanes). Returns
    ``draft_bytes``, ``verify_bytes`` and the generated ``tokens``."""
    from golden.model import param_shapes
    from golden.pe_array import weight_bytes

    shapes = param_shapes(config)
    layer0 = [n for n in shapes if n.startswith("layers.0.") and len(shapes[n]) == 2]
    dense = [n for n in layer0 if ".experts." not in n]
    expert = [n for n in layer0 if ".experts.0." in n]
    n_layers = int(config.n_layers)

    def mode(name: str) -> str:
        return ("verify" if full_in_draft(name, result.draft_router, result.draft_dense)
                else "draft")

    def dense_bytes(mode_of) -> int:
        return (n_layers * sum(weight_bytes(mode_of(n), *shapes[n]) for n in dense)
                + weight_bytes(mode_of("head"), *shapes["head"]))

    draft_dense = dense_bytes(mode)
    verify_dense = dense_bytes(lambda name: "verify")
    draft_expert = sum(weight_bytes("draft", *shapes[n]) for n in expert)
    verify_expert = sum(weight_bytes("verify", *shapes[n]) for n in expert)
    dbytes = vbytes = 0
    for s in result.steps:
        for p in s.drafts:
            dbytes += draft_dense + draft_expert * sum(len(ls.experts) for ls in p.layers)
        union = sum(len({e for p in s.verify for e in p.layers[layer].experts})
                    for layer in range(n_layers))
        vbytes += -(-len(s.verify) // 4) * (verify_dense + verify_expert * union)
    return {"draft_bytes": int(dbytes), "verify_bytes": int(vbytes),
            "tokens": int(result.stats.generated)}


def build_trace(result: SpecMobileResult, n_layers: int, n_experts: int, *,
                builder: TraceBuilder | None = None, overlap: bool | str = False,
                **meta) -> Trace:
    """The version-2 request trace of a run (docs/trace.md).

    Per step (``step`` = the number of tokens generated before it): every draft pass, layer by
    layer, ``L <layer> draft 1``, a ``D ... draft`` for each little expert (its draft plane),
    ``X``, the releases; then the verify pass, layer by layer, ``L <layer> full g+1`` and the
    union of the experts its ``g + 1`` tokens route to (first use order), each ``D ... full``
    (both planes: they cross the link once for all the tokens), in groups of at most k experts
    (demand, compute, release), so a verify pass never pins more than k experts at once.

    ``overlap=True`` adds what the draft tells in advance (docs/spec_mobile.md, "Overlap"):
    a draft pass's layer also prefetches (``P ... full``) the draft router's top-k experts of
    that layer (:attr:`StepRecord.predicted`), the draft's guess of the verify's route of the
    same input token, so their residual planes cross the link while the drafts compute; the
    verify of a layer takes the predicted experts first and prefetches, when its router has
    run, every expert of its union after the first group, so the fills of later groups run
    while earlier groups compute.

    ``overlap="jit"`` prefetches just in time instead: the last draft pass's last layer
    prefetches the verify's layer-0 experts that the drafts predicted (the draft router's
    top-k of any draft pass), and verify layer ``l``, once its router has run, prefetches the
    predicted experts of layer ``l + 1``; the verify takes predicted experts first.
    """
    if overlap not in (False, True, "jit"):
        raise ValueError(f"overlap must be False, True or 'jit', not {overlap!r}")
    b = builder or TraceBuilder(n_layers, n_experts, **meta)
    k = result.top_k
    jit = overlap == "jit"
    for s in result.steps:
        step = s.position
        asked = [set() for _ in range(n_layers)]
        pred: list[list[int]] = [[] for _ in range(n_layers)]
        if jit:
            for per_layer in s.predicted:
                for layer in range(n_layers):
                    for e in per_layer[layer]:
                        if e not in pred[layer]:
                            pred[layer].append(e)
                            asked[layer].add(e)
        for j, p in enumerate(s.drafts):
            for ls in p.layers:
                b.layer(step, ls.layer, "draft", 1)
                ids = [b.demand(step, ls.layer, e, plane="draft") for e in ls.experts]
                if jit and j == len(s.drafts) - 1 and ls.layer == n_layers - 1:
                    for e in pred[0]:
                        b.prefetch(step, 0, e, plane="full")
                elif overlap and not jit:
                    for e in s.predicted[j][ls.layer]:
                        if e not in asked[ls.layer]:
                            asked[ls.layer].add(e)
                            b.prefetch(step, ls.layer, e, plane="full")
                b.compute(step, ls.layer, len(ids))
                for rid in ids:
                    b.release(step, rid)
        for layer in range(n_layers):
            union: list[int] = []
            for p in s.verify:
                for e in p.layers[layer].experts:
                    if e not in union:
                        union.append(e)
            if overlap:
                union.sort(key=lambda e: e not in asked[layer])     # stable: predicted first
            b.layer(step, layer, "full", len(s.verify))
            if jit and layer + 1 < n_layers:
                for e in pred[layer + 1]:
                    b.prefetch(step, layer + 1, e, plane="full")
            elif overlap and not jit:
                for e in union[k:]:
                    b.prefetch(step, layer, e, plane="full")
            for i in range(0, len(union), k):
                ids = [b.demand(step, layer, e, plane="full") for e in union[i:i + k]]
                b.compute(step, layer, len(ids))
                for rid in ids:
                    b.release(step, rid)
    return b.trace


def activation_moments(model: MoeLM, text: bytes | None = None, *, window: int = 128,
                       windows: int = 8) -> dict[str, np.ndarray]:
    """Mean square of every matmul's input, per input column (float64), over ``windows``
    windows of ``text`` (default: the training split of :mod:`golden.text`, never the
    held-out text the acceptance is measured on), run through the full model. An expert's
    moments count only the tokens routed to it."""
    from golden.mobile import heldout_windows
    from golden.text import split

    data = split()[0] if text is None else text
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}

    def hook(name, w, x):
        x64 = np.asarray(x, np.float64)
        sums[name] = sums.get(name, 0.0) + x64 * x64
        counts[name] = counts.get(name, 0) + 1
        return model._w32[name] @ x

    for win in heldout_windows(data, min(window, model.config.max_seq), windows):
        model.forward(win, model.new_cache(), linear=hook)
    return {n: sums[n] / counts[n] for n in sums}


def acceptance_luts(model: MoeLM, moments: dict[str, np.ndarray] | None = None
                    ) -> dict[str, np.ndarray]:
    """Draft weights with each window's lut chosen for the draft's *outputs* rather than its
    weights: the words and windows of :func:`golden.bsfp.encode` are kept (so the planes, the
    format and the hardware are unchanged) and ``lut[d]`` becomes the activation-weighted mean
    ``sum(c_k |w_nk|) / sum(c_k)`` over the weights of window ``d``, ``c_k`` the mean square of
    input column ``k`` (:func:`activation_moments`): the least-squares optimum of the output
    error ``sum_n E[((w_n - draft_n) . x)^2]`` when input columns are uncorrelated. A window
    whose weights see no activation keeps the encoder's lut. Returns name -> FP16 draft."""
    from golden.bsfp import BsfpTensor, encode

    moments = moments if moments is not None else activation_moments(model)
    out = {}
    for name in model.linear_names():
        w = model.params[name]
        t = encode(w)
        c = moments.get(name)
        if c is None:
            out[name] = t.decode_draft()
            continue
        d = ((t.words >> 12) & 0x7).astype(np.int64)
        weight = np.broadcast_to(c[None, :], w.shape)
        num = np.bincount(d.ravel(), (weight * np.abs(w.astype(np.float64))).ravel(), 8)
        den = np.bincount(d.ravel(), weight.ravel(), 8)
        lut = t.lut.astype(np.float64)
        lut = np.where(den > 0, num / np.where(den > 0, den, 1.0), lut).astype(np.float16)
        out[name] = BsfpTensor(t.words, t.base, t.size, lut).decode_draft()
    return out


def scaled_luts(model: MoeLM, scale: float) -> dict[str, np.ndarray]:
    """Draft weights whose lut values are the encoder's times ``scale`` (rounded to FP16);
    words, windows and planes are unchanged."""
    from golden.bsfp import BsfpTensor, encode

    if not 0 < scale < 4:
        raise ValueError(f"scale must be in (0, 4), not {scale!r}")
    out = {}
    for name in model.linear_names():
        t = encode(model.params[name])
        lut = (t.lut.astype(np.float64) * scale).astype(np.float16)
        out[name] = BsfpTensor(t.words, t.base, t.size, lut).decode_draft()
    return out


LUT_SCALES = (1.0, 1.02, 1.04, 1.06, 1.08)


def calibration_prompts(n_prompts: int = 8, prompt_len: int = 64) -> list[bytes]:
    """Prompts from the *training* split (:mod:`golden.text`), for choices that must not see
    the held-out text."""
    from golden.text import split

    train = split()[0]
    step = (len(train) - prompt_len) // n_prompts
    return [train[i * step:i * step + prompt_len] for i in range(n_prompts)]


def choose_lut_scale(model: MoeLM, scales=LUT_SCALES, *, n_prompts: int = 8,
                     new_tokens: int = 64, gamma: int = 3, prompt_len: int = 64,
                     **kw) -> tuple[float, dict]:
    """The lut scale with the best acceptance per checked draft token on calibration prompts
    (training text; ties to the smaller change), and the acceptance of every scale. Prompt and
    generated lengths shrink to fit a model with a shorter context (half of it each)."""
    if prompt_len + new_tokens > model.config.max_seq:
        prompt_len = new_tokens = model.config.max_seq // 2
    prompts = calibration_prompts(n_prompts, prompt_len)
    found = {}
    for s in scales:
        draft = scaled_luts(model, float(s))
        total = None
        for p in prompts:
            r = generate(model, p, new_tokens, gamma=gamma, draft=draft, **kw)
            total = r.stats if total is None else total.merge(r.stats)
        found[float(s)] = total.token_acceptance
    best = max(found, key=lambda s: (found[s], -abs(s - 1.0)))
    return best, found


def measure_draft(model: MoeLM, *, n_prompts: int = 16, prompt_len: int = 64,
                  new_tokens: int = 96, gamma: int = 3, **kw) -> dict:
    """Greedy statistics of a draft on held-out prompts (:func:`golden.speq.heldout_prompts`),
    the protocol of docs/spec_mobile.md ("Choices, as measured"); ``kw`` go to
    :func:`generate`. Returns acceptance per checked draft token, tokens per draft pass and per
    verify pass, and weight reads per token (:func:`weight_traffic`): ``draft_kb_per_token``
    (draft passes), ``weight_kb_per_token`` (draft and verify passes) and their inverses
    ``tokens_per_mb_draft`` and ``tokens_per_mb``."""
    from golden.speq import heldout_prompts

    total = None
    dbytes = vbytes = 0
    for prompt in heldout_prompts(n_prompts, prompt_len):
        r = generate(model, prompt, new_tokens, gamma=gamma, **kw)
        total = r.stats if total is None else total.merge(r.stats)
        t = weight_traffic(r, model.config)
        dbytes += t["draft_bytes"]
        vbytes += t["verify_bytes"]
    n = total.generated
    return {"acceptance": total.token_acceptance,
            "tokens_per_draft_pass": n / max(total.draft_passes, 1),
            "tokens_per_verify_pass": total.tokens_per_step,
            "draft_kb_per_token": dbytes / n / 1e3,
            "weight_kb_per_token": (dbytes + vbytes) / n / 1e3,
            "tokens_per_mb_draft": n / dbytes * 1e6 if dbytes else float("nan"),
            "tokens_per_mb": n / (dbytes + vbytes) * 1e6, "stats": total.as_dict()}
