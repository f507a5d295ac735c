"""MoBiLE: big/little experts with confidence fallback and prefetch.

See docs/architecture.md, "System models".

Our reconstruction from the MoBiLE abstract (arXiv:2510.12357); every choice is stated here.

Routing
    The *big* set of a token at a layer is the router's top-k (ranking by probability, ties to
    the lower expert index, exactly :func:`golden.model.top_k_route`) with the model's own gate
    convention. The *little* set is the first ``little_k`` of the same ranking; ``little_k``
    defaults to k/2 and **an odd k is refused** (``ValueError``) unless ``little_k`` is given
    explicitly. Little gates: with ``renormalize_little`` (default) the little probabilities
    renormalised to sum 1; without it, the big-pass gate values of those experts (the big
    pass's contribution with the other experts dropped).
Importance and fallback
    Every token first runs the *little pass* (little set at every layer). Its next-token
    confidence is the largest softmax probability of its logits. Below ``tau`` the token is
    important: it *falls back*, i.e. the KV cache is truncated to before the token and the
    token is re-run with the big set (its KV entries are overwritten); the big pass's logits
    are the output. ``tau = 0`` is "little only"; ``tau > 1`` always falls back.
Gate-mass importance (option ``gate_mass = rho``)
    During the little pass, a layer whose little set carries less than ``rho`` of the big set's
    probability mass runs that layer with the big set for this token (no re-run needed).
Prefetch (option ``prefetch``, default on)
    While the little pass runs layer l, the experts ranked ``little_k+1 .. k`` at layer l are
    prefetched, so that a fallback finds them resident.
Next-layer gating (option ``next_layer``)
    While layer l runs, layer l+1's router is applied to layer l's normalised MoE input (the
    router input captured through the model's linear hook); the predicted top-k of layer l+1
    (little pass: its top ``little_k``) are prefetched. A predictor only: it never changes the
    output.
Traces
    :func:`build_trace` turns the recorded passes into a :mod:`golden.trace` request trace:
    per token (``step``), per pass, per layer: ``D`` for every expert the layer computes (in
    ranking order), ``P`` for its prefetches, ``X`` (compute marker), then ``R`` for each
    demand. So a trace never holds more than k pins at once.
Accuracy proxies (teacher forcing on held-out text)
    top-1 agreement of the output logits with the big model's (same text, all tokens big),
    NLL difference (mean nats per predicted byte, MoBiLE minus big) and the fallback rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from golden.model import top_k_route
from golden.trace import Trace, TraceBuilder


def little_k_for(top_k: int, little_k: int | None = None) -> int:
    """The little set size: ``little_k`` if given, else ``top_k // 2`` for an even ``top_k``.

    Raises ``ValueError`` for an odd ``top_k`` without an explicit ``little_k`` (k/2 is not an
    integer and rounding either way changes the method), and for ``little_k`` outside 1..k-1.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 2:
        raise ValueError(f"MoBiLE needs top_k >= 2 (a little set smaller than the big one), "
                         f"not {top_k!r}")
    if little_k is None:
        if top_k % 2:
            raise ValueError(f"top_k={top_k} is odd: the little set k/2 is not an integer; "
                             f"pass little_k explicitly ({top_k // 2} or {top_k // 2 + 1})")
        return int(top_k) // 2
    if isinstance(little_k, bool) or not isinstance(little_k, (int, np.integer)) \
            or not 1 <= little_k < top_k:
        raise ValueError(f"little_k must be an integer in 1..{top_k - 1}, not {little_k!r}")
    return int(little_k)


@dataclass(frozen=True)
class MobileConfig:
    """MoBiLE settings (see the module docstring)."""

    tau: float = 0.5
    little_k: int | None = None
    renormalize_little: bool = True
    gate_mass: float | None = None
    prefetch: bool = True
    next_layer: bool = False

    def __post_init__(self):
        if not np.isfinite(self.tau) or self.tau < 0:
            raise ValueError(f"tau must be a finite number >= 0, not {self.tau!r}")
        if self.gate_mass is not None and not 0.0 <= self.gate_mass <= 1.0:
            raise ValueError(f"gate_mass must be in [0, 1] or None, not {self.gate_mass!r}")


@dataclass
class LayerStep:
    """One layer of one pass: the experts computed, prefetched for this layer, and prefetched
    for the next layer (next-layer gating)."""

    layer: int
    experts: tuple[int, ...]
    prefetch: tuple[int, ...] = ()
    next_prefetch: tuple[int, ...] = ()
    big: bool = False


@dataclass
class PassStep:
    kind: str                  # "little" or "big"
    layers: list[LayerStep] = field(default_factory=list)


@dataclass
class TokenStep:
    position: int
    passes: list[PassStep]
    confidence: float = float("nan")

    @property
    def fallback(self) -> bool:
        return len(self.passes) > 1


@dataclass
class MobileRun:
    """Teacher-forced run over one window of tokens."""

    tokens: np.ndarray
    logits: np.ndarray                 # (T, vocab) output logits
    steps: list[TokenStep]
    mode: str

    @property
    def fallback_rate(self) -> float:
        return float(np.mean([s.fallback for s in self.steps])) if self.steps else 0.0


def _softmax64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class MobileDecoder:
    """Runs a :class:`golden.model.MoeLM` (or anything with its ``config``, ``new_cache`` and
    ``forward(tokens, cache, linear=, route=)``) the MoBiLE way, recording the experts used."""

    def __init__(self, model, config: MobileConfig = MobileConfig(), *, linear=None):
        self.model = model
        self.config = config
        self.linear = linear
        cfg = model.config
        self.top_k = int(cfg.top_k)
        self.little_k = little_k_for(self.top_k, config.little_k)
        self.n_layers = int(cfg.n_layers)
        self.n_experts = int(cfg.n_experts)
        self.renormalize = bool(cfg.renormalize_gates)
        self._w32 = getattr(model, "_w32", None)
        self._router_in: dict[int, np.ndarray] = {}
        self._layers: list[LayerStep] = []

    # -- hooks ----------------------------------------------------------------
    def _linear(self, name, w, x):
        if self.linear is not None:
            y = np.asarray(self.linear(name, w, x), dtype=np.float32)
        else:
            y = (self._w32[name] if self._w32 is not None else w.astype(np.float32)) @ x
        if name.endswith(".router"):
            self._router_in[int(name.split(".")[1])] = x
        return y

    def _next_layer_prediction(self, layer: int, count: int) -> tuple[int, ...]:
        if layer + 1 >= self.n_layers or layer not in self._router_in:
            return ()
        name = f"layers.{layer + 1}.router"
        w = self._w32[name] if self._w32 is not None else self.model.params[name].astype(np.float32)
        probs = _softmax64(w @ self._router_in[layer])
        return tuple(int(e) for e in np.argsort(-probs, kind="stable")[:count])

    def _route(self, kind: str):
        k, kl = self.top_k, self.little_k
        cfg = self.config

        def route(layer, position, probs):
            experts, gates = top_k_route(probs, k, self.renormalize)
            step = LayerStep(layer=int(layer), experts=tuple(int(e) for e in experts), big=True)
            if kind == "little":
                use_big = False
                if cfg.gate_mass is not None:
                    little_mass = float(np.sum(probs[experts[:kl]], dtype=np.float64))
                    big_mass = float(np.sum(probs[experts], dtype=np.float64))
                    use_big = little_mass < cfg.gate_mass * big_mass
                if not use_big:
                    step = LayerStep(layer=int(layer), experts=step.experts[:kl],
                                     prefetch=step.experts[kl:] if cfg.prefetch else ())
                    if cfg.renormalize_little:
                        g = probs[experts[:kl]].astype(np.float32)
                        gates = g / np.sum(g)
                    else:
                        gates = gates[:kl]
                    experts = experts[:kl]
            if cfg.next_layer:
                count = k if kind == "big" else kl
                step.next_prefetch = self._next_layer_prediction(int(layer), count)
            self._layers.append(step)
            return experts, gates

        return route

    def _pass(self, kind: str, token: int, cache) -> tuple[np.ndarray, PassStep]:
        self._layers = []
        self._router_in = {}
        linear = self._linear if self.config.next_layer or self.linear is not None else None
        logits = self.model.forward([int(token)], cache, linear=linear, route=self._route(kind))[0]
        return logits, PassStep(kind, self._layers)

    # -- runs -------------------------------------------------------------------
    def run(self, tokens, mode: str = "mobile") -> MobileRun:
        """Teacher-forced run over ``tokens`` from an empty cache.

        ``mode``: ``"mobile"`` (little pass, fallback below ``tau``), ``"big"`` (every token big,
        the reference) or ``"little"`` (every token little, never falls back).
        """
        if mode not in ("mobile", "big", "little"):
            raise ValueError(f"mode must be 'mobile', 'big' or 'little', not {mode!r}")
        toks = np.asarray(tokens, dtype=np.int64)
        cache = self.model.new_cache()
        logits = np.empty((len(toks), self.model.config.vocab), dtype=np.float32)
        steps = []
        for i, t in enumerate(toks):
            logits[i], step = self.step(int(t), cache, mode)
            steps.append(step)
        return MobileRun(toks, logits, steps, mode)

    def step(self, token: int, cache, mode: str = "mobile") -> tuple[np.ndarray, TokenStep]:
        """One token at the end of ``cache``: its output logits and what it did."""
        pos = cache.length
        if mode == "big":
            out, p = self._pass("big", token, cache)
            return out, TokenStep(pos, [p])
        out, p = self._pass("little", token, cache)
        conf = confidence(out)
        passes = [p]
        if mode == "mobile" and conf < self.config.tau:
            cache.truncate(pos)
            out, p_big = self._pass("big", token, cache)
            passes.append(p_big)
        return out, TokenStep(pos, passes, conf)


def confidence(logits: np.ndarray) -> float:
    """The next-token confidence of MoBiLE: the largest softmax probability of ``logits``."""
    return float(_softmax64(logits).max())


@dataclass
class MobileGeneration:
    """Greedy MoBiLE decoding: the generated bytes and every token step (prompt included)."""

    prompt: bytes
    bytes: bytes
    steps: list[TokenStep]

    @property
    def fallback_rate(self) -> float:
        return float(np.mean([s.fallback for s in self.steps])) if self.steps else 0.0


def generate(model, prompt: bytes, max_new_tokens: int, config: MobileConfig = MobileConfig(),
             *, linear=None) -> MobileGeneration:
    """Greedy decoding the MoBiLE way: every token, prompt bytes included, runs one
    :meth:`MobileDecoder.step` (little pass, big fallback below ``tau``); each new byte is the
    argmax of the last step's logits (ties to the lower byte). ``linear`` is the model's linear
    hook (e.g. :func:`golden.speq.hw_arith_linear`)."""
    from golden.model import check_prompt

    prompt = check_prompt(model, prompt, max_new_tokens)
    dec = MobileDecoder(model, config, linear=linear)
    steps: list[TokenStep] = []
    out = bytearray()
    if max_new_tokens == 0:
        return MobileGeneration(prompt, b"", steps)
    cache = model.new_cache()
    token = prompt[0]
    for t in list(prompt[1:]) + [None] * max_new_tokens:
        logits, step = dec.step(int(token), cache)
        steps.append(step)
        if t is None:
            out.append(int(np.argmax(logits)))
            if len(out) == max_new_tokens:
                break
            t = out[-1]
        token = t
    return MobileGeneration(prompt, bytes(out), steps)


def nll(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Negative log-likelihood (nats) of ``tokens[i+1]`` under ``logits[i]``."""
    lg = np.asarray(logits[:-1], dtype=np.float64)
    m = lg.max(axis=1, keepdims=True)
    logz = np.log(np.exp(lg - m).sum(axis=1)) + m[:, 0]
    return logz - lg[np.arange(len(lg)), np.asarray(tokens[1:])]


def compare(run: MobileRun, reference: MobileRun) -> dict:
    """Accuracy proxies of ``run`` against the big ``reference`` on the same tokens."""
    if not np.array_equal(run.tokens, reference.tokens):
        raise ValueError("runs are on different tokens")
    n = len(run.tokens) - 1
    agree = np.argmax(run.logits[:n], axis=1) == np.argmax(reference.logits[:n], axis=1)
    return {"top1_agreement": float(np.mean(agree)),
            "nll_delta": float(np.mean(nll(run.logits, run.tokens))
                               - np.mean(nll(reference.logits, reference.tokens))),
            "fallback_rate": run.fallback_rate,
            "positions": n}


def build_trace(steps: list[TokenStep], n_layers: int, n_experts: int, *,
                prefetch: bool = True, next_layer: bool = True, first_step: int = 0,
                builder: TraceBuilder | None = None, **meta) -> Trace:
    """The request trace of recorded token steps (see the module docstring).

    ``prefetch`` / ``next_layer`` keep or drop the recorded prefetches of each kind, so one
    run yields the traces with and without prefetch. Consecutive ``steps`` lists can be
    appended to one ``builder`` (``first_step`` numbers the tokens).
    """
    b = builder or TraceBuilder(n_layers, n_experts, **meta)
    for i, s in enumerate(steps):
        step = first_step + i
        for p in s.passes:
            for ls in p.layers:
                ids = [b.demand(step, ls.layer, e) for e in ls.experts]
                if prefetch:
                    for e in ls.prefetch:
                        b.prefetch(step, ls.layer, e)
                if next_layer and ls.layer + 1 < n_layers:
                    for e in ls.next_prefetch:
                        b.prefetch(step, ls.layer + 1, e)
                b.compute(step, ls.layer, len(ls.experts))
                for rid in ids:
                    b.release(step, rid)
    return b.trace


def heldout_windows(data: bytes, window: int, count: int) -> list[np.ndarray]:
    """``count`` windows of ``window`` bytes spread evenly over ``data`` (deterministic)."""
    if window < 2 or count < 1:
        raise ValueError(f"need window >= 2 and count >= 1, not {window}, {count}")
    toks = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    if len(toks) < window:
        raise ValueError(f"held-out text of {len(toks)} bytes is shorter than one window "
                         f"({window})")
    starts = np.linspace(0, len(toks) - window, count).astype(int)
    return [toks[s:s + window] for s in starts]


@dataclass
class SweepPoint:
    tau: float
    top1_agreement: float
    nll_delta: float
    fallback_rate: float
    steps: list[TokenStep] = field(repr=False, default_factory=list)


@dataclass
class Evaluation:
    """Reference (big), little-only and a tau sweep over the same windows."""

    config: MobileConfig
    big_steps: list[TokenStep]
    little: SweepPoint
    sweep: list[SweepPoint]
    positions: int
    top_k: int = 0
    little_k: int = 0

    def point(self, tau: float) -> SweepPoint:
        for p in self.sweep:
            if p.tau == tau:
                return p
        raise KeyError(tau)


def evaluate(model, windows: list[np.ndarray], taus, config: MobileConfig = MobileConfig(),
             progress=None) -> Evaluation:
    """Accuracy proxies over a sweep of ``tau`` (each tau a full teacher-forced run)."""
    say = progress or (lambda message: None)
    dec = MobileDecoder(model, config)
    refs = []
    big_steps, little_steps = [], []
    little_stats = []
    for w in windows:
        ref = dec.run(w, "big")
        refs.append(ref)
        big_steps += ref.steps
        lit = dec.run(w, "little")
        little_steps += lit.steps
        little_stats.append(compare(lit, ref))
    say(f"big and little references over {len(windows)} windows done")

    def pool(stats):
        n = sum(s["positions"] for s in stats)
        return {key: sum(s[key] * s["positions"] for s in stats) / n
                for key in ("top1_agreement", "nll_delta")}, n

    lp, n = pool(little_stats)
    little = SweepPoint(0.0, lp["top1_agreement"], lp["nll_delta"], 0.0, little_steps)
    sweep = []
    for tau in taus:
        d = MobileDecoder(model, replace(config, tau=float(tau)))
        stats, steps = [], []
        for w, ref in zip(windows, refs):
            r = d.run(w, "mobile")
            steps += r.steps
            stats.append(compare(r, ref))
        p, _ = pool(stats)
        fb = float(np.mean([s.fallback for s in steps]))
        sweep.append(SweepPoint(float(tau), p["top1_agreement"], p["nll_delta"], fb, steps))
        say(f"tau={tau:g}: agreement {p['top1_agreement']:.3f}, fallback {fb:.3f}")
    return Evaluation(config, big_steps, little, sweep, n, dec.top_k, dec.little_k)


def next_layer_accuracy(steps: list[TokenStep]) -> float:
    """Share of next-layer-gating predictions that the next layer of the same pass really
    computed (``nan`` when nothing was predicted)."""
    right = total = 0
    for s in steps:
        for p in s.passes:
            for a, b in zip(p.layers, p.layers[1:]):
                total += len(a.next_prefetch)
                right += len(set(a.next_prefetch) & set(b.experts))
    return right / total if total else float("nan")
