"""Tiny byte-level Mixture-of-Experts language model: numpy inference with a KV cache.

The network is a pre-norm decoder-only transformer over the 256 byte values:

    x = tok_emb[t] + pos_emb[p]
    for each layer l:
        x = x + Wo . attention(Wq . rms(x), Wk . rms(x), Wv . rms(x))     (causal, n_heads)
        x = x + sum_{e in experts} g_e . W_down_e . (silu(W_gate_e . rms(x)) * (W_up_e . rms(x)))
    logits = head . rms(x)

The router is ``softmax(router . rms(x))``; by default a token goes to its top-k experts and the
gates are the router probabilities of those experts, renormalised to sum to 1 when the
configuration says so (Mixtral style). Weights are stored as FP16, matmul weights shaped
``(out, in)``; activations are float32.

Tokens are always processed one at a time through the same code path (:meth:`MoeLM.forward`),
so a token's logits are bit-identical whether it is fed alone or inside a block. Greedy
self-speculative decoding relies on this to reproduce plain greedy decoding exactly.

Every matrix-vector product goes through a *linear hook*
``linear(name, w_fp16 (out, in), x_fp32 (in,)) -> fp32 (out,)``: the default is the float32
product with BLAS; the SPEQ draft substitutes BSFP draft weights, the hardware-arithmetic option
substitutes the PE array's binary32 sequential accumulation. Routing goes through a *route hook*
``route(layer, position, probs) -> (experts, gates)`` (MoBiLE uses it).

The shipped model (``golden/data/tiny_moe.npz``) is trained by ``speqmoe train``
(:mod:`golden.train`); the file records its configuration and its held-out bits per byte.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "data" / "tiny_moe.npz"

LinearHook = Callable[[str, np.ndarray, np.ndarray], np.ndarray]
RouteHook = Callable[[int, int, np.ndarray], tuple[np.ndarray, np.ndarray]]

_RMS_EPS = 1e-5


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a :class:`MoeLM`.

    Parameters
    ----------
    vocab : int
        Vocabulary size; 256 (bytes) for the language model.
    d_model : int
        Residual stream width.
    n_layers : int
        Transformer blocks, each with attention and an MoE feed-forward layer.
    n_heads : int
        Attention heads; must divide ``d_model``.
    n_experts : int
        Routed experts per MoE layer.
    top_k : int
        Experts per token (1 <= top_k <= n_experts).
    d_expert : int
        Hidden width of one SwiGLU expert.
    max_seq : int
        Longest sequence (learned absolute positions).
    renormalize_gates : bool
        Whether the top-k gate weights are renormalised to sum to 1.
    """

    vocab: int = 256
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_experts: int = 16
    top_k: int = 4
    d_expert: int = 128
    max_seq: int = 256
    renormalize_gates: bool = True

    def __post_init__(self):
        for name in ("vocab", "d_model", "n_layers", "n_heads", "n_experts", "top_k",
                     "d_expert", "max_seq"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, not {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"ModelConfig.n_heads ({self.n_heads}) must divide "
                             f"d_model ({self.d_model})")
        if self.top_k > self.n_experts:
            raise ValueError(f"ModelConfig.top_k ({self.top_k}) must not exceed "
                             f"n_experts ({self.n_experts})")
        if not isinstance(self.renormalize_gates, (bool, np.bool_)):
            raise ValueError(f"ModelConfig.renormalize_gates must be a bool, "
                             f"not {self.renormalize_gates!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return {k: (bool(v) if isinstance(v, (bool, np.bool_)) else int(v))
                for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model configuration field(s): {', '.join(unknown)}")
        return cls(**data)


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name and shape of every parameter, in a fixed order."""
    d, f, v = config.d_model, config.d_expert, config.vocab
    shapes: dict[str, tuple[int, ...]] = {"tok_emb": (v, d), "pos_emb": (config.max_seq, d)}
    for layer in range(config.n_layers):
        p = f"layers.{layer}"
        shapes[f"{p}.norm1"] = (d,)
        for w in ("wq", "wk", "wv", "wo"):
            shapes[f"{p}.attn.{w}"] = (d, d)
        shapes[f"{p}.norm2"] = (d,)
        shapes[f"{p}.router"] = (config.n_experts, d)
        for e in range(config.n_experts):
            shapes[f"{p}.experts.{e}.w_gate"] = (f, d)
            shapes[f"{p}.experts.{e}.w_up"] = (f, d)
            shapes[f"{p}.experts.{e}.w_down"] = (d, f)
    shapes["norm_f"] = (d,)
    shapes["head"] = (v, d)
    return shapes


def linear_names(config: ModelConfig) -> list[str]:
    """Names of the weights used as matmuls (the ones the linear hook sees)."""
    return [name for name, shape in param_shapes(config).items()
            if len(shape) == 2 and name not in ("tok_emb", "pos_emb")]


class KVCache:
    """Keys and values of the tokens processed so far, per layer (float32)."""

    def __init__(self, config: ModelConfig):
        shape = (config.n_layers, config.max_seq, config.d_model)
        self.k = np.zeros(shape, dtype=np.float32)
        self.v = np.zeros(shape, dtype=np.float32)
        self.max_seq = config.max_seq
        self.length = 0

    def truncate(self, n: int) -> None:
        """Forget every position from ``n`` on (the entries are overwritten later)."""
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot truncate a KV cache of length {self.length} to {n}")
        self.length = int(n)


def _rms(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(_RMS_EPS))) * w


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (np.float32(1.0) + np.exp(-x))


def top_k_route(probs: np.ndarray, k: int, renormalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most probable experts (ties to the lower index) and their gate weights."""
    experts = np.argsort(-probs, kind="stable")[:k]
    gates = probs[experts].astype(np.float32)
    if renormalize:
        gates = gates / np.sum(gates)
    return experts, gates


def _as_tokens(tokens, vocab: int) -> np.ndarray:
    if isinstance(tokens, (bytes, bytearray)):
        arr = np.frombuffer(bytes(tokens), dtype=np.uint8).astype(np.int64)
    else:
        arr = np.asarray(tokens)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"tokens must be a 1-D sequence of integers, got {arr.dtype} "
                             f"shape {arr.shape}")
        arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= vocab):
        raise ValueError(f"tokens must lie in 0..{vocab - 1}")
    return arr


class MoeLM:
    """The tiny MoE language model (numpy inference).

    Parameters
    ----------
    config : ModelConfig
    params : dict
        Parameter name -> float16 array, exactly the names and shapes of :func:`param_shapes`.
    metadata : dict, optional
        Free-form facts about the weights (training settings, held-out bits per byte).
    """

    def __init__(self, config: ModelConfig, params: dict[str, np.ndarray],
                 metadata: dict | None = None):
        expected = param_shapes(config)
        missing = sorted(set(expected) - set(params))
        extra = sorted(set(params) - set(expected))
        if missing or extra:
            raise ValueError(f"parameters do not match the model shape: missing "
                             f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                             f"{extra[:5]}{'...' if len(extra) > 5 else ''}")
        self.config = config
        self.params: dict[str, np.ndarray] = {}
        for name, shape in expected.items():
            w = np.asarray(params[name])
            if w.shape != shape:
                raise ValueError(f"parameter {name} has shape {w.shape}, expected {shape}")
            if w.dtype != np.float16:
                raise ValueError(f"parameter {name} must be float16, not {w.dtype}")
            self.params[name] = w
        self.metadata = dict(metadata or {})
        self._w32 = {name: w.astype(np.float32) for name, w in self.params.items()}
        self._linear_names = linear_names(config)

    # ------------------------------------------------------------------ construction, files
    @classmethod
    def init_random(cls, config: ModelConfig, seed: int) -> "MoeLM":
        """Random weights (GPT-2 style initialisation), reproducible from ``seed``."""
        rng = np.random.default_rng(seed)
        params = {}
        for name, shape in param_shapes(config).items():
            if len(shape) == 1:
                params[name] = np.ones(shape, dtype=np.float16)
                continue
            std = 0.02
            if name.endswith((".wo", ".w_down")):
                std = 0.02 / np.sqrt(2 * config.n_layers)
            params[name] = (rng.standard_normal(shape) * std).astype(np.float16)
        return cls(config, params, {"source": f"init_random(seed={seed})"})

    def save(self, path: str | Path) -> None:
        """Write the FP16 weights, the configuration and the metadata to an ``.npz`` file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = dict(self.params)
        arrays["__config__"] = np.array(json.dumps(self.config.to_dict()))
        arrays["__metadata__"] = np.array(json.dumps(self.metadata))
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "MoeLM":
        """Read a file written by :meth:`save`. A missing file is a ``FileNotFoundError``
        naming the command that produces it; a malformed one a ``ValueError``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model weights file {path} not found "
                                    f"(train one with `speqmoe train --out {path}`)")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a model weights file: {exc}") from None
        if "__config__" not in arrays:
            raise ValueError(f"{path} is not a model weights file (no configuration)")
        config = ModelConfig.from_dict(json.loads(str(arrays.pop("__config__"))))
        metadata = json.loads(str(arrays.pop("__metadata__", np.array("{}"))))
        return cls(config, arrays, metadata)

    def linear_names(self) -> list[str]:
        return list(self._linear_names)

    def new_cache(self) -> KVCache:
        return KVCache(self.config)

    # ------------------------------------------------------------------ inference
    def forward(self, tokens, cache: KVCache, *, linear: LinearHook | None = None,
                route: RouteHook | None = None) -> np.ndarray:
        """Logits (float32, ``(len(tokens), vocab)``) of each token given the cache and the
        tokens before it; appends every token's keys and values to ``cache``."""
        toks = _as_tokens(tokens, self.config.vocab)
        if cache.length + len(toks) > self.config.max_seq:
            raise ValueError(f"sequence too long: {cache.length} cached + {len(toks)} new "
                             f"tokens exceed max_seq={self.config.max_seq}")
        out = np.empty((len(toks), self.config.vocab), dtype=np.float32)
        for i, t in enumerate(toks):
            out[i] = self._step(int(t), cache, linear, route)
        return out

    def _step(self, token: int, cache: KVCache, linear, route) -> np.ndarray:
        cfg = self.config
        p = self.params
        w32 = self._w32
        if linear is None:
            def lin(name, x):
                return w32[name] @ x
        else:
            def lin(name, x):
                return np.asarray(linear(name, p[name], x), dtype=np.float32)
        pos = cache.length
        n_ctx = pos + 1
        H, dh = cfg.n_heads, cfg.head_dim
        scale = np.float32(1.0 / np.sqrt(dh))
        x = w32["tok_emb"][token] + w32["pos_emb"][pos]
        for layer in range(cfg.n_layers):
            pre = f"layers.{layer}"
            xn = _rms(x, w32[f"{pre}.norm1"])
            q = lin(f"{pre}.attn.wq", xn)
            cache.k[layer, pos] = lin(f"{pre}.attn.wk", xn)
            cache.v[layer, pos] = lin(f"{pre}.attn.wv", xn)
            keys = cache.k[layer, :n_ctx].reshape(n_ctx, H, dh)
            values = cache.v[layer, :n_ctx].reshape(n_ctx, H, dh)
            scores = np.einsum("thd,hd->ht", keys, q.reshape(H, dh)) * scale
            att = _softmax(scores)
            ctx = np.einsum("ht,thd->hd", att, values).reshape(cfg.d_model)
            x = x + lin(f"{pre}.attn.wo", ctx)

            xn = _rms(x, w32[f"{pre}.norm2"])
            probs = _softmax(lin(f"{pre}.router", xn))
            if route is None:
                experts, gates = top_k_route(probs, cfg.top_k, cfg.renormalize_gates)
            else:
                experts, gates = route(layer, pos, probs)
            y = np.zeros(cfg.d_model, dtype=np.float32)
            for e, g in zip(np.asarray(experts).tolist(), np.asarray(gates, np.float32)):
                if not 0 <= e < cfg.n_experts:
                    raise ValueError(f"route hook returned expert {e}, outside 0..{cfg.n_experts - 1}")
                ep = f"{pre}.experts.{e}"
                hidden = _silu(lin(f"{ep}.w_gate", xn)) * lin(f"{ep}.w_up", xn)
                y = y + g * lin(f"{ep}.w_down", hidden)
            x = x + y
        cache.length = n_ctx
        return lin("head", _rms(x, w32["norm_f"]))

    def sequence_logits(self, tokens) -> np.ndarray:
        """Logits for a whole sequence at once with batched matmuls (fast evaluation).

        Same mathematics as :meth:`forward` from an empty cache, but BLAS may sum in a
        different order, so results agree only to float32 rounding; use it for perplexity,
        never where bit-exactness matters.
        """
        cfg = self.config
        w = self._w32
        toks = _as_tokens(tokens, cfg.vocab)
        T = len(toks)
        if T > cfg.max_seq:
            raise ValueError(f"sequence of {T} tokens exceeds max_seq={cfg.max_seq}")
        H, dh = cfg.n_heads, cfg.head_dim
        x = w["tok_emb"][toks] + w["pos_emb"][:T]
        mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
        for layer in range(cfg.n_layers):
            pre = f"layers.{layer}"
            xn = _rms(x, w[f"{pre}.norm1"])
            q = (xn @ w[f"{pre}.attn.wq"].T).reshape(T, H, dh).transpose(1, 0, 2)
            k = (xn @ w[f"{pre}.attn.wk"].T).reshape(T, H, dh).transpose(1, 0, 2)
            v = (xn @ w[f"{pre}.attn.wv"].T).reshape(T, H, dh).transpose(1, 0, 2)
            att = _softmax(q @ k.transpose(0, 2, 1) * np.float32(1.0 / np.sqrt(dh)) + mask)
            ctx = (att @ v).transpose(1, 0, 2).reshape(T, cfg.d_model)
            x = x + ctx @ w[f"{pre}.attn.wo"].T
            xn = _rms(x, w[f"{pre}.norm2"])
            probs = _softmax(xn @ w[f"{pre}.router"].T)
            order = np.argsort(-probs, axis=1, kind="stable")[:, :cfg.top_k]
            gates = np.take_along_axis(probs, order, axis=1)
            if cfg.renormalize_gates:
                gates = gates / gates.sum(axis=1, keepdims=True)
            y = np.zeros_like(x)
            for e in range(cfg.n_experts):
                rows, slot = np.nonzero(order == e)
                if rows.size == 0:
                    continue
                ep = f"{pre}.experts.{e}"
                xe = xn[rows]
                hidden = _silu(xe @ w[f"{ep}.w_gate"].T) * (xe @ w[f"{ep}.w_up"].T)
                y[rows] += gates[rows, slot][:, None] * (hidden @ w[f"{ep}.w_down"].T)
            x = x + y
        return _rms(x, w["norm_f"]) @ w["head"].T

    def bits_per_byte(self, data: bytes, window: int | None = None) -> float:
        """Mean negative log2-likelihood per predicted byte over non-overlapping windows
        (each window predicts its bytes 1.. from the ones before; the first is context)."""
        window = min(window or self.config.max_seq, self.config.max_seq)
        toks = _as_tokens(data, self.config.vocab)
        total, count = 0.0, 0
        for start in range(0, len(toks) - 1, window - 1):
            chunk = toks[start:start + window]
            if len(chunk) < 2:
                break
            logits = self.sequence_logits(chunk[:-1]).astype(np.float64)
            logz = np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1)) \
                + logits.max(1)
            nll = logz - logits[np.arange(len(chunk) - 1), chunk[1:]]
            total += float(nll.sum())
            count += len(chunk) - 1
        if count == 0:
            raise ValueError("need at least two bytes to measure bits per byte")
        return total / count / np.log(2.0)


def _openblas_thread_functions():
    """numpy's bundled OpenBLAS ``(get, set)`` thread-count functions, or ``None``."""
    import ctypes

    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for lib in sorted(libs.glob("*openblas*")) if libs.is_dir() else []:
        try:
            handle = ctypes.CDLL(str(lib))
        except OSError:
            continue
        for suffix in ("scipy_openblas_{}_num_threads64_", "openblas_{}_num_threads64_",
                       "openblas_{}_num_threads"):
            try:
                return getattr(handle, suffix.format("get")), getattr(handle, suffix.format("set"))
            except AttributeError:
                continue
    return None


@contextlib.contextmanager
def blas_threads(n: int = 1):
    """Run the block with numpy's OpenBLAS limited to ``n`` threads (restored afterwards).

    The model's matmuls are small; on a shared, loaded 2-core machine OpenBLAS's second thread
    made them up to 40x slower. With numpy 2.4's OpenBLAS the logits were bit-identical with 1
    and 2 threads (checked by a test), but compare bit-exact runs under the same setting.
    Does nothing when numpy's BLAS is not a bundled OpenBLAS.
    """
    funcs = _openblas_thread_functions()
    if funcs is None:
        yield
        return
    get, set_ = funcs
    before = int(get())
    set_(int(n))
    try:
        yield
    finally:
        set_(before)


def load_default() -> MoeLM:
    """The shipped trained model (``golden/data/tiny_moe.npz``)."""
    return MoeLM.load(DEFAULT_WEIGHTS)


def check_prompt(model: MoeLM, prompt, max_new_tokens: int) -> bytes:
    """Validate a prompt and a length for generation; returns the prompt as bytes."""
    if isinstance(prompt, str):
        prompt = prompt.encode("utf-8")
    if not isinstance(prompt, (bytes, bytearray)):
        raise ValueError(f"prompt must be bytes, not {type(prompt).__name__}")
    if len(prompt) == 0:
        raise ValueError("prompt must not be empty")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
            or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, not {max_new_tokens!r}")
    limit = model.config.max_seq
    if len(prompt) + max_new_tokens > limit + 1:
        raise ValueError(f"prompt ({len(prompt)} bytes) + max_new_tokens ({max_new_tokens}) "
                         f"exceed the model's context of {limit} bytes")
    return bytes(prompt)


def generate(model: MoeLM, prompt: bytes, max_new_tokens: int, *,
             linear: LinearHook | None = None) -> bytes:
    """Plain greedy decoding with the full weights: the ``max_new_tokens`` bytes after
    ``prompt`` (argmax, ties to the lower byte value)."""
    prompt = check_prompt(model, prompt, max_new_tokens)
    if max_new_tokens == 0:
        return b""
    cache = model.new_cache()
    logits = model.forward(prompt, cache, linear=linear)[-1]
    out = bytearray()
    while True:
        token = int(np.argmax(logits))
        out.append(token)
        if len(out) == max_new_tokens:
            return bytes(out)
        logits = model.forward([token], cache, linear=linear)[0]
