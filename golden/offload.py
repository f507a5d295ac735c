"""Offloaded MoE decoding time model: an expert cache fed over a host link.

See docs/architecture.md, "System models", and docs/model_shapes.md.

The model times a :mod:`golden.trace` request trace. Every input is listed in
:class:`OffloadConfig`; each default is an *assumption*, stated where it is defined.

Timeline (batch 1 decoding; one compute engine, one host link)
    For every layer pass of the trace (its ``D``/``P`` records up to the ``X`` marker):

    0. a model pass (its first layer-0 request) first pays ``pass_overhead_s`` (the parts of
       a pass outside the MoE layers: output head), so a MoBiLE fallback, which re-runs every
       layer, pays it again;
    1. the dense part of the layer (attention, router, shared experts; resident on the device)
       takes ``dense_s`` (see :class:`OffloadConfig`); the routing decision, and so every
       request of the layer, is known when it ends;
    2. the requests go, in trace order, to the expert cache
       (:class:`golden.expert_cache.ExpertCacheModel`, non-lockstep, the same ``slots`` and
       ``policy`` for every method), from a host that, like the accelerator top's blocking
       ``DEMAND`` command, sends the next request only after a demand's response: a demand
       that misses, or hits a slot whose fill is in flight, holds the host until its fill
       completes (its response); a demand hit and a prefetch take no time. (The RTL
       controller, ``hw.expert_cache``, would also accept hits, prefetches and releases
       during a demand fill; this host never offers them then, so the model stays exact.) A demand that finds no slot (every unpinned slot is being
       filled) waits until the oldest prefetch fill completes (its time is charged);
    3. the layer's experts are computed one after the other, each as soon as its weights are
       resident, each taking ``expert_compute_s``. The layer ends when the last expert is
       done; the ``R`` records then unpin the slots.

Non-blocking host (``OffloadConfig.host = "nonblocking"``; the timeline above is the
``"blocking"`` default of this module)
    A layer pass's requests go out, in trace order, as soon as its dense part (its router) has
    run; ``P`` records at the time the request before them was accepted. The controller
    accepts a demand hit (and prefetches) while a demand waits for its fill, but only one
    waiting demand: a demand that misses, or hits a fill in flight, is accepted when the
    previous waiting demand's response has come. Each expert is computed as soon as all its
    units are resident and the engine is free (the expert ready first goes first) and is
    released when computed; ``X`` and ``R`` records only mark groups, and at most as many
    experts as the largest ``X`` of the trace (k: a verify group) are pinned at a time, so a
    verify's next expert fills while earlier ones compute. The next layer pass starts when the
    last expert of this one is computed. Not co-simulated against the RTL (the blocking host
    is); docs/spec_mobile.md.

Fill order on the link (the RTL's rule, :class:`_Dma`)
    Every fill moves ``expert_bytes`` in ``transfer_s = expert_bytes / link_bytes_per_s +
    link_latency_s``; fills use the link one at a time and **a fill that has reached the DMA
    runs to completion: nothing preempts it**, so fills complete in the order they reach the
    DMA. The DMA holds the running fill and one more command (the controller's command stage:
    the next fill is handed over while the running one transfers). Whenever that place is
    free, the next fill to reach it is the demand fill if one is waiting, else the oldest
    prefetch fill of the queue (prefetches keep their order). So a demand goes ahead of
    prefetch fills still waiting in the queue, but behind the running fill and the one
    already handed to the DMA. (In the RTL the hand-over happens when the running fill has
    issued its last burst, a few bursts before its data ends; the model puts it at the start
    of the running fill's successor, which differs by less than ``outstanding * max_burst``
    beats. This assumes fills much longer than that burst window, as expert fills are: the
    DMA accepts more commands early when a whole fill fits in the window.) With
    ``queue_depth <= 2`` the running prefetch and the one behind it have both
    reached the DMA whenever a demand can arrive, so the demand priority only shows with
    deeper queues.

    Transfers overlap compute (a prefetch for layer l+1 streams while layer l computes).
    :attr:`OffloadResult.fills` lists every fill (kind, expert, issue, hand-over, start and
    end times) in completion order.

Outputs are :class:`OffloadResult` (total and per-token time, hits, misses, bytes moved,
stall time). Methods are compared on traces built from the *same* token sequence.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from golden.expert_cache import ExpertCacheModel
from golden.mobile import LayerStep, PassStep, TokenStep, build_trace, little_k_for
from golden.trace import Trace

PCIE4_X16_BYTES_PER_S = 25e9       # PCIe 4.0 x16 effective, pinned memory (docs/model_shapes.md)
GPU_BYTES_PER_S = 1008e9           # assumed compute device: RTX 4090-class GDDR6X, 1008 GB/s
HOSTS = ("blocking", "nonblocking")
METHODS = ("lru_big", "little", "mobile", "mobile_prefetch")
METHOD_LABELS = {"lru_big": "big only, on-demand LRU (baseline)", "little": "little only",
                 "mobile": "MoBiLE", "mobile_prefetch": "MoBiLE + prefetch"}


@dataclass(frozen=True)
class OffloadConfig:
    """Inputs of the time model (all assumed unless a caller measured them).

    Compute side: by default a memory-bound device of ``device_bytes_per_s`` (a dense layer
    part takes ``dense_bytes_per_layer / device_bytes_per_s``, an expert ``expert_bytes /
    device_bytes_per_s``); ``dense_time_s`` / ``expert_time_s`` replace those figures when
    given (the tiny LM's study sets them from the accelerator's cycle model,
    :func:`accelerator_compute`). ``layer_overhead_s`` is added to every layer of every pass
    (a fixed per-layer cost beyond the compute: kernel launches, command issue), and
    ``pass_overhead_s`` to every model pass. ``compute`` says where the compute figures come
    from (it labels every report).
    """

    expert_bytes: int
    dense_bytes_per_layer: int
    slots: int
    policy: str = "lru"
    queue_depth: int = 2          # our choice: deeper queues reserve slots and hurt (see the demo)
    link_bytes_per_s: float = PCIE4_X16_BYTES_PER_S
    link_latency_s: float = 0.0
    device_bytes_per_s: float = GPU_BYTES_PER_S
    layer_overhead_s: float = 0.0
    dense_time_s: float | None = None
    expert_time_s: float | None = None
    pass_overhead_s: float = 0.0
    compute: str = "assumed: memory-bound GPU-class device (1008 GB/s unless set)"
    plane_cache: bool = False
    draft_ratio: float = 0.25
    draft_units: int = 0
    host: str = "blocking"
    draft_dense_ratio: float | None = None

    # ``draft_dense_ratio``: the dense part and head of a draft pass over those of a full
    # one-token pass; ``None`` is ``draft_ratio`` (the draft runs them on their draft planes),
    # 1.0 when the draft runs them at full precision (``draft_dense="full"`` of
    # :func:`golden.spec_mobile.generate`; its router, still a draft, is charged at full too).

    # ``host``: "blocking" (module docstring, step 2: the next request only after a demand's
    # response, a verify group's requests after the previous group's compute) or
    # "nonblocking" (:func:`simulate`, "Non-blocking host"). Measured in docs/spec_mobile.md.

    def __post_init__(self):
        if self.slots < 1:
            raise ValueError(f"slots must be >= 1, not {self.slots!r}")
        if self.host not in HOSTS:
            raise ValueError(f"host must be one of {', '.join(HOSTS)}, not {self.host!r}")
        if self.policy not in ("lru", "fifo", "lfu"):
            raise ValueError(f"policy must be lru, fifo or lfu, not {self.policy!r}")
        for name in ("expert_bytes", "link_bytes_per_s", "device_bytes_per_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)!r}")
        for name in ("dense_bytes_per_layer", "link_latency_s", "layer_overhead_s",
                     "pass_overhead_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)!r}")
        if not 0 < self.draft_ratio <= 1:
            raise ValueError(f"draft_ratio must be in (0, 1], not {self.draft_ratio!r}")
        if self.draft_dense_ratio is not None and not 0 < self.draft_dense_ratio <= 1:
            raise ValueError(f"draft_dense_ratio must be in (0, 1] or None, "
                             f"not {self.draft_dense_ratio!r}")
        if self.draft_units and not (self.plane_cache
                                     and 0 < self.draft_units < self.slots * PLANE_UNITS):
            raise ValueError(f"draft_units needs plane_cache and must be in 1.."
                             f"{self.slots * PLANE_UNITS - 1}, not {self.draft_units!r}")
        for name in ("dense_time_s", "expert_time_s"):
            v = getattr(self, name)
            if v is not None and not v >= 0:
                raise ValueError(f"{name} must be >= 0 or None, not {v!r}")

    @property
    def transfer_s(self) -> float:
        return self.expert_bytes / self.link_bytes_per_s + self.link_latency_s

    @property
    def unit_transfer_s(self) -> float:
        """Transfer time of one fill: an expert, or a quarter of one with a plane cache."""
        units = PLANE_UNITS if self.plane_cache else 1
        return self.expert_bytes / units / self.link_bytes_per_s + self.link_latency_s

    @property
    def dense_draft_ratio(self) -> float:
        """The dense part and head of a draft pass over a full pass's (``draft_dense_ratio``,
        else ``draft_ratio``)."""
        return self.draft_ratio if self.draft_dense_ratio is None else self.draft_dense_ratio

    def _scale(self, mode: str, tokens: int) -> float:
        if mode == "draft":
            if tokens != 1:
                raise ValueError(f"a draft pass runs one token, not {tokens}")
            return self.dense_draft_ratio
        return float(-(-tokens // 4))

    def layer_time_s(self, mode: str = "full", tokens: int = 1) -> float:
        """The dense part of a layer pass: ``dense_s`` (without the overhead) times
        :attr:`dense_draft_ratio` in draft mode or ``ceil(tokens / 4)`` in full mode, plus
        ``layer_overhead_s`` once."""
        return (self.dense_s - self.layer_overhead_s) * self._scale(mode, tokens) \
            + self.layer_overhead_s

    def head_time_s(self, mode: str = "full", tokens: int = 1) -> float:
        """``pass_overhead_s`` scaled as :meth:`layer_time_s`."""
        return self.pass_overhead_s * self._scale(mode, tokens)

    def expert_time_for(self, mode: str, passes: int) -> float:
        """One expert of a layer pass: ``expert_compute_s`` times ``draft_ratio`` (draft) or
        times the weight passes ``ceil(tokens / 4)`` (full)."""
        return self.expert_compute_s * (self.draft_ratio if mode == "draft" else passes)

    @property
    def expert_compute_s(self) -> float:
        if self.expert_time_s is not None:
            return self.expert_time_s
        return self.expert_bytes / self.device_bytes_per_s

    @property
    def dense_s(self) -> float:
        base = (self.dense_time_s if self.dense_time_s is not None
                else self.dense_bytes_per_layer / self.device_bytes_per_s)
        return base + self.layer_overhead_s


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
    dense_s: float = 0.0          # of compute_s: the dense parts and heads (link idle then,
                                  # unless a prefetch is in flight)
    fills: list = field(default_factory=list, repr=False)   # FillRecord, completion order

    @property
    def time_per_token_s(self) -> float:
        return self.time_s / self.tokens if self.tokens else 0.0

    @property
    def hit_rate(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "fills"}
        d["time_per_token_s"] = self.time_per_token_s
        d["hit_rate"] = self.hit_rate
        return d


@dataclass
class FillRecord:
    """One fill of the link: ``kind`` ``demand`` or ``prefetch``; ``issued`` when the controller
    accepted its request, ``committed`` when it reached the DMA, ``start``/``end`` its
    transfer (``end``: the fill completes)."""

    kind: str
    layer: int
    expert: int
    slot: int
    issued: float
    committed: float | None = None
    start: float | None = None
    end: float | None = None


class _Dma:
    """The link and the DMA's command order (module docstring, "Fill order on the link")."""

    def __init__(self, transfer_s: float):
        self.transfer_s = transfer_s
        self.queue: deque[FillRecord] = deque()     # prefetch fills not yet at the DMA
        self.demand: FillRecord | None = None       # a demand fill not yet at the DMA
        self.last_start = float("-inf")             # start of the last fill handed over
        self.last_end = 0.0                         # end of the last fill handed over
        self.log: list[FillRecord] = []             # fills in hand-over = completion order

    def _next(self) -> tuple[float, FillRecord] | None:
        """When the next fill reaches the DMA, and which (``None``: nothing waits)."""
        waiting = [f for f in (self.demand, self.queue[0] if self.queue else None)
                   if f is not None]
        if not waiting:
            return None
        # the DMA has room once the fill handed over last has started
        t = max(self.last_start, min(f.issued for f in waiting))
        if self.demand is not None and self.demand.issued <= t:
            return t, self.demand
        return t, self.queue[0]

    def _commit(self, t: float, f: FillRecord) -> None:
        if f is self.demand:
            self.demand = None
        else:
            self.queue.popleft()
        f.committed = t
        f.start = max(t, self.last_end)
        f.end = f.start + self.transfer_s
        self.last_start, self.last_end = f.start, f.end
        self.log.append(f)

    def advance(self, t: float) -> None:
        """Hand over every fill that reaches the DMA by ``t``. A request arriving at ``t``
        competes only for later places: requests of one instant arrive in trace order (in
        the RTL a prefetch reaches the command stage before the next request is accepted)."""
        while (nxt := self._next()) is not None and nxt[0] <= t:
            self._commit(*nxt)

    def prefetch(self, f: FillRecord) -> None:
        self.advance(f.issued)
        self.queue.append(f)

    def demand_fill(self, f: FillRecord) -> float:
        """A demand miss's fill; returns its end (the host offers nothing until the response,
        and a prefetch accepted later would queue behind this fill, so no later request can
        change the order ahead of it)."""
        self.advance(f.issued)
        self.demand = f
        return self.finish(f)

    def finish(self, f: FillRecord) -> float:
        """The end of ``f``, handing over fills until it has reached the DMA (only valid while
        no new request can arrive: the caller waits for ``f``)."""
        while f.committed is None:
            self._commit(*self._next())
        return f.end


PLANE_UNITS = 4       # a plane cache's unit: a quarter of an expert (its draft plane)


class _SplitPlaneCache:
    """Two expert caches behind one link (``OffloadConfig.draft_units``): ``parts[0]`` holds
    only draft planes (unit 0 of an expert), ``parts[1]`` the three residual units, each with
    its own replacement policy, pins and prefetch queue (two instances of the controller);
    slots of ``parts[1]`` are numbered after those of ``parts[0]``."""

    def __init__(self, draft_units: int, residual_units: int, **kw):
        self.parts = (ExpertCacheModel(draft_units, **kw), ExpertCacheModel(residual_units, **kw))
        self.offset = draft_units

    def _part(self, slot: int):
        if slot < self.offset:
            return self.parts[0], slot
        return self.parts[1], slot - self.offset

    def access(self, layer: int, tag: int, kind: str):
        i = 0 if tag % PLANE_UNITS == 0 else 1
        res = self.parts[i].access(layer, tag, kind)
        if i and res.slot is not None:
            res = replace(res, slot=res.slot + self.offset)
        return res

    def release(self, slot: int) -> None:
        part, local = self._part(slot)
        part.release(local)

    def complete(self, slot: int) -> None:
        """Complete the oldest prefetch fill of the part that holds ``slot``."""
        self._part(slot)[0].complete_prefetches(1)

    @property
    def counters(self):
        a, b = (p.counters for p in self.parts)
        return replace(a, **{k: getattr(a, k) + getattr(b, k) for k in asdict(a)})


def _units(expert: int, plane: str | None, plane_cache: bool) -> list[int]:
    """Cache tags (expert ids of the cache model) a request for ``plane`` of ``expert`` needs:
    without a plane cache the expert itself; with one, unit 0 (the draft plane) for ``draft``,
    units 0..3 (the draft plane and the three quarters of the residual plane) for ``full``."""
    if not plane_cache:
        if plane == "draft":
            raise ValueError("the trace requests draft planes: time it with plane_cache=True")
        return [expert]
    first = expert * PLANE_UNITS
    return [first] if plane == "draft" else list(range(first, first + PLANE_UNITS))


def _needs_fill(cache, layer: int, tag: int) -> bool:
    """Whether a demand of ``tag`` now would wait for a fill (absent, or its fill in flight)."""
    if isinstance(cache, _SplitPlaneCache):
        cache = cache.parts[0 if tag % PLANE_UNITS == 0 else 1]
    slot = cache.lookup(layer, tag)
    return slot is None or cache.slot_state(slot).state != "valid"


def _cache_setup(trace: Trace, cfg: OffloadConfig):
    units = PLANE_UNITS if cfg.plane_cache else 1
    if cfg.plane_cache and cfg.expert_bytes % PLANE_UNITS:
        raise ValueError(f"a plane cache needs expert_bytes divisible by {PLANE_UNITS}")
    kw = dict(policy=cfg.policy, queue_depth=cfg.queue_depth,
              expert_bytes=int(cfg.expert_bytes) // units, n_layers=trace.n_layers,
              n_experts=trace.n_experts * units, lockstep=False)
    if cfg.draft_units:
        cache = _SplitPlaneCache(cfg.draft_units, cfg.slots * units - cfg.draft_units, **kw)
        return cache, cache.complete
    cache = ExpertCacheModel(cfg.slots * units, **kw)

    def complete(slot: int) -> None:
        cache.complete_prefetches(1)
    return cache, complete


def _take_fills_through(target, inflight, fill_of, complete, draft_units: int) -> None:
    """Take the prefetch fills up to *target* off the in-flight queue: the cache model
    completes its queue in order up to that slot; with a split cache, fills of the other
    part that were ahead of it are completed here."""
    while inflight:
        f = inflight.popleft()
        fill_of.pop(f.slot, None)
        if f is target:
            return
        if draft_units and (f.slot < draft_units) != (target.slot < draft_units):
            complete(f.slot)


def _simulate_nonblocking(trace: Trace, cfg: OffloadConfig, tokens: int | None) -> OffloadResult:
    """:func:`simulate` with ``cfg.host == "nonblocking"`` (see there)."""
    cache, complete = _cache_setup(trace, cfg)
    dma = _Dma(cfg.unit_transfer_s)
    window = max([r.n for r in trace.records if r.op == "X"] or [1])
    explicit = any(r.op == "L" for r in trace.records)
    now = 0.0                 # the compute engine is free from this time
    accept = 0.0              # the controller accepted the host's last request at this time
    waiting_until = 0.0       # the response of the last waiting demand
    inflight: deque[FillRecord] = deque()
    fill_of: dict[int, FillRecord] = {}
    pinned: list[tuple[float, int, list[int]]] = []    # (ready, order, slots) not computed
    order = 0
    t0 = 0.0                  # the open layer pass's router has run at this time
    is_open = after_x = False
    mode, passes = "full", 1
    stall = compute = dense = 0.0
    steps = set()

    def retire(t: float) -> None:
        dma.advance(t)
        while inflight and inflight[0].end is not None and inflight[0].end <= t:
            f = inflight.popleft()
            fill_of.pop(f.slot, None)
            complete(f.slot)

    def compute_next() -> float:
        """Compute the pinned expert that is ready first; release it; return its end."""
        nonlocal now, stall, compute
        i = min(range(len(pinned)), key=lambda j: pinned[j][:2])
        ready, _, slots = pinned.pop(i)
        if ready > now:
            stall += ready - now
            now = ready
        each = cfg.expert_time_for(mode, passes)
        now += each
        compute += each
        for slot in slots:
            cache.release(slot)
        return now

    def settle(t: float) -> None:
        """Computes that have ended by ``t`` release their slots before a request at ``t``."""
        while pinned and max(now, min(p[0] for p in pinned)) + \
                cfg.expert_time_for(mode, passes) <= t:
            compute_next()

    def close() -> None:
        nonlocal is_open
        while pinned:
            compute_next()
        is_open = False

    def open_layer(layer: int, how: str, n_tokens: int) -> None:
        nonlocal now, compute, dense, is_open, after_x, mode, passes, t0
        close()
        mode, passes = how, -(-n_tokens // 4)
        lead = cfg.layer_time_s(how, n_tokens) + (cfg.head_time_s(how, n_tokens)
                                                  if layer == 0 else 0.0)
        now += lead
        compute += lead
        dense += lead
        t0 = now
        is_open, after_x = True, False

    def demand(r, tag: int, t_avail: float) -> tuple[float, int, float]:
        nonlocal accept, waiting_until
        while True:
            t = max(t_avail, accept)
            settle(t)
            retire(t)
            if _needs_fill(cache, r.layer, tag):
                # one waiting demand at a time: a second miss is accepted after its response
                t = max(t, waiting_until)
                settle(t)
                retire(t)
            res = cache.access(r.layer, tag, "demand")
            if not res.waited:
                break
            if pinned:                 # a slot frees when a pinned expert has been computed
                t_avail = max(t_avail, compute_next())
            elif inflight:             # or when the oldest prefetch fill completes
                t_avail = max(t_avail, dma.finish(inflight[0]))
            else:
                raise ValueError(f"{cfg.slots} slots cannot hold the pins of one layer "
                                 f"(demand {r.id} at step {r.step} would wait forever)")
        accept = t
        if res.in_flight:
            target = fill_of[res.slot]
            done = dma.finish(target)
            _take_fills_through(target, inflight, fill_of, complete, cfg.draft_units)
            waiting_until = done
        elif not res.hit:
            done = dma.demand_fill(FillRecord("demand", r.layer, r.expert, res.slot, t))
            waiting_until = done
        else:
            done = t
        return done, res.slot, t_avail

    for r in trace.records:
        steps.add(r.step)
        if r.op == "L":
            open_layer(r.layer, r.mode, r.tokens)
        elif r.op in ("D", "P") and not explicit and (not is_open or after_x):
            open_layer(r.layer, "full", 1)            # version 1: one full-precision token
        if r.op == "D":
            t_avail = t0
            while len(pinned) >= window:              # at most ``window`` experts pinned
                t_avail = max(t_avail, compute_next())
            ready, slots = t_avail, []
            for tag in _units(r.expert, r.plane, cfg.plane_cache):
                done, slot, t_avail = demand(r, tag, t_avail)
                ready = max(ready, done)
                slots.append(slot)
            pinned.append((ready, order, slots))
            order += 1
        elif r.op == "P":
            for tag in _units(r.expert, r.plane, cfg.plane_cache):
                t = max(t0, accept)
                settle(t)
                retire(t)
                res = cache.access(r.layer, tag, "prefetch")
                accept = t
                if not res.dropped:
                    f = FillRecord("prefetch", r.layer, r.expert, res.slot, t)
                    dma.prefetch(f)
                    inflight.append(f)
                    fill_of[res.slot] = f
        elif r.op == "X":
            after_x = True
    close()
    dma.advance(float("inf"))
    c = cache.counters
    return OffloadResult(time_s=now, tokens=len(steps) if tokens is None else int(tokens),
                         hits=c.hits, misses=c.misses,
                         prefetches_issued=c.prefetches_issued,
                         prefetches_useful=c.prefetches_useful,
                         bytes_transferred=c.bytes_read, stall_s=stall, compute_s=compute,
                         dense_s=dense,
                         fills=dma.log)


def simulate(trace: Trace, cfg: OffloadConfig, *, tokens: int | None = None) -> OffloadResult:
    """Time ``trace`` under ``cfg`` (see the module docstring). ``tokens`` (default: the
    number of distinct steps) divides the time into ``time_per_token_s``."""
    if cfg.host == "nonblocking":
        return _simulate_nonblocking(trace, cfg, tokens)
    cache, complete = _cache_setup(trace, cfg)
    dma = _Dma(cfg.unit_transfer_s)
    now = 0.0                 # the compute engine (and the host issuing requests)
    port = 0.0                # the controller's request port is free from this time
    inflight: deque[FillRecord] = deque()     # prefetch fills not completed in the cache model
    fill_of: dict[int, FillRecord] = {}       # slot -> its prefetch fill in flight
    slot_of: dict[int, list[int]] = {}
    layer_open = False
    explicit = any(r.op == "L" for r in trace.records)    # version 2: L records open passes
    mode, passes = "full", 1                  # of the current layer pass
    ready: list[float] = []
    stall = compute = dense = 0.0
    steps = set()

    def retire(t: float) -> None:
        """Complete, in the cache model, the prefetch fills that have ended by ``t``."""
        dma.advance(t)
        while inflight and inflight[0].end is not None and inflight[0].end <= t:
            f = inflight.popleft()
            fill_of.pop(f.slot, None)
            complete(f.slot)

    def open_layer(layer: int, how: str, n_tokens: int) -> None:
        nonlocal now, compute, dense, layer_open, mode, passes, ready
        mode, passes = how, -(-n_tokens // 4)        # 4 lanes: ceil(tokens / 4) weight passes
        lead = cfg.layer_time_s(how, n_tokens) + (cfg.head_time_s(how, n_tokens)
                                                  if layer == 0 else 0.0)
        now += lead
        compute += lead
        dense += lead
        layer_open = True
        ready = []

    def demand(r, tag: int) -> tuple[float, int]:
        t = max(now, port)
        retire(t)
        res = cache.access(r.layer, tag, "demand")
        while res.waited and inflight:
            # no slot: the request waits until the oldest prefetch fill completes
            t = max(t, dma.finish(inflight[0]))
            retire(t)
            res = cache.access(r.layer, tag, "demand")
        if res.waited:
            raise ValueError(f"{cfg.slots} slots cannot hold the pins of one layer "
                             f"(demand {r.id} at step {r.step} would wait forever)")
        if res.in_flight:
            # the cache model completed its prefetch queue up to this slot (with a split
            # cache: that part's queue; fills of the other part ahead of it end first)
            target = fill_of[res.slot]
            done = dma.finish(target)
            _take_fills_through(target, inflight, fill_of, complete, cfg.draft_units)
        elif not res.hit:
            done = dma.demand_fill(FillRecord("demand", r.layer, r.expert, res.slot, t))
        else:
            done = t
        return done, res.slot

    for r in trace.records:
        steps.add(r.step)
        if r.op == "L":
            open_layer(r.layer, r.mode, r.tokens)
            continue
        if r.op in ("D", "P") and not layer_open and not explicit:
            open_layer(r.layer, "full", 1)            # version 1: one full-precision token
        if r.op == "D":
            done = port
            slots = []
            for tag in _units(r.expert, r.plane, cfg.plane_cache):
                t_done, slot = demand(r, tag)
                port = t_done
                done = max(done, t_done)
                slots.append(slot)
            ready.append(done)
            slot_of[r.id] = slots
        elif r.op == "P":
            for tag in _units(r.expert, r.plane, cfg.plane_cache):
                t = max(now, port)
                retire(t)
                res = cache.access(r.layer, tag, "prefetch")
                if not res.dropped:
                    f = FillRecord("prefetch", r.layer, r.expert, res.slot, t)
                    dma.prefetch(f)
                    inflight.append(f)
                    fill_of[res.slot] = f
        elif r.op == "X":
            t = now
            each = cfg.expert_time_for(mode, passes)
            for rd in sorted(ready):
                if rd > t:
                    stall += rd - t
                    t = rd
                t += each
                compute += each
            now = t
            ready = []
            layer_open = False
        elif r.op == "R":
            for slot in slot_of.pop(r.id):
                cache.release(slot)
    dma.advance(float("inf"))          # prefetches still queued at the end
    c = cache.counters
    return OffloadResult(time_s=now, tokens=len(steps) if tokens is None else int(tokens),
                         hits=c.hits, misses=c.misses,
                         prefetches_issued=c.prefetches_issued,
                         prefetches_useful=c.prefetches_useful,
                         bytes_transferred=c.bytes_read, stall_s=stall, compute_s=compute,
                         dense_s=dense,
                         fills=dma.log)


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
    """A published MoE model's offloading-relevant shape (docs/model_shapes.md; BF16 weights)."""

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


DEFAULT_CONTEXT = 64        # tokens in the KV cache: the middle of a 128-byte held-out window


def accelerator_compute(model_config, acc=None, context: int = DEFAULT_CONTEXT) -> dict:
    """Compute times of the tiny LM on the generated accelerator, from :mod:`golden.perf`
    (the PE array's golden cycle model, which the RTL is checked against), for one token in
    FP16 (verify-mode) passes:

    - ``dense_s``, per layer: the attention projections and the router, each
      :func:`golden.perf.layer_cycles` (tiles, pipeline, drain), plus the attention over
      ``context`` cached tokens at 4 MACs per PE per cycle; or, if longer, the time to stream
      those weights and the KV cache from device memory at ``mem_bw``;
    - ``expert_s``, per expert: its three matrices' cycles (the weights come from the expert
      cache's on-chip slot);
    - ``pass_s``, per model pass: the output head (vocab x d_model), cycles or streaming.

    ``acc`` defaults to :class:`golden.perf.Accelerator` (16 x 16 PEs at an assumed 1 GHz,
    an assumed 410 GB/s): the same accelerator as the SPEQ projection.
    """
    from golden import perf

    acc = acc or perf.Accelerator()
    shape = perf.tiny_shape(model_config)

    def timed(mats, stream: bool, extra_cycles: float = 0.0, extra_bytes: float = 0.0):
        cycles = sum(perf.layer_cycles("fp16", n, k, acc) for n, k in mats) + extra_cycles
        nbytes = sum(perf.layer_weight_bytes("fp16", n, k) for n, k in mats) + extra_bytes
        t = cycles / acc.clock_hz
        return max(t, nbytes / acc.mem_bw) if stream else t

    attn_cycles = 2 * context * shape.d_model / (acc.macs_per_pe * acc.pes)
    kv_bytes = 2 * shape.kv_dim * 2 * (context + 1)
    dense = timed(shape.attn_matrices() + shape.router_matrices(), True, attn_cycles, kv_bytes)
    expert = timed(shape.expert_matrices(), False)
    head = timed([(shape.vocab, shape.d_model)], True)
    clock = f"{acc.clock_hz / 1e9:g} GHz"
    mats = shape.expert_matrices()
    draft_ratio = (sum(perf.layer_cycles("draft", n, k, acc) for n, k in mats)
                   / sum(perf.layer_cycles("fp16", n, k, acc) for n, k in mats))
    return {"dense_s": dense, "expert_s": expert, "pass_s": head, "context": context,
            "draft_ratio": draft_ratio,
            "label": (f"measured: golden.perf cycle model of the accelerator ({acc.rows} x "
                      f"{acc.cols} PEs; clock {clock} and memory {acc.mem_bw / 1e9:g} GB/s "
                      f"assumed), FP16, context {context}: {dense * 1e6:.3f} us per layer "
                      f"(attention projections, router), {expert * 1e6:.3f} us per expert, "
                      f"{head * 1e6:.3f} us per pass (output head)")}


def tiny_config(model_config, slots: int, *, compute: str = "accelerator", acc=None,
                context: int = DEFAULT_CONTEXT, **kw) -> OffloadConfig:
    """Offload configuration for the tiny LM: FP16 SwiGLU experts (3 d_model x d_expert
    matrices); the dense part of a layer is its attention and router weights.

    ``compute="accelerator"`` (default): compute times of the generated accelerator from its
    cycle model (:func:`accelerator_compute`; array, clock and memory assumed), the output
    head charged once per pass. ``compute="gpu"``: the memory-bound GPU-class figure of the
    published shapes (``device_bytes_per_s``; embeddings and head left out).
    """
    d, f = model_config.d_model, model_config.d_expert
    dense = 2 * (4 * d * d + model_config.n_experts * d)
    if compute == "accelerator":
        a = accelerator_compute(model_config, acc, context)
        kw = dict(dense_time_s=a["dense_s"], expert_time_s=a["expert_s"],
                  pass_overhead_s=a["pass_s"], compute=a["label"],
                  draft_ratio=a["draft_ratio"]) | kw
    elif compute == "gpu":
        dev = kw.get("device_bytes_per_s", GPU_BYTES_PER_S)
        kw = dict(compute=f"assumed: memory-bound GPU-class device, {dev / 1e9:g} GB/s "
                          f"(bytes / bandwidth; head and embeddings left out)") | kw
    else:
        raise ValueError(f"compute must be 'accelerator' or 'gpu', not {compute!r}")
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
    """The bench keys of issue 5.

    The headline ``mobile_speedup_vs_lru`` (and ``mobile_speedup_<shape>``) compares like
    with like: MoBiLE **without prefetch** against big-only on-demand LRU, which has no
    prefetch either (``mobile_noprefetch_*`` are the same figures under their old names).
    ``mobile_prefetch_speedup_*`` put MoBiLE + prefetch against that same no-prefetch
    baseline (prefetch on one side only; big-only LRU has no predictor to prefetch with).
    ``mobile_hit_rate`` is the headline method's, ``mobile_prefetch_hit_rate`` the prefetch
    variant's. ``mobile_dense_layer_us``, ``mobile_expert_compute_us`` and
    ``mobile_layer_overhead_us`` are the tiny LM's compute inputs (see ``tiny.config.compute``).
    """
    m = tiny.methods
    p = tiny.evaluation.point(tiny.tau)
    c = tiny.config
    out = {"mobile_speedup_vs_lru": m["mobile"]["speedup_vs_lru"],
           "mobile_noprefetch_speedup_vs_lru": m["mobile"]["speedup_vs_lru"],
           "mobile_prefetch_speedup_vs_lru": m["mobile_prefetch"]["speedup_vs_lru"],
           "mobile_top1_agreement": p.top1_agreement,
           "mobile_nll_delta": p.nll_delta,
           "mobile_fallback_rate": p.fallback_rate,
           "mobile_hit_rate": m["mobile"]["hit_rate"],
           "mobile_prefetch_hit_rate": m["mobile_prefetch"]["hit_rate"],
           "lru_hit_rate": m["lru_big"]["hit_rate"],
           "mobile_tau": tiny.tau,
           "mobile_dense_layer_us": c.dense_s * 1e6,
           "mobile_expert_compute_us": c.expert_compute_s * 1e6,
           "mobile_layer_overhead_us": c.layer_overhead_s * 1e6}
    for key, st in shapes.items():
        out[f"mobile_speedup_{key}"] = st.methods["mobile"]["speedup_vs_lru"]
        out[f"mobile_noprefetch_speedup_{key}"] = st.methods["mobile"]["speedup_vs_lru"]
        out[f"mobile_prefetch_speedup_{key}"] = st.methods["mobile_prefetch"]["speedup_vs_lru"]
    return {k: float(v) for k, v in out.items()}


LAYER_OVERHEADS_S = (0.0, 1e-6, 2e-6, 5e-6, 10e-6, 20e-6)


def overhead_sensitivity(tiny: TinyStudy, overheads_s=LAYER_OVERHEADS_S) -> list[dict]:
    """Speedups over big-only LRU of the tiny LM's traces for extra per-layer overheads, with
    the study's compute side (``compute="study"``) and with the memory-bound GPU-class figure
    (``compute="gpu"``: no head, ``device_bytes_per_s``). Every fallback re-runs every layer,
    so a per-layer cost weighs on MoBiLE more than on the baseline."""
    gpu = replace(tiny.config, dense_time_s=None, expert_time_s=None, pass_overhead_s=0.0,
                  compute="assumed: memory-bound GPU-class device")
    rows = []
    for name, base in (("study", tiny.config), ("gpu", gpu)):
        for o in overheads_s:
            methods = compare_methods(tiny.traces, replace(base, layer_overhead_s=float(o)))
            rows.append({"compute": name, "layer_overhead_s": float(o),
                         "dense_s": replace(base, layer_overhead_s=float(o)).dense_s,
                         "speedup_mobile": methods["mobile"]["speedup_vs_lru"],
                         "speedup_mobile_prefetch": methods["mobile_prefetch"]["speedup_vs_lru"],
                         "lru_time_per_token_s": methods["lru_big"]["time_per_token_s"]})
    return rows


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
    out.append(f"  offloading (routing measured; link assumed): {c.slots} slots of "
               f"{c.expert_bytes} B experts, policy {c.policy}, "
               f"link {c.link_bytes_per_s / 1e9:g} GB/s, queue {c.queue_depth}; fills run to "
               f"completion in DMA order (the RTL's rule)")
    out.append(f"  compute: {c.compute}; layer overhead {c.layer_overhead_s * 1e6:g} us")
    out += format_methods(tiny.methods, "us")
    out.append(f"  headline (no prefetch on either side): MoBiLE "
               f"{tiny.methods['mobile']['speedup_vs_lru']:.2f}x over big-only LRU; with prefetch "
               f"on the MoBiLE side only {tiny.methods['mobile_prefetch']['speedup_vs_lru']:.2f}x")
    if shapes:
        r = next(iter(shapes.values())).routing
        out.append("")
        sc = next(iter(shapes.values())).config
        out.append(f"Published shapes, SYNTHETIC routing traces (zipf {r.zipf:g}, stickiness "
                   f"{r.stickiness:g}, fallback rate {r.fallback_rate:.3f} "
                   f"{'measured on the tiny LM at tau' if fallback_measured else 'assumed'}, "
                   f"cache {sc.policy}; compute {sc.compute}):")
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
        "compute": {"tiny": tiny.config.compute,
                    "shapes": {key: st.config.compute for key, st in shapes.items()}},
        "headline": "mobile_speedup_vs_lru: MoBiLE without prefetch vs big-only on-demand LRU "
                    "(no prefetch on either side); mobile_prefetch_speedup_vs_lru: MoBiLE + "
                    "prefetch vs the same baseline",
        "assumed": ["link 25 GB/s (PCIe 4.0 x16 effective) unless set",
                    "tiny LM compute: the accelerator's golden.perf cycle model (16 x 16 PEs, "
                    "clock 1 GHz and memory 410 GB/s assumed) unless set",
                    "published shapes: device 1008 GB/s memory-bound compute unless set",
                    "layer overhead 0 unless set (see the sensitivity table of the demo)",
                    "fills run to completion in the order they reach the DMA (the RTL's rule)",
                    "cache = cache_fraction of all routed experts, same for every method",
                    "published shapes: synthetic routing (SyntheticRouting)"],
    }


# -- SPEQ x MoBiLE: four methods on the same text and link (issue 13) -------------------------

SPEC_METHODS = ("lru_big", "mobile", "speq", "spec_mobile")
SPEC_LABELS = {"lru_big": "on-demand LRU, full precision (baseline)",
               "mobile": "MoBiLE (little + fallback)",
               "speq": "SPEQ offloaded (draft planes, all k)",
               "spec_mobile": "SPEQ x MoBiLE (draft planes, little set)"}
SPEC_ASSUMED = [
    "link 25 GB/s (PCIe 4.0 x16 effective) unless set; no link latency",
    "the same cache bytes for every method, held in quarter-expert plane units (a draft plane "
    "is one unit, a full expert four; LRU over units); LRU and MoBiLE use one cache, the "
    "speculative methods split it: draft planes in one part, the residual planes of one "
    "verify group (3k units) in the other, so residuals are streamed",
    "a full-precision expert needs both planes; a draft plane fetched for a draft is reused "
    "by the verify (the cache holds planes)",
    "a verify pass over g+1 tokens computes each expert of the union of their routes once "
    "per ceil((g+1)/4) weight passes (4 PE lanes), at most k experts pinned at a time",
    "a draft pass costs draft_ratio of a full pass's compute (tiny LM: the accelerator's "
    "cycle model; published shapes: 0.25, memory-bound); its dense parts and head the same, "
    "or a full pass's when the draft runs them at full precision",
    "no prefetch from a prediction in any method (like for like); fills run to completion in "
    "DMA order",
    "every prompt starts with a cold cache; prefill is not timed",
]


HOST_ASSUMED = {
    "blocking": "blocking host: the next request after a demand's response, a verify group's "
                "requests after the previous group has been computed",
    "nonblocking": "non-blocking host, the same for all four methods: a layer pass's requests "
                   "go out as soon as its router has run (a verify pass's router gives the "
                   "union of all its tokens' routes of that layer), hits are served under a "
                   "waiting miss (one waiting demand at a time, the controller's rule), each "
                   "expert is computed as soon as its planes are on chip and released right "
                   "after, so the next expert's fill takes its slot (at most k pinned); no demand "
                   "goes out before its layer's router has run",
}


def spec_assumed(host: str, overlap: bool | str = False) -> list[str]:
    """The assumptions of a four-way comparison with ``host`` (and ``overlap``: prefetch from
    predictions, :func:`study_spec_mobile`)."""
    out = list(SPEC_ASSUMED)
    if overlap:
        out = [a.replace("no prefetch from a prediction in any method (like for like)",
                         "prefetch from each method's predictions (LRU has none)") for a in out]
    return out + [HOST_ASSUMED[host]]


@dataclass
class SpecStudy:
    """The four-way comparison (:data:`SPEC_METHODS`) on the same text and link."""

    source: str
    config: OffloadConfig
    gamma: int
    tau: float
    tokens: int
    methods: dict[str, dict]
    speq_stats: dict[str, dict]
    routing: str = "measured (tiny LM on held-out prompts)"
    split: bool = True
    overlap: bool | str = False
    traces: dict[str, list] = field(repr=False, default_factory=dict)
    token_counts: list[int] = field(repr=False, default_factory=list)
    runs: dict[str, list] = field(repr=False, default_factory=dict)
    draft_dense: str = "full"


SPECULATIVE = ("speq", "spec_mobile")


def spec_lengths(model_config, prompt_len: int = 32, new_tokens: int = 96) -> dict:
    """``prompt_len`` and ``new_tokens`` of :func:`study_spec_mobile`, shrunk to a quarter and
    three quarters of the context for a model whose context is shorter than their sum (small
    stand-in models of the tests)."""
    if prompt_len + new_tokens > model_config.max_seq:
        prompt_len = max(2, model_config.max_seq // 4)
        new_tokens = model_config.max_seq - prompt_len
    return {"prompt_len": prompt_len, "new_tokens": new_tokens}


def split_config(cfg: OffloadConfig, top_k: int, experts: int | None = None) -> OffloadConfig:
    """The cache of the speculative methods (docs/spec_mobile.md, "Split plane cache"): the
    same bytes as ``cfg``, split into a draft-plane part and a residual part of at least
    ``3 * top_k`` units (the residual planes of one verify group of k experts, so residuals
    are streamed: fetched for a group, kept while it computes, the first evicted). With
    ``experts`` (the model's routed experts, layers x experts) the draft part holds at most
    one draft plane of each, and the rest of the bytes go to residuals: a cache with room for
    every draft plane keeps residuals too. Unchanged when the cache is too small for that
    split."""
    draft = cfg.slots * PLANE_UNITS - (PLANE_UNITS - 1) * top_k
    if experts is not None:
        draft = min(draft, experts)
    return replace(cfg, plane_cache=True, draft_units=draft) if draft > 0 else cfg


def _time_methods(traces: dict[str, list], token_counts: list[int], cfg: OffloadConfig,
                  agreement: dict[str, float], *, split_k: int | None = None) -> dict[str, dict]:
    """Simulate every method's traces (one per prompt, cold cache each) and sum them; with
    ``split_k`` the speculative methods use :func:`split_config` of ``cfg``."""
    out = {}
    n = sum(token_counts)
    for name, ts in traces.items():
        experts = ts[0].n_layers * ts[0].n_experts if ts else None
        c = split_config(cfg, split_k, experts) if split_k and name in SPECULATIVE else cfg
        rs = [simulate(t, c, tokens=k) for t, k in zip(ts, token_counts)]
        time_s = sum(r.time_s for r in rs)
        hits, misses = sum(r.hits for r in rs), sum(r.misses for r in rs)
        link = sum(r.bytes_transferred for r in rs)
        out[name] = {"time_s": time_s, "tokens": n, "time_per_token_s": time_s / n,
                     "link_bytes_per_token": link / n, "bytes_transferred": link,
                     "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
                     "stall_s": sum(r.stall_s for r in rs),
                     "top1_agreement": agreement[name], "draft_units": c.draft_units}
        compute_s = sum(r.compute_s for r in rs) / n
        dense_s = sum(r.dense_s for r in rs) / n
        link_s = link / n / c.link_bytes_per_s
        # lower bounds per token: the compute; the link, if every fill hid behind compute;
        # without prediction nothing is known during a dense part, so dense + link
        out[name] |= {"compute_per_token_s": compute_s, "dense_per_token_s": dense_s,
                      "link_per_token_s": link_s,
                      "bound_ideal_per_token_s": max(compute_s, link_s),
                      "bound_no_prediction_per_token_s": max(compute_s, dense_s + link_s)}
    base = out["lru_big"]["time_s"]
    for d in out.values():
        d["speedup_vs_lru"] = base / d["time_s"] if d["time_s"] else float("nan")
    return out


def _dense_kw(draft_dense: str) -> dict:
    """:class:`OffloadConfig` arguments for the draft's ``draft_dense`` option: a draft that
    runs its dense parts at full precision pays a full pass's dense compute."""
    from golden.spec_mobile import DRAFT_DENSE, check_choice

    check_choice("draft_dense", draft_dense, DRAFT_DENSE)
    return {"draft_dense_ratio": 1.0} if draft_dense == "full" else {}


def study_spec_mobile(model, source: str, *, n_prompts: int = 4, prompt_len: int = 32,
                      new_tokens: int = 96, gamma: int = 3, tau: float = DEFAULT_TAU,
                      cache_fraction: float = 0.25, spec: dict | None = None, progress=None,
                      split: bool = True, overlap: bool = False, host: str = "nonblocking",
                      **kw) -> SpecStudy:
    """Measured four-way comparison on the tiny LM (``kw`` go to :func:`tiny_config`).

    For each held-out prompt the full model's greedy continuation of ``new_tokens`` bytes is
    *the text*: on-demand LRU decodes it with big passes (one per token), MoBiLE is teacher-
    forced over it (its top-1 agreement is measured on it), SPEQ and the combination decode it
    speculatively (greedy verification; their top-1 agreement is the share of their emitted
    tokens equal to the text). ``spec`` holds extra arguments of
    :func:`golden.spec_mobile.generate` (``adaptive``, ``draft``, ``draft_router``,
    ``draft_dense``) for both speculative methods; with ``draft_dense="full"`` (the default of
    :func:`golden.spec_mobile.generate`: attention and LM head of the drafts at full FP16) a
    draft pass's dense parts and head cost a full pass's
    (:attr:`OffloadConfig.draft_dense_ratio`).
    ``split`` (default) gives the speculative methods the split plane
    cache (:func:`split_config`), ``overlap`` builds their traces with the draft's prefetches
    (:func:`golden.spec_mobile.build_trace`: ``True`` or ``"jit"``) and MoBiLE's with its own
    prefetches (the ranking after the little set, the next layer's guess); LRU has nothing to
    predict with. Both measured in docs/spec_mobile.md. ``host``
    (default ``"nonblocking"``, the same for all four methods) is :attr:`OffloadConfig.host`.
    """
    from golden import model as gm
    from golden import spec_mobile
    from golden.mobile import MobileConfig, MobileDecoder, build_trace as mobile_trace
    from golden.speq import SpeqStats, heldout_prompts

    say = progress or (lambda message: None)
    spec = dict(spec or {})
    spec.setdefault("draft_dense", spec_mobile.DEFAULT_DRAFT_DENSE)
    mc = model.config
    slots = max(mc.top_k, int(round(cache_fraction * mc.n_layers * mc.n_experts)))
    cfg = tiny_config(mc, slots, plane_cache=True, host=host,
                      **(_dense_kw(spec["draft_dense"]) | kw))
    dec = MobileDecoder(model, MobileConfig(tau=tau))
    traces: dict[str, list] = {m: [] for m in SPEC_METHODS}
    counts: list[int] = []
    runs: dict[str, list] = {"mobile": [], "speq": [], "spec_mobile": []}
    agree = {"lru_big": [], "mobile": [], "speq": [], "spec_mobile": []}
    stats = {"speq": SpeqStats(gamma, "greedy"), "spec_mobile": SpeqStats(gamma, "greedy")}
    meta = dict(source=source.replace("\n", " "), top_k=mc.top_k, little_k=dec.little_k,
                cache_slots=slots, policy=cfg.policy)
    for i, prompt in enumerate(heldout_prompts(n_prompts, prompt_len)):
        ref = gm.generate(model, prompt, new_tokens)
        text = np.frombuffer(prompt + ref, dtype=np.uint8).astype(np.int64)
        first = len(prompt) - 1          # the step whose output is the first generated byte
        big = dec.run(text[:-1], "big")
        mob = dec.run(text[:-1], "mobile")
        sl = slice(first, first + new_tokens)
        agree["lru_big"].append(np.argmax(big.logits[sl], axis=1) == text[first + 1:])
        agree["mobile"].append(np.argmax(mob.logits[sl], axis=1) == text[first + 1:])
        traces["lru_big"].append(mobile_trace(big.steps[sl], mc.n_layers, mc.n_experts,
                                              prefetch=False, next_layer=False,
                                              method="lru_big", **meta))
        runs["mobile"].append(mob.steps[sl])
        traces["mobile"].append(mobile_trace(mob.steps[sl], mc.n_layers, mc.n_experts,
                                             prefetch=bool(overlap), next_layer=bool(overlap),
                                             method="mobile", tau=tau, **meta))
        for name, experts in (("speq", "all"), ("spec_mobile", "little")):
            r = spec_mobile.generate(model, prompt, new_tokens, gamma=gamma,
                                     draft_experts=experts, **spec)
            agree[name].append(np.frombuffer(r.bytes, np.uint8) == np.frombuffer(ref, np.uint8))
            stats[name] = stats[name].merge(r.stats)
            runs[name].append(r)
            traces[name].append(spec_mobile.build_trace(r, mc.n_layers, mc.n_experts,
                                                        overlap=overlap, method=name,
                                                        gamma=gamma, **meta))
        counts.append(new_tokens)
        say(f"prompt {i + 1}/{n_prompts}: MoBiLE agreement "
            f"{float(np.mean(agree['mobile'][-1])):.3f}, SPEQ x MoBiLE acceptance "
            f"{stats['spec_mobile'].token_acceptance:.3f} so far")
    agreement = {m: float(np.mean(np.concatenate(a))) for m, a in agree.items()}
    methods = _time_methods(traces, counts, cfg, agreement,
                            split_k=mc.top_k if split else None)
    st = {name: s.as_dict() for name, s in stats.items()}
    return SpecStudy(source, cfg, gamma, float(tau), sum(counts), methods, st, split=split,
                     overlap=overlap, traces=traces, token_counts=counts, runs=runs,
                     draft_dense=spec["draft_dense"])


def spec_cache_sweep(study: SpecStudy, slots=None) -> list[dict]:
    """Time per token of the four methods for several cache sizes (same traces)."""
    k = int(next(iter(study.traces["lru_big"])).meta.get("top_k", 1))
    n_layers = next(iter(study.traces["lru_big"])).n_layers
    n_experts = next(iter(study.traces["lru_big"])).n_experts
    total = n_layers * n_experts
    slots = slots or sorted({max(k, int(round(f * total)))
                             for f in (0.0625, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0)})
    rows = []
    agreement = {m: d["top1_agreement"] for m, d in study.methods.items()}
    for n in slots:
        methods = _time_methods(study.traces, study.token_counts,
                                replace(study.config, slots=int(n)), agreement,
                                split_k=k if study.split else None)
        rows.append({"slots": int(n), "fraction": n / total,
                     **{f"{m}_time_per_token_s": methods[m]["time_per_token_s"]
                        for m in SPEC_METHODS}})
    return rows


def synthetic_spec_steps(rankings: np.ndarray, little_k: int, gamma: int, alpha: float,
                         rng: np.random.Generator):
    """SPEQ x MoBiLE and SPEQ steps over SYNTHETIC rankings: a step at position ``p`` drafts
    ``g`` tokens whose routes are the rankings of tokens ``p .. p+g-1`` (little set, or all k),
    verifies ``p .. p+g`` (the union of their top-k) and accepts each draft with probability
    ``alpha`` (i.i.d.) up to the first rejection; returns ``(little result, all result)`` as
    :class:`golden.spec_mobile.SpecMobileResult` objects for :func:`build_trace`."""
    from golden.spec_mobile import SpecMobileResult, StepRecord
    from golden.speq import SpeqStats

    tokens, n_layers, k = rankings.shape
    out = []
    plan = []
    p = 0
    while p < tokens:
        g = min(gamma, tokens - p - 1)
        acc = 0
        while acc < g and rng.random() < alpha:
            acc += 1
        plan.append((p, g, acc))
        p += acc + 1
    for kl in (little_k, k):
        res = SpecMobileResult(b"", np.zeros(0, np.int64), SpeqStats(gamma, "greedy"),
                               [], kl, k)
        for p, g, acc in plan:
            drafts = [PassStep("draft", [LayerStep(l, tuple(map(int, rankings[p + i, l, :kl])))
                                         for l in range(n_layers)]) for i in range(g)]
            verify = [PassStep("verify", [LayerStep(l, tuple(map(int, rankings[p + i, l])), big=True)
                                          for l in range(n_layers)]) for i in range(g + 1)]
            res.steps.append(StepRecord(p, drafts, verify, acc, acc + 1))
        out.append(res)
    return out[0], out[1]


def study_spec_shape(shape: MoeShape, *, tokens: int = 64, gamma: int = 3, alpha: float,
                     mobile_agreement: float, routing: SyntheticRouting = SyntheticRouting(),
                     cache_fraction: float = 0.25, split: bool = True,
                     host: str = "nonblocking", draft_dense: str = "full", **kw) -> dict:
    """The four-way comparison on a published shape with SYNTHETIC routing; the combination's
    acceptance ``alpha`` (i.i.d.) and MoBiLE's agreement come from the tiny LM (measured
    there, assumed here). ``draft_dense="full"`` (default, as in :func:`study_spec_mobile`):
    the drafts' dense parts and head cost a full pass's; ``"draft"``: ``draft_ratio`` of it."""
    from golden.spec_mobile import build_trace as spec_trace

    dense_kw = _dense_kw(draft_dense)
    little_k = little_k_for(shape.top_k)
    ranks = routing.rankings(shape.moe_layers, shape.n_experts, shape.top_k, tokens)
    big, _, mobile = synthetic_steps(ranks, routing.fallbacks(tokens), little_k)
    rng = np.random.default_rng(routing.seed + 2)
    comb, full = synthetic_spec_steps(ranks, little_k, gamma, alpha, rng)
    meta = dict(source=f"synthetic routing for {shape.name}", top_k=shape.top_k)
    traces = {"lru_big": [build_trace(big, shape.moe_layers, shape.n_experts, prefetch=False,
                                      next_layer=False, **meta)],
              "mobile": [build_trace(mobile, shape.moe_layers, shape.n_experts, prefetch=False,
                                     next_layer=False, **meta)],
              "speq": [spec_trace(full, shape.moe_layers, shape.n_experts, **meta)],
              "spec_mobile": [spec_trace(comb, shape.moe_layers, shape.n_experts, **meta)]}
    cfg = shape_config(shape, cache_fraction, plane_cache=True, host=host,
                       **(dense_kw | kw))
    agreement = {"lru_big": 1.0, "mobile": mobile_agreement, "speq": 1.0, "spec_mobile": 1.0}
    return {"name": shape.name, "routing": "SYNTHETIC", "alpha_assumed": alpha,
            "slots": cfg.slots, "offload_config": asdict(cfg),
            "methods": _time_methods(traces, [tokens], cfg, agreement,
                                     split_k=shape.top_k if split else None)}


def spec_report_lines(study: SpecStudy, shapes: dict[str, dict] | None = None) -> list[str]:
    """The four-way table (printed by ``speqmoe spec-mobile``, used by the demo)."""
    c = study.config
    s = study.speq_stats["spec_mobile"]
    out = [f"SPEQ x MoBiLE on the tiny LM: {study.source}",
           f"  the same text for every method: {study.tokens} greedy bytes of the full model "
           f"after held-out prompts; gamma {study.gamma}, MoBiLE tau {study.tau:g}",
           f"  cache {c.slots} expert slots ({c.slots * PLANE_UNITS} quarter-expert plane units,"
           f" {c.policy}"
           + (f"; speculative methods: {study.methods['spec_mobile']['draft_units']} for "
              f"draft planes, the rest for residuals" if study.split else "")
           + f"), link {c.link_bytes_per_s / 1e9:g} GB/s; compute: {c.compute}; "
           f"draft pass {c.draft_ratio:.2f} of a full pass's compute"
           + (f" (dense parts and head {c.dense_draft_ratio:.2f})"
              if c.draft_dense_ratio is not None else ""),
           f"  {'method':42s} {'us/token':>9s} {'KB/token':>9s} {'top-1 agr':>9s} "
           f"{'speedup':>8s}"]
    for name in SPEC_METHODS:
        d = study.methods[name]
        out.append(f"  {SPEC_LABELS[name]:42s} {d['time_per_token_s'] * 1e6:9.3f} "
                   f"{d['link_bytes_per_token'] / 1e3:9.1f} {d['top1_agreement']:9.3f} "
                   f"{d['speedup_vs_lru']:7.2f}x")
    out.append(f"  SPEQ x MoBiLE: acceptance {s['token_acceptance']:.3f} per checked draft "
               f"token, {s['tokens_per_step']:.2f} tokens per verify pass, "
               f"{s['generated'] / max(s['draft_passes'], 1):.2f} tokens per draft pass; "
               f"dense parts of the draft: {study.draft_dense}")
    out.append(f"  {c.host} host, " + (
        f"prefetch from predictions ({'just in time' if study.overlap == 'jit' else 'a step ahead'}"
        f" for the speculative methods, MoBiLE's own for MoBiLE, none for LRU)"
        if study.overlap else "no prefetch from predictions")
        + "; lower bounds in us/token, without prediction (max(compute, dense parts + link)) / "
        "with any prediction (max(compute, link)): " + ", ".join(
                   f"{n} {study.methods[n]['bound_no_prediction_per_token_s'] * 1e6:.1f} / "
                   f"{study.methods[n]['bound_ideal_per_token_s'] * 1e6:.1f}"
                   for n in SPEC_METHODS))
    if shapes:
        out.append("")
        out.append("Published shapes, SYNTHETIC routing (acceptance and MoBiLE agreement taken "
                   "from the tiny LM; compute memory-bound, assumed):")
        out.append(f"  {'model':20s} {'LRU ms/tok':>11s} " + " ".join(
            f"{m:>12s}" for m in SPEC_METHODS[1:]) + "   (speedup vs LRU; MB/token)")
        for st in shapes.values():
            m = st["methods"]
            out.append(f"  {st['name']:20s} {m['lru_big']['time_per_token_s'] * 1e3:11.2f} "
                       + " ".join(f"{m[n]['speedup_vs_lru']:5.2f}x {m[n]['link_bytes_per_token'] / 1e6:5.0f}"
                                  for n in SPEC_METHODS[1:]))
    out.append("Assumptions: " + "; ".join(spec_assumed(c.host, study.overlap)) + ".")
    return out


def spec_study_json(study: SpecStudy, shapes: dict[str, dict] | None = None) -> dict:
    return {"source": study.source, "routing": study.routing, "gamma": study.gamma,
            "tau": study.tau, "tokens": study.tokens, "offload_config": asdict(study.config),
            "split_plane_cache": study.split, "host": study.config.host,
            "prefetch_from_predictions": study.overlap, "draft_dense": study.draft_dense,
            "methods": study.methods, "speculative_stats": study.speq_stats,
            "labels": SPEC_LABELS, "assumed": spec_assumed(study.config.host, study.overlap),
            "shapes": shapes or {}}


def spec_bench_values(study: SpecStudy) -> dict:
    """Bench keys of issue 13 (section ``mobile``): ``specmoe_speedup_vs_lru``,
    ``specmoe_top1_agreement`` and ``specmoe_link_bytes_per_token_<method>`` for the four
    methods, plus the combination's acceptance and tokens per draft pass, and its speedup
    bounds (LRU's time over the combination's lower bounds without and with prediction)."""
    m = study.methods
    s = study.speq_stats["spec_mobile"]
    out = {"specmoe_speedup_vs_lru": m["spec_mobile"]["speedup_vs_lru"],
           "specmoe_top1_agreement": m["spec_mobile"]["top1_agreement"],
           "specmoe_speq_speedup_vs_lru": m["speq"]["speedup_vs_lru"],
           "specmoe_mobile_speedup_vs_lru": m["mobile"]["speedup_vs_lru"],
           "specmoe_acceptance": s["token_acceptance"],
           "specmoe_tokens_per_draft_pass": s["generated"] / max(s["draft_passes"], 1),
           # the combination's lower bounds as speedups over LRU's time (docs/spec_mobile.md)
           "specmoe_speedup_bound_no_prediction": m["lru_big"]["time_per_token_s"]
           / m["spec_mobile"]["bound_no_prediction_per_token_s"],
           "specmoe_speedup_bound_ideal": m["lru_big"]["time_per_token_s"]
           / m["spec_mobile"]["bound_ideal_per_token_s"]}
    for name in SPEC_METHODS:
        out[f"specmoe_link_bytes_per_token_{name}"] = m[name]["link_bytes_per_token"]
    return {k: float(v) for k, v in out.items()}
