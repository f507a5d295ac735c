"""Transaction-level model of the expert-cache DMA controller (docs/expert_cache.md).

This model is the reference the RTL controller (``hw.expert_cache``) is checked
against, so every rule below is exact and has a test named after it in
``tests/test_expert_cache.py``.

Slots
-----
Each of the ``slots`` slots is in one of three states: ``INVALID``, ``FILLING``
(a fill is in flight) or ``VALID``. A slot that is ``FILLING`` or ``VALID`` holds
a tag ``(layer, expert)``; no two slots ever hold the same tag. Each slot also has
a pin count (``0 .. max_pins``), an LFU use count (``0 .. lfu_max``, saturating)
and a *prefetched* flag (filled by a prefetch and not yet demanded).

Rules
-----
Demand ``access(layer, expert, "demand")``:

1. **Hit** (tag in a ``VALID`` slot): pin count + 1, the slot becomes most
   recently used, LFU count + 1. If the slot's prefetched flag is set the prefetch
   was *useful*: counted, flag cleared.
2. **Hit in flight** (tag in a ``FILLING`` slot, only outside lockstep mode): the
   demand waits for the fill. Prefetch fills complete in queue (FIFO) order, so
   the model completes the queue up to and including that fill, then proceeds as
   a hit (``hit=True``, ``in_flight=True``). If that fill fails, the response has
   ``error=True`` and nothing is pinned.
3. **Pin limit**: a hit on a slot already pinned ``max_pins`` times would wait
   (``reason="wait_pin_limit"``); nothing changes.
4. **Miss**: the slot taken is the *lowest-index* ``INVALID`` slot; if there is
   none, the policy's victim among ``VALID`` slots with pin count 0 (``FILLING``
   slots are never taken). Taking a ``VALID`` slot is an eviction (counted,
   reported as ``victim``). The demand fill completes before ``access`` returns
   (demand has priority on the bus): the slot becomes ``VALID``, pinned once, most
   recently used (and, for FIFO, newest), LFU count 1, prefetched flag clear.
   ``bytes_read`` grows by ``expert_bytes`` per fill started, whether or not it fails (the
   DMA reads every burst of a fill even after an error response).
5. **Would wait** (miss, no slot can be taken): the result has ``waited=True``
   (``reason="wait_no_slot"``), ``demand_waits`` is counted and nothing else
   changes. A pinned slot is never evicted.

Prefetch ``access(layer, expert, "prefetch")`` is checked in this order and is
*dropped*, changing nothing but the ``prefetches_dropped`` counter (recency, LFU
counts and FIFO order included), if the tag is ``VALID`` (``"resident"``), the
tag is ``FILLING`` (``"in_flight"``), the queue holds ``queue_depth`` fills
(``"queue_full"``), or no slot can be taken as in rule 4 (``"no_slot"``).
Otherwise it is *issued*: the slot is taken exactly as in rule 4 (eviction
included), becomes ``FILLING`` with the new tag, most recently used (and newest
for FIFO), LFU count 0, prefetched flag set, and the fill enters the prefetch
queue. In lockstep mode the fill completes before ``access`` returns; otherwise it
completes on :meth:`ExpertCacheModel.complete_prefetches` (FIFO order) or when a
demand needs it (rule 2).

Release ``release(slot)``: pin count - 1. A release of a slot whose pin count is
0 is a *bad release*: ``bad_releases`` is counted, nothing else changes, and
:class:`BadReleaseError` (a ``ValueError``) is raised.

Failed fills (error injection, an AXI ``RRESP`` error in the RTL): the slot goes
``INVALID`` (tag dropped, pins 0, prefetched flag clear), ``errors`` is counted.
A demand whose fill failed gets ``error=True`` and no pin (there is nothing to
release). Nothing stale is ever left valid.

Replacement policies (victims only among ``VALID`` unpinned slots)
------------------------------------------------------------------
Every policy is a total order, so there are no ties left to break:

- ``lru``: the least recently *touched* slot, where a touch is the allocation of
  a slot for a fill (demand or issued prefetch) or a demand hit. The model keeps
  the slots in a recency list (an age matrix in RTL).
- ``fifo``: the slot *allocated* longest ago (hits do not reorder).
- ``lfu``: the least LFU count; ties by LRU order (the least recently touched).

The recency and FIFO lists start as slot 0 (oldest) .. slot S-1 (newest).
Invalid slots are always taken lowest index first, before any eviction.

Counters map to the RTL's as named, except ``demand_waits``: the number of demands that
would wait (the RTL counts demand stall *cycles* instead); ``demands`` and ``prefetches``
count requests.

Lockstep mode (the default) is the RTL testbench's lockstep traffic: the next
request is sent only after the previous one has finished (a demand's response has
arrived; a prefetch's fill has completed or it was dropped). In that mode the
model predicts hit/miss, slot, victim and counters exactly.

Deferred mode (``lockstep=False, deferred=True``) follows the RTL event by event, as
an overlapping-traffic testbench observes it (``sim.cache_flow.run_events``): a demand
that misses or hits in flight does not complete inside :meth:`access`; it becomes the
*waiting demand* (``pending=True``) until :meth:`complete_fill` of its slot returns its
response. Fills complete only on :meth:`complete_fill`, in the order the caller saw
them (prefetch fills in queue order; a demand fill may pass queued prefetch fills).
**Hit under miss**: while a demand waits, releases, prefetches and demand hits on
``VALID`` slots are served as usual; any other demand (a second miss, a hit in flight)
waits (``reason="wait_demand"``) until the waiting demand's fill has completed.
:meth:`demand_wait_reason` tells whether a demand would be served now, and
:meth:`count_stall` counts ``demand_stall_cycles`` (every cycle a demand is offered and
not accepted, as the RTL counts it; the caller decides which cycles those are).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from typing import Iterable

import numpy as np

INVALID, FILLING, VALID = "invalid", "filling", "valid"
POLICIES = ("lru", "fifo", "lfu")
KINDS = ("demand", "prefetch")


class BadReleaseError(ValueError):
    """A release of a slot that is not pinned (counted as ``bad_releases``; state unchanged)."""


@dataclass(frozen=True)
class AccessResult:
    """What one request did.

    ``hit``: the tag was present (``VALID``, or ``FILLING`` with ``in_flight``).
    ``slot``: the slot holding (or that would have held) the expert; ``None`` when
    dropped or waiting. ``victim``: the ``(layer, expert)`` evicted, or ``None``.
    ``dropped``: a prefetch that was dropped. ``waited``: a demand that would wait
    (backpressure) and changed nothing. ``error``: the fill this request waited for
    failed. ``reason``: one of ``hit``, ``hit_in_flight``, ``miss``,
    ``wait_no_slot``, ``wait_pin_limit`` (demand) or ``issued``, ``resident``,
    ``in_flight``, ``queue_full``, ``no_slot`` (prefetch).
    """

    kind: str
    layer: int
    expert: int
    hit: bool
    slot: int | None
    victim: tuple[int, int] | None
    dropped: bool
    waited: bool
    error: bool
    in_flight: bool
    reason: str
    pending: bool = False     # deferred mode: waits for its fill (see complete_fill)


@dataclass
class CacheCounters:
    """Event counters (docs/expert_cache.md).

    Invariants checked by :meth:`ExpertCacheModel.check_invariants`:
    ``demands == hits + misses + demand_waits``, ``prefetches == prefetches_issued +
    prefetches_dropped``, ``bytes_read == (misses + prefetches_issued) * expert_bytes``."""

    demands: int = 0
    prefetches: int = 0
    hits: int = 0
    hits_in_flight: int = 0
    misses: int = 0
    demand_waits: int = 0
    prefetches_issued: int = 0
    prefetches_dropped: int = 0
    prefetches_useful: int = 0
    evictions: int = 0
    bytes_read: int = 0
    errors: int = 0
    releases: int = 0
    bad_releases: int = 0
    demand_stall_cycles: int = 0     # only counted through count_stall (deferred mode)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def hit_rate(self) -> float:
        served = self.hits + self.misses
        return self.hits / served if served else 0.0


@dataclass(frozen=True)
class SlotState:
    state: str
    tag: tuple[int, int] | None
    pins: int
    use_count: int
    prefetched: bool


@dataclass
class _Slot:
    state: str = INVALID
    tag: tuple[int, int] | None = None
    pins: int = 0
    use_count: int = 0
    prefetched: bool = False
    fail: bool = field(default=False, repr=False)   # the fill in flight will fail


class ExpertCacheModel:
    """Expert cache of ``slots`` slots with pinning, a prefetch queue and a replacement policy.

    Parameters
    ----------
    slots : int
        Number of expert slots, >= 1.
    policy : str
        ``"lru"`` (default), ``"fifo"`` or ``"lfu"``.
    queue_depth : int
        Prefetch fills that may be in flight at once, >= 0 (0 drops every prefetch).
    expert_bytes : int
        Bytes per expert (``bytes_read`` grows by this per fill), >= 1.
    n_layers, n_experts : int or None
        If given, requests are range-checked and :meth:`host_address` works.
    lockstep : bool
        Prefetch fills complete before :meth:`access` returns (see module docstring).
    max_pins : int
        Pin counter limit (RTL counter width), >= 1.
    lfu_max : int
        LFU use counter saturation value, >= 1.
    """

    def __init__(self, slots: int, policy: str = "lru", *, queue_depth: int = 4,
                 expert_bytes: int = 1, n_layers: int | None = None,
                 n_experts: int | None = None, lockstep: bool = True,
                 max_pins: int = 15, lfu_max: int = 255, deferred: bool = False):
        if deferred and lockstep:
            raise ValueError("deferred mode needs lockstep=False")
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise ValueError(f"slots must be a positive integer, not {slots!r}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        if not isinstance(queue_depth, int) or queue_depth < 0:
            raise ValueError(f"queue_depth must be a non-negative integer, not {queue_depth!r}")
        if not isinstance(expert_bytes, int) or expert_bytes < 1:
            raise ValueError(f"expert_bytes must be a positive integer, not {expert_bytes!r}")
        for name, value in (("n_layers", n_layers), ("n_experts", n_experts)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
        if not isinstance(max_pins, int) or max_pins < 1:
            raise ValueError(f"max_pins must be a positive integer, not {max_pins!r}")
        if not isinstance(lfu_max, int) or lfu_max < 1:
            raise ValueError(f"lfu_max must be a positive integer, not {lfu_max!r}")
        self._slots = slots
        self._policy = policy
        self._queue_depth = queue_depth
        self._expert_bytes = expert_bytes
        self._n_layers = n_layers
        self._n_experts = n_experts
        self._lockstep = bool(lockstep)
        self._deferred = bool(deferred)
        self._waiting: tuple[int, tuple[int, int], bool] | None = None   # slot, tag, hit
        self._max_pins = max_pins
        self._lfu_max = lfu_max
        self._s = [_Slot() for _ in range(slots)]
        self._where: dict[tuple[int, int], int] = {}
        self._recency = OrderedDict.fromkeys(range(slots))   # least recently touched first
        self._fifo = OrderedDict.fromkeys(range(slots))      # allocated longest ago first
        self._n_invalid = slots
        self._queue: deque[int] = deque()       # slots with a prefetch fill in flight, FIFO
        self._fail_tags: set[tuple[int, int]] = set()
        self._fail_next = 0
        self.counters = CacheCounters()

    # -- parameters ---------------------------------------------------------
    slots = property(lambda self: self._slots)
    policy = property(lambda self: self._policy)
    queue_depth = property(lambda self: self._queue_depth)
    expert_bytes = property(lambda self: self._expert_bytes)
    lockstep = property(lambda self: self._lockstep)
    deferred = property(lambda self: self._deferred)
    max_pins = property(lambda self: self._max_pins)
    lfu_max = property(lambda self: self._lfu_max)

    # -- inspection ---------------------------------------------------------
    def slot_state(self, slot: int) -> SlotState:
        s = self._s[self._check_slot(slot)]
        return SlotState(s.state, s.tag, s.pins, s.use_count, s.prefetched)

    def lookup(self, layer: int, expert: int) -> int | None:
        """The slot holding (or filling) ``(layer, expert)``, else ``None``."""
        return self._where.get((layer, expert))

    def resident(self) -> dict[tuple[int, int], int]:
        """``{(layer, expert): slot}`` of the ``VALID`` slots."""
        return {t: i for t, i in self._where.items() if self._s[i].state == VALID}

    def recency_order(self) -> list[int]:
        """Slots from least to most recently touched."""
        return list(self._recency)

    def fifo_order(self) -> list[int]:
        """Slots from allocated longest ago to newest."""
        return list(self._fifo)

    def waiting_demand(self) -> int | None:
        """Deferred mode: the slot whose fill the waiting demand needs, else ``None``."""
        return None if self._waiting is None else self._waiting[0]

    def demand_wait_reason(self, layer: int, expert: int) -> str | None:
        """Why a demand of ``(layer, expert)`` would wait now (``wait_pin_limit``,
        ``wait_demand``, ``wait_no_slot``), or ``None`` if it would be served. Changes nothing."""
        tag = self._check_tag(layer, expert)
        slot = self._where.get(tag)
        if slot is not None and self._s[slot].state == VALID:
            return "wait_pin_limit" if self._s[slot].pins >= self._max_pins else None
        if self._waiting is not None:
            return "wait_demand"
        if slot is not None:
            return "wait_pin_limit" if self._s[slot].pins >= self._max_pins else None
        return "wait_no_slot" if self._victim() is None else None

    def count_stall(self, cycles: int = 1) -> None:
        """Count ``cycles`` cycles in which a demand was offered and not accepted."""
        self.counters.demand_stall_cycles += cycles

    def complete_fill(self, slot: int) -> AccessResult | None:
        """Deferred mode: the fill of ``slot`` completes (its ``RRESP`` decides success).

        ``slot`` must be the waiting demand's fill or the oldest queued prefetch fill.
        Returns the waiting demand's response if it was waiting for this fill, else ``None``.
        """
        if not self._deferred:
            raise ValueError("complete_fill is for deferred mode")
        slot = self._check_slot(slot)
        if self._s[slot].state != FILLING:
            raise ValueError(f"slot {slot} has no fill in flight")
        waiting = self._waiting is not None and self._waiting[0] == slot
        if slot in self._queue:
            if self._queue[0] != slot:
                raise ValueError(f"prefetch fill of slot {slot} completes before the older "
                                 f"one of slot {self._queue[0]}")
            self._queue.popleft()
        elif not waiting:
            raise ValueError(f"slot {slot} is filling for no request")
        ok = self._finish_fill(slot)
        if not waiting:
            return None
        _, tag, hit = self._waiting
        self._waiting = None
        if not ok:
            return self._result("demand", tag, hit=hit, slot=slot, error=True, in_flight=hit,
                                reason="hit_in_flight" if hit else "miss")
        s = self._s[slot]
        self._touch(slot)
        s.pins += 1
        if hit:
            s.use_count = min(s.use_count + 1, self._lfu_max)
        else:
            s.use_count = 1
        if s.prefetched:
            self.counters.prefetches_useful += 1
            s.prefetched = False
        return self._result("demand", tag, hit=hit, slot=slot, in_flight=hit,
                            reason="hit_in_flight" if hit else "miss")

    def pending_prefetches(self) -> list[int]:
        """Slots whose prefetch fill is in flight, in completion (FIFO) order."""
        return list(self._queue)

    def host_address(self, layer: int, expert: int, base_addr: int = 0) -> int:
        """``base_addr + (layer * E + expert) * expert_bytes`` (docs/expert_cache.md)."""
        if self._n_experts is None:
            raise ValueError("host_address needs n_experts")
        self._check_tag(layer, expert)
        return base_addr + (layer * self._n_experts + expert) * self._expert_bytes

    # -- error injection ----------------------------------------------------
    def inject_error(self, layer: int, expert: int) -> None:
        """Every later fill of ``(layer, expert)`` fails (like an ``RRESP`` error on its range)."""
        self._fail_tags.add(self._check_tag(layer, expert))

    def clear_errors(self) -> None:
        self._fail_tags.clear()
        self._fail_next = 0

    def fail_next_fills(self, n: int = 1) -> None:
        """The next ``n`` fills started (demand or prefetch) fail."""
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n!r}")
        self._fail_next += n

    # -- requests -----------------------------------------------------------
    def access(self, layer: int, expert: int, kind: str = "demand") -> AccessResult:
        """One request; see the module docstring for the rules."""
        tag = self._check_tag(layer, expert)
        if kind == "demand":
            return self._demand(tag)
        if kind == "prefetch":
            return self._prefetch(tag)
        raise ValueError(f"kind must be 'demand' or 'prefetch', not {kind!r}")

    def release(self, slot: int) -> None:
        """Unpin ``slot`` once. Raises :class:`BadReleaseError` (after counting it) if unpinned."""
        s = self._s[self._check_slot(slot)]
        if s.pins == 0:
            self.counters.bad_releases += 1
            raise BadReleaseError(f"release of slot {slot}, which is not pinned")
        s.pins -= 1
        self.counters.releases += 1

    def complete_prefetches(self, n: int | None = None) -> list[tuple[int, bool]]:
        """Complete the oldest ``n`` (default all) in-flight prefetch fills.

        Returns ``[(slot, ok), ...]`` in completion order.
        """
        done = []
        count = len(self._queue) if n is None else min(n, len(self._queue))
        for _ in range(count):
            slot = self._queue.popleft()
            done.append((slot, self._finish_fill(slot)))
        return done

    # -- internals ----------------------------------------------------------
    def _check_slot(self, slot) -> int:
        if not isinstance(slot, (int, np.integer)) or isinstance(slot, bool) \
                or not 0 <= slot < self._slots:
            raise ValueError(f"slot must be an integer in 0..{self._slots - 1}, not {slot!r}")
        return int(slot)

    def _check_tag(self, layer, expert) -> tuple[int, int]:
        try:
            layer_i, expert_i = int(layer), int(expert)
        except (TypeError, ValueError):
            raise ValueError(f"layer and expert must be integers, "
                             f"not {layer!r}, {expert!r}") from None
        if layer_i != layer or expert_i != expert or layer_i < 0 or expert_i < 0:
            raise ValueError(f"layer and expert must be non-negative integers, "
                             f"not {layer!r}, {expert!r}")
        if self._n_layers is not None and layer_i >= self._n_layers:
            raise ValueError(f"layer {layer_i} out of range 0..{self._n_layers - 1}")
        if self._n_experts is not None and expert_i >= self._n_experts:
            raise ValueError(f"expert {expert_i} out of range 0..{self._n_experts - 1}")
        return (layer_i, expert_i)

    def _touch(self, slot: int) -> None:
        self._recency.move_to_end(slot)

    def _victim(self) -> int | None:
        """The slot a miss takes: lowest-index invalid, else the policy's victim, else None."""
        if self._n_invalid:
            for i, s in enumerate(self._s):
                if s.state == INVALID:
                    return i
        order = self._fifo if self._policy == "fifo" else self._recency
        best = None
        for i in order:
            s = self._s[i]
            if s.state != VALID or s.pins:
                continue
            if self._policy != "lfu":
                return i
            if best is None or s.use_count < self._s[best].use_count:
                best = i
        return best

    def _allocate(self, slot: int, tag: tuple[int, int]) -> tuple[int, int] | None:
        s = self._s[slot]
        victim = None
        if s.state == INVALID:
            self._n_invalid -= 1
        if s.state == VALID:
            victim = s.tag
            del self._where[s.tag]
            self.counters.evictions += 1
        s.state, s.tag, s.pins, s.prefetched = FILLING, tag, 0, False
        s.fail = tag in self._fail_tags or self._fail_next > 0
        if self._fail_next > 0:
            self._fail_next -= 1
        self._where[tag] = slot
        self._touch(slot)
        self._fifo.move_to_end(slot)
        self.counters.bytes_read += self._expert_bytes
        return victim

    def _finish_fill(self, slot: int) -> bool:
        s = self._s[slot]
        if s.fail:
            self.counters.errors += 1
            self._n_invalid += 1
            del self._where[s.tag]
            s.state, s.tag, s.pins, s.use_count = INVALID, None, 0, 0
            s.prefetched = s.fail = False
            return False
        s.state = VALID
        return True

    def _result(self, kind, tag, **kw) -> AccessResult:
        base = dict(hit=False, slot=None, victim=None, dropped=False, waited=False,
                    error=False, in_flight=False)
        base.update(kw)
        return AccessResult(kind=kind, layer=tag[0], expert=tag[1], **base)

    def _demand(self, tag) -> AccessResult:
        c = self.counters
        c.demands += 1
        slot = self._where.get(tag)
        if self._waiting is not None and (slot is None or self._s[slot].state != VALID):
            c.demand_waits += 1
            return self._result("demand", tag, waited=True, reason="wait_demand")
        if slot is not None:
            s = self._s[slot]
            if s.pins >= self._max_pins:
                c.demand_waits += 1
                return self._result("demand", tag, waited=True, reason="wait_pin_limit")
            in_flight = s.state == FILLING
            c.hits += 1
            if in_flight and self._deferred:
                c.hits_in_flight += 1
                self._waiting = (slot, tag, True)
                return self._result("demand", tag, hit=True, slot=slot, in_flight=True,
                                    pending=True, reason="hit_in_flight")
            if in_flight:
                c.hits_in_flight += 1
                ok = True
                while self._queue:
                    done = self._queue.popleft()
                    result = self._finish_fill(done)
                    if done == slot:
                        ok = result
                        break
                if not ok:
                    return self._result("demand", tag, hit=True, slot=slot, error=True,
                                        in_flight=True, reason="hit_in_flight")
            self._touch(slot)
            s.pins += 1
            s.use_count = min(s.use_count + 1, self._lfu_max)
            if s.prefetched:
                c.prefetches_useful += 1
                s.prefetched = False
            return self._result("demand", tag, hit=True, slot=slot, in_flight=in_flight,
                                reason="hit_in_flight" if in_flight else "hit")
        slot = self._victim()
        if slot is None:
            c.demand_waits += 1
            return self._result("demand", tag, waited=True, reason="wait_no_slot")
        c.misses += 1
        victim = self._allocate(slot, tag)
        if self._deferred:
            self._waiting = (slot, tag, False)
            return self._result("demand", tag, slot=slot, victim=victim, pending=True,
                                reason="miss")
        if not self._finish_fill(slot):
            return self._result("demand", tag, slot=slot, victim=victim, error=True, reason="miss")
        s = self._s[slot]
        s.pins = 1
        s.use_count = 1
        return self._result("demand", tag, slot=slot, victim=victim, reason="miss")

    def _prefetch(self, tag) -> AccessResult:
        c = self.counters
        c.prefetches += 1
        slot = self._where.get(tag)
        reason = None
        if slot is not None:
            reason = "resident" if self._s[slot].state == VALID else "in_flight"
        elif len(self._queue) >= self._queue_depth:
            reason = "queue_full"
        else:
            slot = self._victim()
            if slot is None:
                reason = "no_slot"
        if reason is not None:
            c.prefetches_dropped += 1
            return self._result("prefetch", tag, dropped=True, reason=reason)
        c.prefetches_issued += 1
        victim = self._allocate(slot, tag)
        s = self._s[slot]
        s.use_count = 0
        s.prefetched = True
        self._queue.append(slot)
        error = False
        if self._lockstep:
            self._queue.pop()
            error = not self._finish_fill(slot)
        return self._result("prefetch", tag, slot=slot, victim=victim, error=error, reason="issued")

    # -- checks -------------------------------------------------------------
    def check_invariants(self) -> None:
        """Raise ``AssertionError`` if the state or counters are inconsistent."""
        c = self.counters
        assert c.demands == c.hits + c.misses + c.demand_waits, c
        assert c.prefetches == c.prefetches_issued + c.prefetches_dropped, c
        assert c.bytes_read == (c.misses + c.prefetches_issued) * self._expert_bytes, c
        assert c.prefetches_useful <= c.prefetches_issued, c
        assert len(self._queue) <= self._queue_depth
        tags = {}
        for i, s in enumerate(self._s):
            if s.state == INVALID:
                assert s.tag is None and s.pins == 0 and not s.prefetched, (i, s)
            else:
                assert s.tag not in tags, f"tag {s.tag} in slots {tags.get(s.tag)} and {i}"
                tags[s.tag] = i
            if s.state == FILLING:
                assert (i in self._queue or self.waiting_demand() == i) and s.pins == 0, (i, s)
            assert 0 <= s.pins <= self._max_pins and 0 <= s.use_count <= self._lfu_max
        assert tags == self._where
        assert sorted(self._recency) == list(range(self._slots)) == sorted(self._fifo)
        assert self._n_invalid == sum(s.state == INVALID for s in self._s)


def run_requests(cache: ExpertCacheModel,
                 requests: Iterable[tuple[int, int, str]]) -> list[AccessResult]:
    """Apply ``(layer, expert, kind)`` requests, releasing every demand's pin at once.

    Convenient for policy studies where pinning does not matter (one access at a time).
    """
    results = []
    for layer, expert, kind in requests:
        r = cache.access(layer, expert, kind)
        if kind == "demand" and r.slot is not None and not r.waited and not r.error:
            cache.release(r.slot)
        results.append(r)
    return results
