"""End-to-end co-simulation: the tiny MoE LM decoded with every linear layer on the accelerator.

The host program (:class:`Decoder`) runs the golden model's non-linear parts in numpy
(embeddings, RMS norms, attention over the KV cache, the router's softmax, routing, SwiGLU's
``silu(g) * u``, the residual adds, the greedy choice) with the very expressions of
:mod:`golden.model`, and every matrix-vector product as commands of the accelerator top
(docs/accel.md): ``LOAD_ACTS`` of the FP16 activations it wrote into host memory,
``SET_TABLES`` of the matrix's BSFP tables, ``MATMUL`` in draft or verify mode, then it reads
the binary32 results back from host memory. MoE experts live in host memory at
``EXPERT_BASE + (layer * n_experts + expert) * expert_bytes`` and are served by the
accelerator's expert cache: ``DEMAND`` pins an expert, the expert's MATMULs read its slot,
``RELEASE`` unpins it, ``PREFETCH`` (MoBiLE) fetches in the background and a ``FENCE`` closes
the layer before the next demand (so that the golden lockstep cache model predicts every hit
and victim).

Modes (docs/cosim.md):

``plain``   greedy decoding with the full weights and each token's top-k experts;
``speq``    SPEQ: ``gamma`` single-token draft passes (MATMULs in draft mode: the 4-bit draft
            planes, from host memory and from the expert slots) and one verify pass of up to
            ``gamma + 1 <= 4`` tokens (one MATMUL per matrix, the PE's four lanes);
``mobile``  MoBiLE (:mod:`golden.mobile`): a little pass with each token's first ``little_k``
            experts, the rest prefetched, and a big pass when the next-token confidence is below
            ``tau``.

The decoder talks to a *backend*: :class:`GoldenBackend` runs the commands on
:class:`golden.accel.AccelModel` at once (the golden prediction of every counter), and the cocotb
backend of :mod:`sim.tb_cosim` runs them on the RTL. The decoded bytes equal
:func:`golden_decode` (the golden decoding with the PE array's arithmetic) byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from golden import bsfp
from golden.accel import (AccelModel, Demand, Fence, LoadActs, Matmul, Prefetch, Release,
                          SetTables, tensor_layout, verify_tiles)
from golden.mobile import MobileConfig, little_k_for
from golden.model import MoeLM, _as_tokens, _rms, _silu, _softmax, check_prompt, top_k_route

MODES = ("plain", "speq", "mobile")
LANES = 4
OUT_REGIONS = 3            # MATMUL outputs in flight between two host reads (q, k, v)


class CosimError(RuntimeError):
    """A command failed, or the hardware disagreed with the golden model."""


def _up(value: int, align: int) -> int:
    return -(-int(value) // align) * align


@dataclass(frozen=True)
class Placement:
    """Where one matrix lives: host addresses (dense) or byte offsets inside its expert."""
    n: int
    k: int
    draft: int
    resid: int
    tables: SetTables


@dataclass
class MemoryMap:
    """Host memory of a co-simulation: weights, activations and outputs (all line-aligned).

    ``dense`` maps a matrix name to its :class:`Placement`; ``expert`` maps ``w_gate``,
    ``w_up``, ``w_down`` to their offsets inside an expert; ``expert_tables`` the tables of
    every expert matrix by its full name. ``interleave`` is the ``G`` the matrices are laid out
    for (``add_stages + 1`` of the accelerator that reads them).
    """
    pes: int
    line: int
    dense: dict[str, Placement]
    expert: dict[str, tuple[int, int]]
    expert_tables: dict[str, SetTables]
    expert_base: int
    expert_bytes: int
    acts_base: int
    acts_stride: int
    out_base: int
    out_stride: int
    out_region: int
    size: int
    image: bytearray = field(repr=False)
    interleave: int = 4

    @classmethod
    def build(cls, model: MoeLM, pes: int, interleave: int = 4) -> "MemoryMap":
        """Encode every matrix of ``model`` in BSFP and lay the host memory out for ``pes``
        PEs whose array interleaves ``interleave`` tiles (4: the default top's
        ``add_stages = 3``; docs/accel.md, "Tensor layout")."""
        cfg = model.config
        line = 2 * pes
        for name, k in (("d_model", cfg.d_model), ("d_expert", cfg.d_expert)):
            if k % 4:
                raise ValueError(f"the accelerator needs K a multiple of 4; {name} is {k}")
        chunks: list[tuple[int, bytes]] = []
        dense: dict[str, Placement] = {}
        addr = 0x1000
        expert_names = [n for n in model.linear_names() if ".experts." in n]
        for name in model.linear_names():
            if name in expert_names:
                continue
            w = bsfp.encode(model.params[name])
            lay = tensor_layout(w, pes, interleave)
            dense[name] = Placement(lay.n, lay.k, addr, addr + len(lay.draft), SetTables.of(w))
            chunks += [(addr, lay.draft), (addr + len(lay.draft), lay.residual)]
            addr = _up(addr + len(lay.draft) + len(lay.residual), 4096)
        expert_base = _up(addr, 1 << 16)
        offsets, off = {}, 0
        for part, (n, k) in (("w_gate", (cfg.d_expert, cfg.d_model)),
                             ("w_up", (cfg.d_expert, cfg.d_model)),
                             ("w_down", (cfg.d_model, cfg.d_expert))):
            d = verify_tiles(n, pes) * k // 4 * line
            offsets[part] = (off, off + d)
            off += 4 * d
        expert_bytes = off
        tables = {}
        for name in expert_names:
            layer, e, part = int(name.split(".")[1]), int(name.split(".")[3]), name.split(".")[4]
            w = bsfp.encode(model.params[name])
            lay = tensor_layout(w, pes, interleave)
            base = expert_base + (layer * cfg.n_experts + e) * expert_bytes
            d, r = offsets[part]
            chunks += [(base + d, lay.draft), (base + r, lay.residual)]
            tables[name] = SetTables.of(w)
        acts_base = _up(expert_base + cfg.n_layers * cfg.n_experts * expert_bytes, 4096)
        k_max = max(cfg.d_model, cfg.d_expert)
        n_max = max(cfg.vocab, cfg.d_model, cfg.d_expert, cfg.n_experts)
        acts_stride = _up(2 * k_max, line)
        out_base = _up(acts_base + LANES * acts_stride, 4096)
        out_stride = _up(4 * n_max, line)
        out_region = LANES * out_stride
        size = _up(out_base + OUT_REGIONS * out_region, 1 << 16)
        image = bytearray(size)
        for a, data in chunks:
            image[a:a + len(data)] = data
        return cls(pes, line, dense, offsets, tables, expert_base, expert_bytes, acts_base,
                   acts_stride, out_base, out_stride, out_region, size, image, interleave)



def accel_params(model: MoeLM, mmap: MemoryMap, rows: int, cols: int, *, slots: int = 8,
                 policy: str = "lru", queue_depth: int = 2, cmd_depth: int = 8,
                 mul_stages: int = 4):
    """The :class:`sim.accel_program.AccelParams` of an accelerator that runs ``model`` from
    ``mmap`` (its ``add_stages`` is the map's interleave minus 1)."""
    from sim.accel_program import AccelParams

    cfg = model.config
    k_max = max(cfg.d_model, cfg.d_expert)
    n_max = max(cfg.vocab, cfg.d_model, cfg.d_expert, cfg.n_experts)
    return AccelParams(rows=rows, cols=cols, slots=slots, expert_bytes=mmap.expert_bytes,
                       n_layers=cfg.n_layers, n_experts=cfg.n_experts, policy=policy,
                       k_max=k_max, n_max=n_max, queue_depth=queue_depth, cmd_depth=cmd_depth,
                       mul_stages=mul_stages, add_stages=mmap.interleave - 1)


def golden_model(params, mmap: MemoryMap, mem: bytearray | None = None) -> AccelModel:
    """The transaction-level model of ``params`` over a copy of the map's memory image."""
    return AccelModel(params.rows, params.cols, bytearray(mmap.image) if mem is None else mem,
                      slots=params.slots, expert_bytes=params.expert_bytes,
                      n_layers=params.n_layers, n_experts=params.n_experts, policy=params.policy,
                      queue_depth=params.queue_depth, expert_base=mmap.expert_base,
                      k_max=params.k_max, n_max=params.n_max, mul_stages=params.mul_stages,
                      add_stages=params.add_stages)


# --------------------------------------------------------------------------------------------
# Backends


class Timing:
    """What :func:`golden.perf.batch_features` needs to know of an accelerator and its memory,
    and the background prefetch fills still running (a ``FENCE`` waits for them; a fill takes
    the read latency, the expert's lines and ``fill_overhead``, the measured extra cycles of a
    demand miss).

    ``batch`` is called once per batch of commands, in order: prefetch fills add their bus
    time (read latency plus the expert's lines) to the pending background work, every other
    batch lets it run for the batch's physical cycles, and a batch with a ``FENCE`` waits for
    what is left.
    """

    def __init__(self, rows: int, cols: int, latency: int, line_cycles: float,
                 expert_lines: int, mul_stages: int = 0, add_stages: int = 0):
        self.rows, self.cols, self.latency = rows, cols, latency
        self.mul_stages, self.add_stages = mul_stages, add_stages
        self.line_cycles, self.expert_lines = line_cycles, expert_lines
        self.pending = 0.0
        self.fill_overhead = 0.0      # cycles a fill takes beyond latency + lines (measured)

    @classmethod
    def of(cls, params, latency: int, bandwidth: int | None) -> "Timing":
        line = 2 * params.rows * params.cols
        return cls(params.rows, params.cols, latency, line / (bandwidth or line),
                   params.expert_bytes // line, params.mul_stages, params.add_stages)

    def batch(self, commands, hits, prefetch_fills: int, csr_writes: int):
        from golden.perf import batch_features

        base, feats = batch_features(commands, rows=self.rows, cols=self.cols,
                                     latency=self.latency, line_cycles=self.line_cycles,
                                     expert_lines=self.expert_lines, hits=hits,
                                     prefetch_fills=prefetch_fills, csr_writes=csr_writes,
                                     mul_stages=self.mul_stages, add_stages=self.add_stages)
        if any(isinstance(c, Fence) for c in commands):
            base += self.pending
            self.pending = 0.0
        else:
            self.pending = max(0.0, self.pending - base)
        self.pending += prefetch_fills * (self.latency + self.expert_lines * self.line_cycles
                                          + self.fill_overhead)
        return base, feats


class CommandWords:
    """The command registers ``CMD0..7`` as the host last wrote them: pushing a command
    rewrites only the words that changed, then ``CMD_PUSH``."""

    def __init__(self):
        self.words: list[int | None] = [None] * 8

    def changes(self, cmd) -> list[tuple[int, int]]:
        out = [(i, w) for i, w in enumerate(cmd.encode()) if self.words[i] != w]
        for i, w in out:
            self.words[i] = w
        return out


class GoldenBackend:
    """Runs every command on :class:`golden.accel.AccelModel` (at once). With ``timing`` and
    a calibrated ``cycle_model`` (:class:`golden.perf.CommandCycleModel`) its clock advances by
    the model's prediction of every batch."""

    def __init__(self, model: AccelModel, line: int, *, timing: Timing | None = None,
                 cycle_model=None):
        self.model = model
        self.line = line
        self.timing = timing
        self.cycle_model = cycle_model
        if timing is not None and cycle_model is not None:
            # a prefetch fill is the same DMA transfer as a demand miss's fill
            timing.fill_overhead = cycle_model.as_dict()["demand_misses"]
        self.words = CommandWords()
        self.batches: list[tuple[float, dict, float]] = []
        self._cycles = 0.0

    async def write(self, addr: int, data: bytes) -> None:
        self.model.mem[addr:addr + len(data)] = data

    async def read(self, addr: int, n: int) -> bytes:
        return bytes(self.model.mem[addr:addr + n])

    async def run(self, commands: list[tuple[object, str]]):
        """Run ``(command, label)`` pairs in order; returns the last DEMAND's ``(slot, hit)``."""
        resp = None
        hits, writes = [], 0
        issued = self.model.cache.counters.prefetches_issued
        for cmd, label in commands:
            writes += len(self.words.changes(cmd)) + 1
            out = self.model.run(cmd)
            if out.cause is not None:
                raise CosimError(f"{label}: {cmd!r} failed with {out.cause}")
            if out.resp is not None:
                resp = out.resp[:2]
                hits.append(out.resp[1])
        if self.timing is not None:
            base, feats = self.timing.batch([c for c, _ in commands], hits,
                                            self.model.cache.counters.prefetches_issued - issued,
                                            writes)
            if self.cycle_model is not None:
                self._cycles += self.cycle_model.cycles(base, feats)
            self.batches.append((base, feats, float("nan")))
        return resp

    async def counters(self) -> dict[str, int]:
        return expected_counters(self.model)

    def cycles(self) -> int:
        """The model's cycles so far (0 without a cycle model)."""
        return int(round(self._cycles))


def expected_counters(model: AccelModel) -> dict[str, int]:
    """The counters of ``model`` under the names the RTL backend reports (cycles excluded)."""
    from hw.accel import CACHE_COUNTERS

    out = dict(model.counters)
    c = model.cache.counters.as_dict()
    for name in CACHE_COUNTERS:
        if name == "demand_stall_cycles":
            continue
        out[f"cache_{name}"] = c[name] - (c["demand_waits"] if name == "demands" else 0)
    return out


# --------------------------------------------------------------------------------------------
# The host program


@dataclass
class PassRecord:
    """One pass of the network over ``tokens`` at ``position``: its kind (``plain``, ``draft``,
    ``verify``, ``little``, ``big``), its cycles, and the experts it ran per layer."""
    kind: str
    position: int
    tokens: int
    cycles: int = 0
    experts: list[tuple[int, ...]] = field(default_factory=list)


@dataclass
class CosimResult:
    mode: str
    prompt: bytes
    bytes: bytes
    passes: list[PassRecord]
    prefill_cycles: int
    decode_cycles: int
    counters: dict[str, int]
    prefill_counters: dict[str, int]
    prefill_seconds: float
    decode_seconds: float
    outputs: list[tuple[str, int, np.ndarray]] = field(repr=False, default_factory=list)

    @property
    def text(self) -> str:
        return self.bytes.decode("utf-8", errors="replace")

    @property
    def cycles_per_token(self) -> float:
        return self.decode_cycles / len(self.bytes) if self.bytes else float("nan")

    def decode_counters(self) -> dict[str, int]:
        """Counters of the decode phase (after the prompt)."""
        return {k: v - self.prefill_counters.get(k, 0) for k, v in self.counters.items()}


class Decoder:
    """The host side of a co-simulation (see the module docstring).

    Parameters
    ----------
    model : MoeLM
    mmap : MemoryMap
        The host memory layout the backend's memory holds.
    backend
        :class:`GoldenBackend` or the cocotb backend of :mod:`sim.tb_cosim`.
    mode : one of :data:`MODES`
    gamma : int
        Draft tokens per SPEQ step, 1..3 (a verify pass takes at most 4 tokens).
    mobile : MobileConfig
        MoBiLE settings (``mobile`` mode); ``next_layer`` is not supported.
    on_byte : callable, optional
        Called with each decoded byte as soon as it is committed.
    record : bool
        Keep every linear layer's output (``CosimResult.outputs``), to name the first difference
        from the golden decoding.
    """

    def __init__(self, model: MoeLM, mmap: MemoryMap, backend, mode: str = "plain", *,
                 gamma: int = 3, mobile: MobileConfig = MobileConfig(), on_byte=None,
                 record: bool = False):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if isinstance(gamma, bool) or not isinstance(gamma, int) or not 1 <= gamma <= LANES - 1:
            raise ValueError(f"gamma must be 1..{LANES - 1} (a verify pass runs gamma + 1 tokens "
                             f"in the PE's {LANES} lanes), not {gamma!r}")
        if mode == "mobile":
            if mobile.next_layer:
                raise ValueError("the co-simulation does not model next-layer gating")
            if mobile.gate_mass is not None:
                raise ValueError("the co-simulation does not model gate-mass importance")
        self.model, self.mmap, self.backend, self.mode = model, mmap, backend, mode
        self.gamma = gamma
        self.mobile = mobile
        cfg = model.config
        self.little_k = little_k_for(cfg.top_k, mobile.little_k) if mode == "mobile" else cfg.top_k
        self.on_byte = on_byte or (lambda b: None)
        self.record = record
        self.outputs: list[tuple[str, int, np.ndarray]] = []
        self.passes: list[PassRecord] = []
        self._w32 = {n: w.astype(np.float32) for n, w in model.params.items() if w.ndim == 1
                     or n in ("tok_emb", "pos_emb")}

    # -- linear layers on the accelerator ------------------------------------------------
    async def _load(self, rows: list[np.ndarray], label: str):
        k = rows[0].shape[0]
        data = bytearray(len(rows) * self.mmap.acts_stride)
        for i, r in enumerate(rows):
            fp16 = np.asarray(r, dtype=np.float32).astype(np.float16).tobytes()
            data[i * self.mmap.acts_stride:i * self.mmap.acts_stride + len(fp16)] = fp16
        await self.backend.write(self.mmap.acts_base, bytes(data))
        return LoadActs(len(rows), k, self.mmap.acts_base, self.mmap.acts_stride), label

    def _matmul(self, place: Placement, mode: str, region: int, slot: int | None):
        return Matmul(mode, place.n, place.k, place.draft, place.resid,
                      self.mmap.out_base + region * self.mmap.out_region, self.mmap.out_stride,
                      slot=slot)

    async def _outputs(self, places: list[tuple[str, Placement]], tokens: int, mode: str,
                       positions: list[int]) -> list[list[np.ndarray]]:
        out = []
        for region, (name, place) in enumerate(places):
            rows = []
            for t in range(1 if mode == "draft" else tokens):
                addr = self.mmap.out_base + region * self.mmap.out_region + t * self.mmap.out_stride
                y = np.frombuffer(await self.backend.read(addr, 4 * place.n), dtype="<f4")
                y = y.astype(np.float32)
                rows.append(y)
                if self.record:
                    self.outputs.append((name, positions[t], y))
            out.append(rows)
        return out

    async def linear(self, names: list[str], rows: list[np.ndarray], mode: str, where: str,
                     positions: list[int], *, slot: int | None = None) -> list[list[np.ndarray]]:
        """``W x`` for every matrix of ``names`` and every activation row of ``rows`` (one
        LOAD_ACTS, then SET_TABLES and MATMUL per matrix); returns ``[matrix][token]``."""
        cmds = [await self._load(rows, f"{where}: activations")]
        places = []
        for region, name in enumerate(names):
            if slot is None:
                place = self.mmap.dense[name]
            else:
                part = name.rsplit(".", 1)[1]
                d, r = self.mmap.expert[part]
                tab = self.mmap.expert_tables[name]
                k = self.model.params[name].shape
                place = Placement(k[0], k[1], d, r, tab)
            places.append((name, place))
            cmds += [(place.tables, f"{where}: tables of {name}"),
                     (self._matmul(place, mode, region, slot), f"{where}: {name}")]
        await self.backend.run(cmds)
        return await self._outputs(places, len(rows), mode, positions)

    # -- one pass -------------------------------------------------------------------------
    def _route(self, kind: str, probs: np.ndarray):
        """``(experts, gates, prefetch)`` of one token: big (top-k) or little."""
        cfg = self.model.config
        experts, gates = top_k_route(probs, cfg.top_k, cfg.renormalize_gates)
        if kind != "little":
            return experts, gates, ()
        kl = self.little_k
        prefetch = tuple(int(e) for e in experts[kl:]) if self.mobile.prefetch else ()
        if self.mobile.renormalize_little:
            g = probs[experts[:kl]].astype(np.float32)
            gates = g / np.sum(g)
        else:
            gates = gates[:kl]
        return experts[:kl], gates, prefetch

    async def _moe(self, layer: int, xn: list[np.ndarray], routes, mode: str, where: str,
                   positions: list[int]) -> tuple[list[np.ndarray], tuple[int, ...]]:
        cfg = self.model.config
        order: list[int] = []
        for experts, _, _ in routes:
            order += [int(e) for e in experts if int(e) not in order]
        prefetch = [e for _, _, p in routes for e in p if e not in order]
        contrib: dict[tuple[int, int], np.ndarray] = {}
        for idx, e in enumerate(order):
            at = f"{where}, layer {layer}, expert {e}"
            slot, _hit = await self.backend.run([(Demand(layer, e), f"{at}: demand")])
            cmds = [(Prefetch(layer, p), f"{at}: prefetch {p}") for p in prefetch] if idx == 0 \
                else []
            if cmds:
                await self.backend.run(cmds)
            toks = [i for i, (experts, _, _) in enumerate(routes)
                    if e in [int(x) for x in experts]]
            pre = f"layers.{layer}.experts.{e}"
            tpos = [positions[i] for i in toks]
            g, u = await self.linear([f"{pre}.w_gate", f"{pre}.w_up"], [xn[i] for i in toks],
                                     mode, at, tpos, slot=slot)
            hidden = [_silu(g[j]) * u[j] for j in range(len(toks))]
            (down,) = await self.linear([f"{pre}.w_down"], hidden, mode, at, tpos, slot=slot)
            for j, i in enumerate(toks):
                contrib[i, e] = down[j]
            tail = [(Fence(), f"{at}: fence")] if idx == 0 and prefetch else []
            await self.backend.run(tail + [(Release(slot), f"{at}: release")])
        ys = []
        for i, (experts, gates, _) in enumerate(routes):
            y = np.zeros(cfg.d_model, dtype=np.float32)
            for e, g in zip(np.asarray(experts).tolist(), np.asarray(gates, np.float32)):
                y = y + g * contrib[i, int(e)]
            ys.append(y)
        return ys, tuple(order)

    async def forward(self, tokens: list[int], cache, kind: str) -> np.ndarray:
        """Logits ``(len(tokens), vocab)`` of one pass; appends the tokens to ``cache``.

        ``kind``: ``plain``/``verify``/``big`` (full weights, top-k), ``draft`` (draft mode,
        one token), ``little`` (full weights, little set)."""
        cfg = self.model.config
        w32 = self._w32
        mode = "draft" if kind == "draft" else "verify"
        if mode == "draft" and len(tokens) != 1:
            raise ValueError("a draft pass runs one token")
        pos0 = cache.length
        positions = [pos0 + i for i in range(len(tokens))]
        if pos0 + len(tokens) > cfg.max_seq:
            raise ValueError(f"sequence too long: {pos0} cached + {len(tokens)} new tokens "
                             f"exceed max_seq={cfg.max_seq}")
        rec = PassRecord(kind, pos0, len(tokens))
        c0 = self.backend.cycles()
        where = f"{kind} pass at position {pos0}"
        H, dh = cfg.n_heads, cfg.head_dim
        scale = np.float32(1.0 / np.sqrt(dh))
        xs = [w32["tok_emb"][t] + w32["pos_emb"][p] for t, p in zip(tokens, positions)]
        for layer in range(cfg.n_layers):
            pre = f"layers.{layer}"
            xn = [_rms(x, w32[f"{pre}.norm1"]) for x in xs]
            q, k, v = await self.linear([f"{pre}.attn.wq", f"{pre}.attn.wk", f"{pre}.attn.wv"],
                                        xn, mode, f"{where}, layer {layer}", positions)
            ctxs = []
            for i, pos in enumerate(positions):
                cache.k[layer, pos] = k[i]
                cache.v[layer, pos] = v[i]
            for i, pos in enumerate(positions):
                n_ctx = pos + 1
                keys = cache.k[layer, :n_ctx].reshape(n_ctx, H, dh)
                values = cache.v[layer, :n_ctx].reshape(n_ctx, H, dh)
                scores = np.einsum("thd,hd->ht", keys, q[i].reshape(H, dh)) * scale
                att = _softmax(scores)
                ctxs.append(np.einsum("ht,thd->hd", att, values).reshape(cfg.d_model))
            (o,) = await self.linear([f"{pre}.attn.wo"], ctxs, mode, f"{where}, layer {layer}",
                                     positions)
            xs = [x + o[i] for i, x in enumerate(xs)]
            xn = [_rms(x, w32[f"{pre}.norm2"]) for x in xs]
            (r,) = await self.linear([f"{pre}.router"], xn, mode, f"{where}, layer {layer}",
                                     positions)
            routes = [self._route("little" if kind == "little" else "big", _softmax(r[i]))
                      for i in range(len(xs))]
            ys, order = await self._moe(layer, xn, routes, mode, where, positions)
            rec.experts.append(order)
            xs = [x + ys[i] for i, x in enumerate(xs)]
        cache.length = pos0 + len(tokens)
        (logits,) = await self.linear(["head"], [_rms(x, w32["norm_f"]) for x in xs], mode,
                                      f"{where}, output head", positions)
        rec.cycles = self.backend.cycles() - c0
        self.passes.append(rec)
        return np.array(logits, dtype=np.float32)

    # -- decoding -------------------------------------------------------------------------
    async def generate(self, prompt, max_new_tokens: int) -> CosimResult:
        """Decode ``max_new_tokens`` bytes after ``prompt`` in this decoder's mode."""
        import time

        prompt = check_prompt(self.model, prompt, max_new_tokens)
        cache = self.model.new_cache()
        c_start = self.backend.cycles()
        t_start = time.perf_counter()
        out = bytearray()
        if self.mode == "mobile":
            for t in prompt[:-1]:
                await self._mobile_step(t, cache)
            prefill = (self.backend.cycles() - c_start, await self.backend.counters(),
                       time.perf_counter())
            token = prompt[-1]
            while len(out) < max_new_tokens:
                logits = await self._mobile_step(token, cache)
                token = int(np.argmax(logits))
                self._commit(out, [token])
        elif self.mode == "plain":
            for i in range(0, len(prompt) - 1, LANES):
                await self.forward(list(prompt[i:min(i + LANES, len(prompt) - 1)]), cache, "plain")
            prefill = (self.backend.cycles() - c_start, await self.backend.counters(),
                       time.perf_counter())
            token = prompt[-1]
            while len(out) < max_new_tokens:
                token = int(np.argmax((await self.forward([token], cache, "plain"))[0]))
                self._commit(out, [token])
        else:
            for i in range(0, len(prompt) - 1, LANES):
                await self.forward(list(prompt[i:min(i + LANES, len(prompt) - 1)]), cache,
                                   "verify")
            prefill = (self.backend.cycles() - c_start, await self.backend.counters(),
                       time.perf_counter())
            await self._speq(prompt[-1], cache, out, max_new_tokens)
        total = await self.backend.counters()
        return CosimResult(self.mode, prompt, bytes(out), self.passes, prefill[0],
                           self.backend.cycles() - c_start - prefill[0], total, prefill[1],
                           prefill[2] - t_start, time.perf_counter() - prefill[2], self.outputs)

    def _commit(self, out: bytearray, tokens) -> None:
        for t in tokens:
            out.append(int(t))
            self.on_byte(int(t))

    async def _mobile_step(self, token: int, cache) -> np.ndarray:
        pos = cache.length
        logits = (await self.forward([token], cache, "little"))[0]
        from golden.mobile import confidence

        if confidence(logits) < self.mobile.tau:
            cache.truncate(pos)
            logits = (await self.forward([token], cache, "big"))[0]
        return logits

    async def _speq(self, last: int, cache, out: bytearray, n: int) -> None:
        from golden.speq import greedy_verify

        while len(out) < n:
            base = cache.length
            g = min(self.gamma, n - len(out) - 1)
            drafts, tok = [], last
            for _ in range(g):
                tok = int(np.argmax((await self.forward([tok], cache, "draft"))[0]))
                drafts.append(tok)
            cache.truncate(base)
            target = await self.forward([last] + drafts, cache, "verify")
            n_acc, nxt = greedy_verify(drafts, target)
            cache.truncate(base + 1 + n_acc)
            self._commit(out, drafts[:n_acc] + [nxt])
            last = nxt


# --------------------------------------------------------------------------------------------
# Golden references


def golden_decode(model: MoeLM, prompt, max_new_tokens: int, mode: str, *, gamma: int = 3,
                  mobile: MobileConfig = MobileConfig(), record: bool = False):
    """The golden decoding with the PE array's arithmetic (``--hw-arith``) in ``mode``:
    ``(bytes, outputs)``, where ``outputs`` lists every linear layer's ``(name, position,
    output)`` in the order the model computed them when ``record`` is set."""
    from golden import mobile as gmobile
    from golden import model as gm
    from golden import speq

    outputs: list[tuple[str, int, np.ndarray]] = []
    state = {"pos": 0}

    def hook(name, w, x):
        y = speq.hw_arith_linear(name, w, x)
        if record:
            outputs.append((name, state["pos"], y))
        return y

    # the position of the token being computed: wrap forward so the hook knows it
    orig = model.forward

    def forward(tokens, cache, **kw):
        res = []
        for t in _as_tokens(tokens, model.config.vocab):
            state["pos"] = cache.length
            res.append(orig([int(t)], cache, **kw))
        return np.concatenate(res) if res else np.zeros((0, model.config.vocab), np.float32)

    model.forward = forward
    try:
        if mode == "plain":
            data = gm.generate(model, prompt, max_new_tokens, linear=hook)
        elif mode == "speq":
            data = speq.generate(model, prompt, max_new_tokens, gamma=gamma, linear=hook).bytes
        elif mode == "mobile":
            data = gmobile.generate(model, prompt, max_new_tokens, mobile, linear=hook).bytes
        else:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    finally:
        del model.forward
    return data, outputs


def first_difference(got: list, want: list) -> str | None:
    """Where two ``(name, position, output)`` sequences first differ, in words, or None.

    ``got`` is in the co-simulation's order (layer-major inside a multi-token pass); both are
    compared per ``(name, position)`` occurrence in ``want``'s order."""
    from collections import defaultdict, deque

    pending: dict[tuple[str, int], deque] = defaultdict(deque)
    for name, pos, y in got:
        pending[name, pos].append(y)
    for name, pos, y in want:
        q = pending[name, pos]
        if not q:
            return f"position {pos}, {name}: computed by the golden model, never by the hardware"
        h = q.popleft()
        if h.shape != y.shape or not np.array_equal(h.view(np.uint32), y.view(np.uint32)):
            bad = np.flatnonzero(h.view(np.uint32) != y.view(np.uint32)) if h.shape == y.shape \
                else [0]
            i = int(bad[0])
            return (f"position {pos}, {name}: output row {i} is {h[i]!r} on the hardware, "
                    f"{y[i]!r} in the golden model ({len(bad)} rows differ)")
    return None
