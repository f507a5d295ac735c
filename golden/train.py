"""Train the tiny MoE language model of :mod:`golden.model` (torch, CPU; ``speqmoe train``).

torch is an optional extra (``pip install -e .[train]``) and is imported only here. The torch
network is the numpy model's mathematics with the same parameter names, so the trained weights are
saved, rounded to FP16, straight into a :class:`golden.model.MoeLM` file.

Training: random windows of ``max_seq + 1`` bytes from the first 90 % of ``pydoc_data.topics``
(:mod:`golden.text`), next-byte cross-entropy plus a Switch-style load-balancing loss (so that
every expert is used, which the MoBiLE expert-cache models need), AdamW with linear warm-up and
cosine decay over a fixed number of steps. Everything random comes from ``seed``; with the same
seed, step count, torch version and thread count the run is reproducible. ``minutes`` is a
safety budget: when it runs out training stops early and the file records it.

The held-out bits per byte is measured at the end on the last 10 % of the corpus with the
FP16-rounded weights, in non-overlapping windows of ``max_seq`` bytes.

Why this shape (``DEFAULT_CONFIG``): 4 layers, d_model 128, 4 heads, 16 SwiGLU experts of
hidden width 128, top-4 with renormalised gates, 256-byte context. That is 3.5 M parameters,
7.0 MB as FP16 (under the 8 MB limit) of which about 1.1 M are active per token, so 900 steps of
16 x 256 bytes (3.7 M bytes, about 9 passes over the training text) take about 15 minutes on one
CPU thread. 16 experts with top-4 gives the MoBiLE models a real big/little split (top-2 vs
top-4) and a cache with something to do. One torch thread is the default because on the shared
2-core machine two threads were 3-5x slower per step (contention); ``--threads`` changes it.
"""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np

from golden.model import ModelConfig, MoeLM, param_shapes
from golden.text import as_tokens, split

# The shipped model's settings (documented in the weights file's metadata).
DEFAULT_CONFIG = ModelConfig(d_model=128, n_layers=4, n_heads=4, n_experts=16, top_k=4,
                             d_expert=128, max_seq=256, renormalize_gates=True)
DEFAULT_STEPS = 900
DEFAULT_BATCH = 16
DEFAULT_LR = 3e-3
AUX_LOSS_COEF = 0.01


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError("training needs torch, an optional extra: "
                          "pip install -e '.[train]' (torch==2.13.0, CPU build)") from None
    return torch


def _build(torch, config: ModelConfig, init: MoeLM):
    nn = torch.nn
    F = torch.nn.functional
    names = list(param_shapes(config))

    class TorchMoeLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.names = names
            self.plist = nn.ParameterList(
                [nn.Parameter(torch.from_numpy(init.params[n].astype(np.float32))) for n in names])

        def p(self):
            return dict(zip(self.names, self.plist))

        def forward(self, idx):
            cfg = config
            P = self.p()
            B, T = idx.shape
            H, dh = cfg.n_heads, cfg.head_dim

            def rms(x, w):
                return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

            x = P["tok_emb"][idx] + P["pos_emb"][:T]
            aux = x.new_zeros(())
            for layer in range(cfg.n_layers):
                pre = f"layers.{layer}"
                xn = rms(x, P[f"{pre}.norm1"])
                q, k, v = (F.linear(xn, P[f"{pre}.attn.{w}"]).view(B, T, H, dh).transpose(1, 2)
                           for w in ("wq", "wk", "wv"))
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                x = x + F.linear(o.transpose(1, 2).reshape(B, T, cfg.d_model), P[f"{pre}.attn.wo"])
                xn = rms(x, P[f"{pre}.norm2"]).reshape(B * T, cfg.d_model)
                probs = torch.softmax(F.linear(xn, P[f"{pre}.router"]), dim=-1)
                gates, experts = probs.topk(cfg.top_k, dim=-1)
                if cfg.renormalize_gates:
                    gates = gates / gates.sum(-1, keepdim=True)
                frac = torch.zeros(cfg.n_experts).index_add_(
                    0, experts.reshape(-1), torch.ones(experts.numel())) / experts.numel()
                aux = aux + cfg.n_experts * (frac * probs.mean(0)).sum()
                y = torch.zeros_like(xn)
                for e in range(cfg.n_experts):
                    rows, slot = (experts == e).nonzero(as_tuple=True)
                    if rows.numel() == 0:
                        continue
                    ep = f"{pre}.experts.{e}"
                    xe = xn[rows]
                    h = F.silu(F.linear(xe, P[f"{ep}.w_gate"])) * F.linear(xe, P[f"{ep}.w_up"])
                    y = y.index_add(0, rows, gates[rows, slot, None] * F.linear(h, P[f"{ep}.w_down"]))
                x = x + y.view(B, T, cfg.d_model)
            logits = F.linear(rms(x, P["norm_f"]), P["head"])
            return logits, aux / cfg.n_layers

    return TorchMoeLM()


def heldout_bits_per_byte(torch, net, config: ModelConfig, heldout: bytes) -> float:
    """Mean bits per predicted byte over non-overlapping windows of ``max_seq`` bytes."""
    toks = torch.from_numpy(as_tokens(heldout))
    W = config.max_seq
    total, count = 0.0, 0
    starts = list(range(0, len(toks) - 1, W - 1))
    full = [s for s in starts if s + W <= len(toks)]
    with torch.no_grad():
        for i in range(0, len(full), 32):
            chunk = torch.stack([toks[s:s + W] for s in full[i:i + 32]])
            logits, _ = net(chunk[:, :-1])
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, config.vocab),
                                                    chunk[:, 1:].reshape(-1), reduction="sum")
            total += float(nll)
            count += chunk[:, 1:].numel()
        for s in starts[len(full):]:
            chunk = toks[s:s + W]
            if len(chunk) < 2:
                break
            logits, _ = net(chunk[None, :-1])
            total += float(torch.nn.functional.cross_entropy(logits[0], chunk[1:], reduction="sum"))
            count += len(chunk) - 1
    return total / count / math.log(2.0)


def train(out: str | Path, *, config: ModelConfig = DEFAULT_CONFIG, steps: int = DEFAULT_STEPS,
          minutes: float = 25.0, seed: int = 0, batch: int = DEFAULT_BATCH,
          lr: float = DEFAULT_LR, threads: int = 1,
          progress: Callable[[str], None] = print) -> MoeLM:
    """Train a model, save it (FP16) to ``out`` and return it."""
    torch = _import_torch()
    if steps < 1:
        raise ValueError(f"steps must be positive, not {steps}")
    if minutes <= 0:
        raise ValueError(f"minutes must be positive, not {minutes}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train_bytes, heldout = split()
    data = torch.from_numpy(as_tokens(train_bytes))
    net = _build(torch, config, MoeLM.init_random(config, seed))
    decay = [p for n, p in zip(net.names, net.plist) if p.ndim == 2 and not n.endswith("_emb")]
    other = [p for n, p in zip(net.names, net.plist) if not (p.ndim == 2 and not n.endswith("_emb"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": other, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    warmup = max(1, min(100, steps // 10))

    def lr_at(step):
        if step < warmup:
            return lr * (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * t)))

    T = config.max_seq
    start = time.perf_counter()
    budget = minutes * 60.0
    done = 0
    ema = None
    for step in range(steps):
        if time.perf_counter() - start > budget:
            progress(f"time budget of {minutes} min reached after {step} of {steps} steps")
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        offs = torch.randint(0, len(data) - T - 1, (batch,), generator=gen)
        xb = torch.stack([data[o:o + T + 1] for o in offs.tolist()])
        logits, aux = net(xb[:, :-1])
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, config.vocab),
                                               xb[:, 1:].reshape(-1))
        loss = ce + AUX_LOSS_COEF * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        done = step + 1
        bpb = ce.item() / math.log(2.0)
        ema = bpb if ema is None else 0.95 * ema + 0.05 * bpb
        if step % 50 == 0 or step == steps - 1:
            el = time.perf_counter() - start
            progress(f"step {step}/{steps} train bpb {ema:.3f} aux {aux.detach().item():.3f} "
                     f"lr {lr_at(step):.2e} {el:.0f}s ({el / (step + 1):.2f} s/step)")
    train_seconds = time.perf_counter() - start

    # Round to FP16 (the shipped format) and measure the held-out score of those weights.
    params16 = {n: p.detach().numpy().astype(np.float16) for n, p in zip(net.names, net.plist)}
    with torch.no_grad():
        for n, p in zip(net.names, net.plist):
            p.copy_(torch.from_numpy(params16[n].astype(np.float32)))
    net.eval()
    bpb = heldout_bits_per_byte(torch, net, config, heldout)
    progress(f"held-out bits per byte (FP16 weights): {bpb:.4f}")
    metadata = {
        "heldout_bits_per_byte": bpb,
        "heldout": "last 10% of pydoc_data.topics (golden.text.split), windows of max_seq bytes",
        "train_steps": done, "planned_steps": steps, "stopped_early": done < steps,
        "batch": batch, "seq": T, "tokens_seen": done * batch * T, "lr": lr,
        "schedule": "AdamW(0.9,0.95), wd 0.1, warm-up + cosine to 10%, clip 1.0",
        "aux_loss_coef": AUX_LOSS_COEF, "seed": seed, "threads": threads,
        "train_seconds": round(train_seconds, 1), "torch": torch.__version__,
        "python": platform.python_version(),
        "command": f"speqmoe train --steps {steps} --seed {seed} --batch {batch} "
                   f"--threads {threads} --minutes {minutes:g}",
    }
    model = MoeLM(config, params16, metadata)
    model.save(out)
    progress(f"wrote {out}")
    return model
