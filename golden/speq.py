"""SPEQ: self-speculative decoding with the BSFP draft of the same weights.

See docs/architecture.md, "System models".

The *draft model* is the network of :mod:`golden.model` with every matmul weight replaced by its
BSFP-4 draft (``golden.bsfp.encode(w).decode_draft()``: 4 of the 16 bits); embeddings and norm
gains stay as they are (they are look-ups and element-wise scales, not matmuls). The *verify
model* is the full FP16 network. Both share one KV cache.

One step, with the committed sequence ``S`` whose last token is not yet in the cache:

1. draft: feed ``S[-1], d_1, ..., d_{g-1}`` one token at a time through the draft model, each
   time choosing the next draft token (argmax, or a sample of the draft distribution ``q``):
   ``g`` draft passes, ``g`` = gamma (fewer at the very end of the requested length);
2. verify: truncate the cache back to ``len(S) - 1`` (the draft's keys and values are
   overwritten) and feed ``S[-1], d_1, ..., d_g`` through the full model: one verify pass over
   ``g + 1`` tokens, giving the target distributions ``p_0 .. p_g``;
3. accept: greedy - accept ``d_i`` while it is the argmax of ``p_{i-1}``, then emit the argmax of
   the first mismatching ``p`` (or of ``p_g``: the bonus token). Sample - rejection sampling:
   accept ``d_i`` with probability ``min(1, p(d_i) / q(d_i))``, on the first rejection emit a
   sample of ``norm(max(p - q, 0))``, if all are accepted emit a sample of ``p_g``. This is
   lossless: the emitted tokens are distributed exactly as sampling from the full model;
4. truncate the cache to the committed tokens before the newly emitted one.

Because :meth:`golden.model.MoeLM.forward` processes every token through the same code path, the
verify pass's logits for a position are bit-identical to plain decoding's, so greedy SPEQ emits
exactly the bytes of :func:`golden.model.generate` (checked by the tests).

Also here: :func:`hw_arith_linear`, the PE array's arithmetic (docs/architecture.md,
"Numbers") as a linear hook.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from golden.model import LinearHook, MoeLM, check_prompt

VERIFY_MODES = ("greedy", "sample")

_DRAFT_CACHE: "weakref.WeakKeyDictionary[MoeLM, dict]" = weakref.WeakKeyDictionary()


def draft_weights(model: MoeLM) -> dict[str, np.ndarray]:
    """The BSFP-4 draft (FP16) of every matmul weight, encoded once per model and cached."""
    cached = _DRAFT_CACHE.get(model)
    if cached is None:
        from golden.bsfp import encode

        draft16 = {name: encode(model.params[name]).decode_draft()
                   for name in model.linear_names()}
        cached = {"fp16": draft16,
                  "fp32": {n: w.astype(np.float32) for n, w in draft16.items()}}
        _DRAFT_CACHE[model] = cached
    return cached["fp16"]


def draft_linear(model: MoeLM, linear: LinearHook | None = None) -> LinearHook:
    """The draft model's linear hook: the same arithmetic as ``linear`` (default float32
    BLAS) applied to the BSFP draft weights instead of the full ones."""
    draft_weights(model)
    cached = _DRAFT_CACHE[model]
    if linear is None:
        w32 = cached["fp32"]

        def hook(name, w, x):
            return w32[name] @ x
    else:
        w16 = cached["fp16"]

        def hook(name, w, x):
            return linear(name, w16[name], x)
    return hook


def hw_arith_linear(name: str, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The PE array's arithmetic (docs/architecture.md, Numbers) as a linear hook.

    Activations are rounded to FP16; every output accumulates in binary32 sequentially in
    increasing k from +0.0: ``acc = fp32(acc + fp32(w[n, k] * x[k]))``. The FP16 x FP16 product
    is exact in binary32, so numpy's float32 multiply gives it exactly; ``np.add.accumulate``
    adds strictly in order (it never uses pairwise summation). Vectorised over output rows.
    """
    w = np.asarray(w)
    if w.dtype != np.float16 or w.ndim != 2:
        raise ValueError(f"{name}: weights must be a 2-D float16 array, got {w.dtype} {w.shape}")
    a = np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)
    if a.shape != (w.shape[1],):
        raise ValueError(f"{name}: activations of shape {a.shape} do not match weights {w.shape}")
    prod = np.empty((w.shape[0], w.shape[1] + 1), dtype=np.float32)
    prod[:, 0] = 0.0
    np.multiply(w.astype(np.float32), a, out=prod[:, 1:])
    return np.add.accumulate(prod, axis=1, dtype=np.float32)[:, -1].copy()


@dataclass
class SpeqStats:
    """What a SPEQ run did.

    ``acceptance_rate`` is accepted / drafted draft tokens (the share of draft work kept);
    ``token_acceptance`` is accepted / checked, where a step checks its drafts up to and
    including the first rejected one (the tokens after it are never examined): the estimate of
    the per-token acceptance probability alpha of the i.i.d. model, the quantity the paper's 0.976
    and :func:`golden.perf.expected_tokens_per_step` use. ``draft_passes`` counts single-token passes of the draft model; ``verify_passes`` counts
    verify passes (each over up to gamma + 1 tokens, ``verify_tokens`` in all); ``prefill_tokens``
    the prompt tokens fed before the first step. ``accepted_per_step[i]`` is how many draft
    tokens step ``i`` accepted.
    """

    gamma: int
    verify: str
    generated: int = 0
    drafted: int = 0
    accepted: int = 0
    rejected: int = 0
    draft_passes: int = 0
    verify_passes: int = 0
    verify_tokens: int = 0
    prefill_tokens: int = 0
    accepted_per_step: list[int] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens / drafted tokens (NaN when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else float("nan")

    @property
    def token_acceptance(self) -> float:
        """Accepted / (accepted + rejected) draft tokens (NaN when none was checked)."""
        checked = self.accepted + self.rejected
        return self.accepted / checked if checked else float("nan")

    @property
    def tokens_per_step(self) -> float:
        """Generated tokens per verify pass (1 + accepted drafts per step, on average)."""
        return self.generated / self.verify_passes if self.verify_passes else float("nan")

    def merge(self, other: "SpeqStats") -> "SpeqStats":
        """Sum of two runs' counts (same gamma and verification)."""
        if (self.gamma, self.verify) != (other.gamma, other.verify):
            raise ValueError("can only merge statistics of the same gamma and verification")
        return SpeqStats(self.gamma, self.verify,
                         *(getattr(self, f) + getattr(other, f) for f in
                           ("generated", "drafted", "accepted", "rejected", "draft_passes",
                            "verify_passes",
                            "verify_tokens", "prefill_tokens")),
                         accepted_per_step=self.accepted_per_step + other.accepted_per_step)

    def as_dict(self) -> dict:
        return {"gamma": self.gamma, "verify": self.verify, "generated": self.generated,
                "drafted": self.drafted, "accepted": self.accepted, "rejected": self.rejected,
                "acceptance_rate": self.acceptance_rate,
                "token_acceptance": self.token_acceptance, "tokens_per_step": self.tokens_per_step,
                "draft_passes": self.draft_passes, "verify_passes": self.verify_passes,
                "verify_tokens": self.verify_tokens, "prefill_tokens": self.prefill_tokens}


@dataclass
class SpeqResult:
    prompt: bytes
    tokens: np.ndarray          # the generated tokens (int64), prompt excluded
    stats: SpeqStats

    @property
    def bytes(self) -> bytes:
        return bytes(np.asarray(self.tokens, dtype=np.uint8).tolist())

    @property
    def text(self) -> str:
        return self.bytes.decode("utf-8", errors="replace")


def _probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _sample(p: np.ndarray, rng: np.random.Generator) -> int:
    c = np.cumsum(p)
    return int(min(np.searchsorted(c, rng.random() * c[-1], side="right"), len(p) - 1))


def greedy_verify(drafts, target_logits: np.ndarray) -> tuple[int, int]:
    """``(accepted, next_token)`` for greedy verification: ``target_logits`` has one row per
    draft plus one (row ``i`` predicts the token after draft ``i``, row 0 the first draft)."""
    best = np.argmax(target_logits, axis=-1)
    for i, d in enumerate(drafts):
        if int(best[i]) != int(d):
            return i, int(best[i])
    return len(drafts), int(best[len(drafts)])


def rejection_verify(drafts, q: np.ndarray, p: np.ndarray,
                     rng: np.random.Generator) -> tuple[int, int]:
    """``(accepted, next_token)`` for speculative sampling (rejection sampling).

    ``q[i]`` is the draft distribution draft ``i`` was sampled from, ``p[i]`` the target
    distribution at the same position; ``p`` has one more row (for the bonus token). The emitted
    tokens are distributed exactly as samples of ``p``.
    """
    for i, d in enumerate(drafts):
        d = int(d)
        if rng.random() * q[i, d] < p[i, d]:       # accept with probability min(1, p/q)
            continue
        residual = np.maximum(p[i] - q[i], 0.0)
        if residual.sum() <= 0.0:                   # only by rounding (p == q never rejects)
            residual = p[i]
        return i, _sample(residual / residual.sum(), rng)
    return len(drafts), _sample(p[len(drafts)], rng)


def generate(model: MoeLM, prompt: bytes, max_new_tokens: int, gamma: int = 3,
             verify: str = "greedy", seed: int | None = None, linear: LinearHook | None = None,
             *, temperature: float = 1.0) -> SpeqResult:
    """Self-speculative decoding of ``max_new_tokens`` tokens after ``prompt``.

    Parameters
    ----------
    gamma : int
        Draft tokens per step (>= 1).
    verify : {"greedy", "sample"}
        Greedy verification (output identical to :func:`golden.model.generate`) or rejection
        sampling (distributed as sampling the full model at ``temperature``).
    seed : int, optional
        Seed of the sampling random generator (``verify="sample"``).
    linear : callable, optional
        Linear hook of the full model (e.g. :func:`hw_arith_linear`); the draft applies the same
        hook to its draft weights.
    """
    if isinstance(gamma, bool) or not isinstance(gamma, (int, np.integer)) or gamma < 1:
        raise ValueError(f"gamma must be an integer >= 1, not {gamma!r}")
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {', '.join(VERIFY_MODES)}, not {verify!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, not {temperature!r}")
    prompt = check_prompt(model, prompt, max_new_tokens)
    rng = np.random.default_rng(seed)
    dlin = draft_linear(model, linear)
    stats = SpeqStats(gamma=int(gamma), verify=verify)
    out: list[int] = []
    if max_new_tokens == 0:
        return SpeqResult(prompt, np.zeros(0, np.int64), stats)
    cache = model.new_cache()
    if len(prompt) > 1:
        model.forward(prompt[:-1], cache, linear=linear)
    stats.prefill_tokens = len(prompt) - 1
    last = prompt[-1]
    while len(out) < max_new_tokens:
        base = cache.length                        # = len(committed) - 1
        g = min(int(gamma), max_new_tokens - len(out) - 1)
        drafts, q_rows = [], []
        tok = last
        for _ in range(g):
            logits = model.forward([tok], cache, linear=dlin)[0]
            stats.draft_passes += 1
            if verify == "greedy":
                tok = int(np.argmax(logits))
            else:
                q = _probs(logits, temperature)
                q_rows.append(q)
                tok = _sample(q, rng)
            drafts.append(tok)
        cache.truncate(base)
        target = model.forward([last] + drafts, cache, linear=linear)
        stats.verify_passes += 1
        stats.verify_tokens += g + 1
        if verify == "greedy":
            n_acc, nxt = greedy_verify(drafts, target)
        else:
            n_acc, nxt = rejection_verify(drafts, np.array(q_rows).reshape(g, model.config.vocab),
                                          _probs(target, temperature), rng)
        cache.truncate(base + 1 + n_acc)
        stats.drafted += g
        stats.accepted += n_acc
        stats.rejected += int(n_acc < g)
        stats.accepted_per_step.append(n_acc)
        out.extend(drafts[:n_acc])
        out.append(nxt)
        last = nxt
    stats.generated = len(out)
    return SpeqResult(prompt, np.array(out, dtype=np.int64), stats)


def sample_plain(model: MoeLM, prompt: bytes, max_new_tokens: int, seed: int | None = None,
                 linear: LinearHook | None = None, *, temperature: float = 1.0) -> bytes:
    """Plain autoregressive sampling from the full model (the reference for ``verify="sample"``)."""
    prompt = check_prompt(model, prompt, max_new_tokens)
    rng = np.random.default_rng(seed)
    if max_new_tokens == 0:
        return b""
    cache = model.new_cache()
    logits = model.forward(prompt, cache, linear=linear)[-1]
    out = bytearray()
    while True:
        out.append(_sample(_probs(logits, temperature), rng))
        if len(out) == max_new_tokens:
            return bytes(out)
        logits = model.forward([out[-1]], cache, linear=linear)[0]


def heldout_prompts(n_prompts: int = 16, prompt_len: int = 64) -> list[bytes]:
    """``n_prompts`` prompts of ``prompt_len`` bytes at evenly spaced offsets of the held-out
    text (:func:`golden.text.split`)."""
    from golden.text import split

    _, heldout = split()
    if n_prompts < 1 or prompt_len < 1 or prompt_len >= len(heldout):
        raise ValueError("need n_prompts >= 1 and 1 <= prompt_len < held-out length")
    step = (len(heldout) - prompt_len) // n_prompts
    return [heldout[i * step:i * step + prompt_len] for i in range(n_prompts)]


def measure_acceptance(model: MoeLM, gammas=range(1, 7), *, n_prompts: int = 16,
                       prompt_len: int = 64, new_tokens: int = 96, verify: str = "greedy",
                       seed: int = 0, linear: LinearHook | None = None,
                       progress=None) -> dict[int, SpeqStats]:
    """SPEQ statistics per gamma, summed over prompts taken from the held-out text."""
    prompts = heldout_prompts(n_prompts, prompt_len)
    out = {}
    for g in gammas:
        total = SpeqStats(gamma=int(g), verify=verify)
        for i, prompt in enumerate(prompts):
            res = generate(model, prompt, new_tokens, gamma=g, verify=verify,
                           seed=None if verify == "greedy" else seed * 1000 + i, linear=linear)
            total = total.merge(res.stats)
        out[int(g)] = total
        if progress:
            progress(f"gamma {g}: token acceptance {total.token_acceptance:.3f}, kept "
                     f"{total.acceptance_rate:.3f} of the drafts, "
                     f"{total.tokens_per_step:.2f} tokens/step")
    return out
