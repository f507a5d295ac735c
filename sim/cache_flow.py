"""Drive the expert-cache controller cycle by cycle and compare it with the golden model.

The same driver runs in the Amaranth simulator (:class:`AmaranthPorts`, with a Python AXI4
read slave) and in cocotb on the generated Verilog (:class:`sim.tb_expert_cache`, with
cocotbext-axi's ``AxiRamRead``). A *ports* object offers ``await cycle(inputs)`` (advance
one clock edge, apply the inputs, let outputs settle) and ``get(name)`` (a settled output,
by its flattened Verilog name such as ``resp__valid``).

Lockstep traffic (:func:`run_lockstep`): each request is sent after the previous one has
finished (a demand's response taken; a prefetch accepted and the controller idle again);
after every operation hit or miss, slot, victim (from the ``alloc`` port), error and all
counters must equal :class:`golden.expert_cache.ExpertCacheModel`'s, and a demand's slot
must hold the expert's bytes (read back through the memory read port).

Event-by-event traffic (:func:`run_events`): overlapping requests, releases and random
response backpressure, with the golden model in deferred mode following the RTL's fill
completions (``fill_done``). Every cycle the harness predicts from the model exactly
whether the offered release and request are accepted, ``blocked``, and the response
register; it counts the model's ``demand_stall_cycles`` itself; so hit under miss,
``hits_in_flight`` and ``demand_stall_cycles`` are compared exactly.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

from golden.expert_cache import BadReleaseError, ExpertCacheModel
from hw import never_built

# Counters compared with the golden model in lockstep (same names on both sides).
LOCKSTEP_COUNTERS = ("demands", "prefetches", "hits", "hits_in_flight", "misses",
                     "prefetches_issued", "prefetches_dropped", "prefetches_useful", "evictions",
                     "bytes_read", "errors", "releases", "bad_releases")
# Compared exactly event by event (run_events).
EVENT_COUNTERS = LOCKSTEP_COUNTERS + ("demand_stall_cycles",)


@dataclass(frozen=True)
class CacheConfig:
    slots: int = 4
    expert_bytes: int = 2560
    n_layers: int = 4
    n_experts: int = 16
    data_width: int = 64
    max_burst: int = 16
    outstanding: int = 4
    policy: str = "lru"
    queue_depth: int = 2
    base_addr: int = 0x0001_0340   # not 4 KiB-aligned

    def build(self):
        from hw.expert_cache import ExpertCacheController
        return ExpertCacheController(
            slots=self.slots, expert_bytes=self.expert_bytes, n_layers=self.n_layers,
            n_experts=self.n_experts, data_width=self.data_width, max_burst=self.max_burst,
            outstanding=self.outstanding, policy=self.policy, queue_depth=self.queue_depth)

    def model(self, deferred: bool = False) -> ExpertCacheModel:
        return ExpertCacheModel(self.slots, self.policy, queue_depth=self.queue_depth,
                                expert_bytes=self.expert_bytes, n_layers=self.n_layers,
                                n_experts=self.n_experts, lockstep=not deferred,
                                deferred=deferred)

    def host_size(self) -> int:
        end = self.base_addr + self.n_layers * self.n_experts * self.expert_bytes
        return 1 << max(12, (end - 1).bit_length())

    def address(self, layer: int, expert: int) -> int:
        return self.base_addr + (layer * self.n_experts + expert) * self.expert_bytes

    def to_env(self) -> dict[str, str]:
        return {f"CACHE_{k.upper()}": str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_env(cls, env) -> "CacheConfig":
        kw = {}
        for k, f in cls.__dataclass_fields__.items():
            text = env.get(f"CACHE_{k.upper()}")
            if text is not None:
                kw[k] = text if f.type == "str" else int(text)
        return cls(**kw)


# The configurations the tests, the bench and the demo simulate (one Verilator build each).
CACHE_CONFIGS = {
    # 64-bit bus, 4 slots, 2.5 KiB experts (not a multiple of 4 KiB), base not 4 KiB-aligned.
    "w64_s4": CacheConfig(slots=4, expert_bytes=2560, n_layers=4, n_experts=8, data_width=64,
                          max_burst=16, policy="lru", queue_depth=2, base_addr=0x10340),
    # 128-bit bus, 16 slots, 1.25 KiB experts, LFU, the tiny LM's 4 x 16 experts.
    "w128_s16": CacheConfig(slots=16, expert_bytes=1280, n_layers=4, n_experts=16,
                            data_width=128, max_burst=8, policy="lfu", queue_depth=3,
                            base_addr=0x23F80),
    # The demo and bench: 64-bit bus, 16 slots of 2.5 KiB, LRU, the tiny LM's experts.
    "demo": CacheConfig(slots=16, expert_bytes=2560, n_layers=4, n_experts=16, data_width=64,
                        max_burst=16, policy="lru", queue_depth=2, base_addr=0x10340),
}


def run_cache_cocotb(simulator: str, cfg: CacheConfig, build_dir, *, seed: int, ops: int = 300,
                     overlap: int = 0, events: int = 0, trace: int = 0, trace_file=None, misses: int = 0,
                     bad: str = "", r_idle: float = 0.2, check: bool = True,
                     waves: bool | str | None = None):
    """Generate, build and simulate the controller; returns (SimResult, {test: stats}).

    ``trace``: tokens of the MoBiLE trace to replay, recorded from the tiny LM on the fly
    or, if ``trace_file`` is given, the first ``trace`` steps of that recorded trace.
    ``check`` and ``waves``: see :func:`sim.runner.run_cocotb`.
    """
    import json
    from pathlib import Path

    from sim.runner import run_cocotb, write_verilog

    build_dir = Path(build_dir).resolve()
    stats_dir = build_dir / "stats"
    stats_dir.mkdir(parents=True, exist_ok=True)
    for f in stats_dir.glob("*.json"):
        f.unlink()
    ctl = cfg.build()
    v = write_verilog(ctl, "expert_cache", build_dir / "expert_cache.v")
    env = {**cfg.to_env(), "CACHE_OPS": str(ops), "CACHE_BAD": bad, "CACHE_R_IDLE": str(r_idle),
           "CACHE_OVERLAP": str(overlap), "CACHE_EVENTS": str(events), "CACHE_TRACE": str(trace), "CACHE_MISSES": str(misses),
           "CACHE_STATS": str(stats_dir), "SPEQMOE_SEED": str(seed)}
    if trace_file is not None:
        env["CACHE_TRACE_FILE"] = str(Path(trace_file).resolve())
    result = run_cocotb(simulator=simulator, verilog_path=v, toplevel="expert_cache",
                        test_module="sim.tb_expert_cache", build_dir=build_dir, extra_env=env,
                        check=check, waves=waves)
    stats = {f.stem: json.loads(f.read_text()) for f in stats_dir.glob("*.json")}
    return result, stats


def _field_offsets(layout) -> dict[str, tuple[int, int]]:
    return {name: (f.offset, f.width) for name, f in layout}


def pack(layout, **values) -> int:
    offs = _field_offsets(layout)
    out = 0
    for name, v in values.items():
        off, width = offs[name]
        out |= (int(v) & ((1 << width) - 1)) << off
    return out


def unpack(layout, value: int) -> dict[str, int]:
    return {name: (value >> off) & ((1 << width) - 1)
            for name, (off, width) in _field_offsets(layout).items()}


def host_pattern(cfg: CacheConfig, seed: int) -> bytes:
    """Host memory: random bytes, so every expert's bytes are distinct."""
    return np.random.default_rng(seed).integers(0, 256, cfg.host_size(), dtype=np.uint8).tobytes()


class CacheDriver:
    """Lockstep operations on a controller through a *ports* object."""

    def __init__(self, ports, cfg: CacheConfig, host: bytes, rng: np.random.Generator, *,
                 resp_stall: float = 0.3, max_wait: int = 20_000):
        self.ports = ports
        self.cfg = cfg
        self.host = host
        self.rng = rng
        self.resp_stall = resp_stall
        self.max_wait = max_wait
        ctl = cfg.build()
        never_built(ctl)  # built only for its layouts
        self.req_layout = ctl.req_layout
        self.resp_layout = ctl.resp_layout
        self.bus_bytes = cfg.data_width // 8
        self.wps = cfg.expert_bytes // self.bus_bytes
        self.allocs: list[tuple[int, int | None]] = []
        self.alloc_tags: list[tuple[int, int]] = []
        self.on_alloc = lambda slot: None
        self.cycles = 0

    async def cycle(self, **inputs):
        inputs.setdefault("req__valid", 0)
        inputs.setdefault("release__valid", 0)
        inputs.setdefault("resp__ready", 0)
        inputs.setdefault("mem__en", 0)
        inputs.setdefault("base_addr", self.cfg.base_addr)
        await self.ports.cycle(inputs)
        self.cycles += 1
        if self.ports.get("alloc__valid"):
            evict = self.ports.get("alloc__evict")
            v = self.ports.get("alloc__victim")
            victim = divmod(v, self.cfg.n_experts) if evict else None
            self.allocs.append((self.ports.get("alloc__slot"), victim))
            self.alloc_tags.append(divmod(self.ports.get("alloc__tag"), self.cfg.n_experts))
            self.on_alloc(self.allocs[-1][0])

    async def request(self, layer, expert, kind, rid=0) -> dict | None:
        """Offer one request until accepted; for a demand, wait for and return the response."""
        payload = pack(self.req_layout, layer=layer, expert=expert,
                       kind=0 if kind == "demand" else 1, id=rid)
        waited = 0
        while True:
            await self.cycle(req__valid=1, req__payload=payload)
            if self.ports.get("req__ready"):
                break
            waited += 1
            if waited > self.max_wait:
                raise AssertionError(f"{kind} ({layer}, {expert}) not accepted in {waited} cycles")
        if kind != "demand":
            return None
        waited = 0
        while True:
            ready = int(self.rng.random() >= self.resp_stall)
            await self.cycle(resp__ready=ready)
            if ready and self.ports.get("resp__valid"):
                return unpack(self.resp_layout, self.ports.get("resp__payload"))
            waited += 1
            if waited > self.max_wait:
                raise AssertionError(f"no response to demand ({layer}, {expert}) in {waited} cycles")

    async def release(self, slot) -> bool:
        """Release ``slot`` once; returns the controller's ``release_error`` flag."""
        while True:
            await self.cycle(release__valid=1, release__payload=slot)
            if self.ports.get("release__ready"):
                return bool(self.ports.get("release_error"))

    async def wait_idle(self):
        await self.cycle()
        waited = 0
        while not self.ports.get("idle"):
            await self.cycle()
            waited += 1
            if waited > self.max_wait:
                raise AssertionError(f"controller not idle after {waited} cycles")

    async def read_slot(self, slot, words=None) -> dict[int, int]:
        """Words of ``slot`` through the memory read port (synchronous, one per cycle)."""
        words = range(self.wps) if words is None else words
        out, prev = {}, None
        for w in list(words) + [None]:
            if w is None:
                await self.cycle()
            else:
                await self.cycle(mem__en=1, mem__addr=slot * self.wps + w)
            if prev is not None:
                out[prev] = self.ports.get("mem__data")
            prev = w
        return out

    def expected_word(self, layer, expert, w) -> int:
        a = self.cfg.address(layer, expert) + w * self.bus_bytes
        return int.from_bytes(self.host[a:a + self.bus_bytes], "little")

    async def check_slot(self, slot, layer, expert, full: bool):
        words = None if full else sorted({0, self.wps - 1, int(self.rng.integers(0, self.wps))})
        got = await self.read_slot(slot, words)
        for w, value in got.items():
            want = self.expected_word(layer, expert, w)
            assert value == want, (f"slot {slot} word {w}: {value:#x}, expected expert "
                                   f"({layer}, {expert}) word {want:#x}")

    def counters(self) -> dict[str, int]:
        from hw.expert_cache import COUNTERS
        return {n: self.ports.get(f"counters__{n}") for n in COUNTERS}


def random_expert(rng, cfg: CacheConfig, hot: int):
    layer = int(rng.integers(0, cfg.n_layers))
    expert = int(rng.integers(0, hot)) if rng.random() < 0.8 else int(rng.integers(0, cfg.n_experts))
    return layer, expert


async def run_lockstep(drv: CacheDriver, n_ops: int, *, bad_experts=(), check_data=True,
                       ops=None, after_op=None) -> ExpertCacheModel:
    """Random (or given) lockstep operations, each compared with the golden model.

    ``after_op``: called with the index of each operation once it is done (and checked).
    """
    cfg, rng = drv.cfg, drv.rng
    model = cfg.model()
    for layer, expert in bad_experts:
        model.inject_error(layer, expert)
    pinned: list[int] = []      # slots pinned by responses, one entry per pin
    slot_of: dict[int, int | None] = {}     # trace demand id -> slot pinned (None: failed)
    hot = max(2, min(cfg.n_experts, cfg.slots))
    rid = 0
    for step in range(n_ops):
        if ops is not None:
            if step >= len(ops):
                break
            op = ops[step]
        else:
            roll = rng.random()
            if pinned and (roll < 0.35 or len(pinned) > 2 * cfg.slots):
                op = ("release", pinned.pop(int(rng.integers(0, len(pinned)))))
            elif roll < 0.38:
                op = ("release", int(rng.integers(0, cfg.slots)))     # maybe a bad release
            else:
                kind = "demand" if rng.random() < 0.7 else "prefetch"
                op = (kind, *random_expert(rng, cfg, hot))
        if op[0] == "release_id":
            slot = slot_of.pop(op[1])
            if slot is None:
                if after_op is not None:
                    after_op(step)
                continue
            op = ("release", slot)
        if op[0] == "release":
            slot = op[1]
            if ops is None and model.slot_state(slot).pins and slot in pinned:
                pinned.remove(slot)
            bad = False
            try:
                model.release(slot)
            except BadReleaseError:
                bad = True
            flagged = await drv.release(slot)
            assert flagged == bad, f"op {step} {op}: release_error {flagged}, golden bad release {bad}"
        else:
            kind, layer, expert = op[:3]
            if kind == "demand":
                trial = copy.deepcopy(model)
                if trial.access(layer, expert, "demand").waited:
                    if ops is not None:
                        raise ValueError(f"op {step} {op}: demand would wait forever in lockstep")
                    continue          # lockstep traffic never sends a demand that would wait
            n_alloc = len(drv.allocs)
            want = model.access(layer, expert, kind)
            if kind == "demand":
                resp = await drv.request(layer, expert, kind, rid)
                await drv.cycle()
                assert resp["id"] == rid % 256, f"op {step}: response id {resp['id']}, sent {rid}"
                got = (bool(resp["hit"]), resp["slot"], bool(resp["error"]))
                assert got == (want.hit, want.slot, want.error), (
                    f"op {step} {op}: RTL hit/slot/error {got}, golden {want}")
                if len(op) > 3:
                    slot_of[op[3]] = None if want.error else want.slot
                if not want.error:
                    pinned.append(want.slot)
                    if check_data:
                        await drv.check_slot(want.slot, layer, expert, full=not want.hit)
                rid += 1
            else:
                await drv.request(layer, expert, kind)
                await drv.wait_idle()
            allocs = drv.allocs[n_alloc:]
            if want.hit or want.dropped:
                assert not allocs, f"op {step} {op}: RTL allocated {allocs}, golden {want}"
            else:
                assert allocs == [(want.slot, want.victim)], (
                    f"op {step} {op}: RTL allocation {allocs}, golden slot {want.slot} "
                    f"victim {want.victim}")
        await drv.cycle()
        got_c = drv.counters()
        want_c = model.counters.as_dict()
        diff = {k: (got_c[k], want_c[k]) for k in LOCKSTEP_COUNTERS if got_c[k] != want_c[k]}
        assert not diff, f"op {step} {op}: counters differ (RTL, golden): {diff}"
        model.check_invariants()
        if after_op is not None:
            after_op(step)
    return model


def trace_ops(trace) -> list[tuple]:
    """A request trace (:mod:`golden.trace`) as :func:`run_lockstep` operations."""
    ops = []
    for r in trace.records:
        if r.op == "D":
            ops.append(("demand", r.layer, r.expert, r.id))
        elif r.op == "P":
            ops.append(("prefetch", r.layer, r.expert))
        elif r.op == "R":
            ops.append(("release_id", r.id))
    return ops


def mobile_trace(n_tokens: int = 12, seed: int = 0):
    """A MoBiLE request trace of the trained tiny LM (:mod:`golden.mobile`) over held-out text."""
    from golden.mobile import MobileDecoder, build_trace, heldout_windows
    from golden.offload import load_tiny_model
    from golden.text import split

    model, source = load_tiny_model()
    window = heldout_windows(split()[1], n_tokens, 1 + seed % 7)[seed % 7]
    run = MobileDecoder(model).run(window)
    cfg = model.config
    return build_trace(run.steps, cfg.n_layers, cfg.n_experts, source=source)


def first_steps(trace, n_steps: int):
    """The records of ``trace`` whose decode step is below ``n_steps`` (releases included)."""
    from golden.trace import Trace
    return Trace(dict(trace.meta), [r for r in trace.records if r.step < n_steps])


async def run_overlap(drv: CacheDriver, n_requests: int, *, bad_experts=(), p_req=0.6,
                      p_prefetch=0.35, hold=(4, 60), sample_words=6) -> dict:
    """Overlapping traffic with invariant checks; returns statistics.

    Requests are offered back to back while fills are in flight (demand and prefetch
    mixed), responses are taken at random, every response's slot is read back (a sample of
    words, through the memory read port) while it is pinned, and each pin is held for a
    random time before its release. Checked: every response's slot holds the requested
    expert's bytes, no allocation ever takes a slot the client holds pinned, every demand
    completes within a bound, and the counters add up.
    """
    cfg, rng = drv.cfg, drv.rng
    bad = set(map(tuple, bad_experts))
    hot = max(2, min(cfg.n_experts, cfg.slots + 2))
    fill_cycles = drv.wps * 4 + 200
    bound = (cfg.queue_depth + 3) * fill_cycles + hold[1] * 2 * cfg.slots + 500
    held: list[dict] = []            # pins the client holds: slot, tag, release time, verified
    pinned_count = [0] * cfg.slots
    outstanding: dict[int, tuple] = {}
    violations: list[str] = []

    def on_alloc(slot):
        if pinned_count[slot]:
            violations.append(f"cycle {drv.cycles}: slot {slot} allocated while pinned")
    drv.on_alloc = on_alloc

    sent = {"demand": 0, "prefetch": 0}
    releases = 0
    worst = 0
    req = None
    rel = None
    verify = None     # (pin, words to read, pending word)
    last_prefetch = None
    rid = 0
    while sent["demand"] + sent["prefetch"] < n_requests or outstanding or held or req:
        if drv.cycles > 400 * n_requests + 10 * bound:
            raise AssertionError(f"overlap traffic stuck: {len(outstanding)} responses missing")
        inputs = {}
        if req is None and sent["demand"] + sent["prefetch"] < n_requests and \
                rng.random() < p_req and len(held) + len(outstanding) < 2 * cfg.slots:
            kind = "prefetch" if rng.random() < p_prefetch else "demand"
            layer, expert = random_expert(rng, cfg, hot)
            if kind == "demand" and last_prefetch is not None and rng.random() < 0.4:
                layer, expert = last_prefetch       # likely still in flight
            if kind == "prefetch":
                last_prefetch = (layer, expert)
            req = (kind, layer, expert, rid % 256, drv.cycles)
            rid += 1
        if req is not None:
            inputs["req__valid"] = 1
            inputs["req__payload"] = pack(drv.req_layout, layer=req[1], expert=req[2],
                                          kind=int(req[0] == "prefetch"), id=req[3])
        if rel is None:
            for pin in held:
                if pin["verified"] and pin["until"] <= drv.cycles:
                    rel = pin
                    break
        if rel is not None:
            inputs["release__valid"] = 1
            inputs["release__payload"] = rel["slot"]
        if verify is None:
            for pin in held:
                if not pin["verified"]:
                    words = sorted({0, drv.wps - 1,
                                    *(int(w) for w in rng.integers(0, drv.wps, sample_words))})
                    verify = [pin, words, None]
                    break
        if verify is not None and verify[1]:
            inputs["mem__en"] = 1
            inputs["mem__addr"] = verify[0]["slot"] * drv.wps + verify[1][0]
        ready = int(rng.random() >= drv.resp_stall)
        inputs["resp__ready"] = ready
        await drv.cycle(**inputs)
        # Read data of the word addressed in the previous cycle.
        if verify is not None and verify[2] is not None:
            pin = verify[0]
            want = drv.expected_word(*pin["tag"], verify[2])
            got = drv.ports.get("mem__data")
            if got != want:
                violations.append(f"slot {pin['slot']} word {verify[2]}: {got:#x}, expected "
                                  f"expert {pin['tag']} word {want:#x}")
            verify[2] = None
            if not verify[1]:
                pin["verified"] = True
                verify = None
        if verify is not None and verify[1] and inputs.get("mem__en"):
            verify[2] = verify[1].pop(0)
        if req is not None and drv.ports.get("req__ready"):
            sent[req[0]] += 1
            if req[0] == "demand":
                outstanding[req[3]] = req
            req = None
        if rel is not None and drv.ports.get("release__ready"):
            held.remove(rel)
            pinned_count[rel["slot"]] -= 1
            releases += 1
            rel = None
        if ready and drv.ports.get("resp__valid"):
            r = unpack(drv.resp_layout, drv.ports.get("resp__payload"))
            kind, layer, expert, r_id, t0 = outstanding.pop(r["id"])
            worst = max(worst, drv.cycles - t0)
            if drv.cycles - t0 > bound:
                violations.append(f"demand ({layer}, {expert}) took {drv.cycles - t0} cycles")
            if r["error"]:
                if (layer, expert) not in bad:
                    violations.append(f"demand ({layer}, {expert}) failed, not a bad expert")
            else:
                if (layer, expert) in bad:
                    violations.append(f"demand ({layer}, {expert}) of a bad expert succeeded")
                pinned_count[r["slot"]] += 1
                held.append({"slot": r["slot"], "tag": (layer, expert), "verified": False,
                             "until": drv.cycles + int(rng.integers(*hold))})
        if len(violations) >= 5:
            break
    assert not violations, violations
    await drv.wait_idle()
    await drv.cycle()
    c = drv.counters()
    assert c["demands"] == sent["demand"] == c["hits"] + c["misses"], c
    assert c["prefetches"] == sent["prefetch"] == c["prefetches_issued"] + c["prefetches_dropped"], c
    assert c["bytes_read"] == (c["misses"] + c["prefetches_issued"]) * cfg.expert_bytes, c
    assert c["releases"] == releases and c["bad_releases"] == 0, c
    assert c["errors"] == sum(t in bad for t in drv.alloc_tags), c
    assert c["evictions"] == sum(v is not None for _, v in drv.allocs), c
    assert c["prefetches_useful"] <= c["prefetches_issued"], c
    return {"cycles": drv.cycles, "worst_demand_cycles": worst, "bound": bound, **c}


async def run_events(drv: CacheDriver, n_requests: int, *, bad_experts=(), p_req=0.7,
                     p_prefetch=0.25, hold=(2, 40)) -> dict:
    """Overlapping traffic compared with the golden model (deferred mode) cycle by cycle.

    The acceptance rule the harness predicts (hw.expert_cache, "request logic"): one
    slot-state event per cycle; a completing fill (``fill_done``) excludes the rest, else an
    offered release is accepted, else, if the previous cycle had no event and the same
    request was already offered in it (the lookup is registered), the request: a
    prefetch always; a demand if :meth:`ExpertCacheModel.demand_wait_reason` is ``None``
    and, for a hit on a valid slot, the response register is free (empty, no waited
    response pending). Every cycle a demand is offered and not accepted is a stall cycle.
    Returns statistics (RTL counters, cycles, ``hits_under_miss``).
    """
    cfg, rng = drv.cfg, drv.rng
    model = cfg.model(deferred=True)
    for layer, expert in bad_experts:
        model.inject_error(layer, expert)
    hot = max(2, min(cfg.n_experts, cfg.slots + 2))
    await drv.wait_idle()
    await drv.cycle()
    fresh = True
    seen = False          # the request on offer was offered (and not accepted) last cycle
    reg = None            # the response the RTL's register holds this cycle
    w_done = None         # a waited demand's response not yet in the register
    held: list[list[int]] = []        # [slot, release cycle]
    outstanding: dict[int, tuple] = {}
    req = None
    sent = 0
    rid = 0
    last_prefetch = None
    under_miss = 0
    dirty = True
    limit = 2000 * n_requests + 50_000
    while True:
        if drv.cycles > limit:
            raise AssertionError(f"event traffic stuck: {outstanding}, held {held}")
        busy = sent < n_requests or outstanding or held or req or reg or w_done
        if not busy and model.waiting_demand() is None and not model.pending_prefetches():
            break
        inputs = {}
        if req is None and sent < n_requests and rng.random() < p_req and \
                len(held) + len(outstanding) < 2 * cfg.slots:
            kind = "prefetch" if rng.random() < p_prefetch else "demand"
            layer, expert = random_expert(rng, cfg, hot)
            if kind == "demand" and last_prefetch is not None and rng.random() < 0.4:
                layer, expert = last_prefetch
            if kind == "prefetch":
                last_prefetch = (layer, expert)
            req = (kind, layer, expert, rid % 256)
            rid += 1
        if req is not None:
            inputs["req__valid"] = 1
            inputs["req__payload"] = pack(drv.req_layout, layer=req[1], expert=req[2],
                                          kind=int(req[0] == "prefetch"), id=req[3])
        rel = next((h for h in held if h[1] <= drv.cycles), None)
        if rel is not None:
            inputs["release__valid"] = 1
            inputs["release__payload"] = rel[0]
        ready = int(rng.random() >= drv.resp_stall)
        inputs["resp__ready"] = ready
        n_alloc = len(drv.allocs)
        await drv.cycle(**inputs)
        where = f"cycle {drv.cycles}"
        if dirty:
            got_c, want_c = drv.counters(), model.counters.as_dict()
            diff = {k: (got_c[k], want_c[k]) for k in EVENT_COUNTERS if got_c[k] != want_c[k]}
            assert not diff, f"{where}: counters differ (RTL, golden): {diff}"
            dirty = False
        # the response register
        got_valid = bool(drv.ports.get("resp__valid"))
        assert got_valid == (reg is not None), f"{where}: resp.valid {got_valid}, expected {reg}"
        if reg is not None:
            got = unpack(drv.resp_layout, drv.ports.get("resp__payload"))
            assert got == reg, f"{where}: response {got}, expected {reg}"
        reg_next = None if reg is not None and ready else reg
        if w_done is not None and reg is None:
            reg_next, w_done = w_done, None
        # this cycle's event
        done = drv.ports.get("fill_done__valid")
        exp_rel = exp_req = exp_blocked = False
        demand_offered = req is not None and req[0] == "demand"
        want = None
        if done:
            slot = drv.ports.get("fill_done__slot")
            r = model.complete_fill(slot)
            failed = model.slot_state(slot).state == "invalid"
            assert bool(drv.ports.get("fill_done__error")) == failed, f"{where}: fill {slot} error"
            if r is not None:
                rid_w = next(k for k, v in outstanding.items() if v[5])
                outstanding[rid_w][5] = False
                resp = {"id": rid_w, "slot": r.slot, "hit": int(r.hit), "error": int(r.error)}
                if reg is None:
                    reg_next = resp
                else:
                    w_done = resp
            dirty = True
        elif rel is not None:
            exp_rel = True
        elif fresh and seen and req is not None:
            if req[0] == "prefetch":
                exp_req = True
            else:
                reason = model.demand_wait_reason(req[1], req[2])
                slot = model.lookup(req[1], req[2])
                valid_hit = slot is not None and model.slot_state(slot).state == "valid"
                # the RTL holds a waited demand until its response is in the register
                exp_req = reason is None and w_done is None and (not valid_hit or reg is None)
                exp_blocked = reason == "wait_pin_limit" or (
                    reason == "wait_no_slot" and w_done is None and not any(
                    model.slot_state(i).state == "filling" for i in range(cfg.slots)))
        if rel is not None:
            assert bool(drv.ports.get("release__ready")) == exp_rel, f"{where}: release.ready"
        if req is not None:
            assert bool(drv.ports.get("req__ready")) == exp_req, (
                f"{where}: req.ready {drv.ports.get('req__ready')} for {req}, expected {exp_req} "
                f"(waiting demand slot {model.waiting_demand()}, response register {reg})")
            assert bool(drv.ports.get("blocked")) == exp_blocked, f"{where}: blocked for {req}"
        if exp_rel:
            model.release(rel[0])
            held.remove(rel)
            dirty = True
        allocs = drv.allocs[n_alloc:]
        if exp_req:
            kind, layer, expert, r_id = req
            if kind == "demand" and model.waiting_demand() is not None:
                under_miss += 1
            want = model.access(layer, expert, kind)
            if kind == "demand":
                outstanding[r_id] = [kind, layer, expert, drv.cycles, want.slot, want.pending]
                if not want.pending:
                    reg_next = {"id": r_id, "slot": want.slot, "hit": 1, "error": 0}
            req = None
            sent += 1
            dirty = True
            if want.hit or want.dropped:
                assert not allocs, f"{where}: RTL allocated {allocs}, golden {want}"
            else:
                assert allocs == [(want.slot, want.victim)], (
                    f"{where}: RTL allocation {allocs}, golden {want}")
        else:
            assert not allocs, f"{where}: RTL allocated {allocs} without a request"
            if demand_offered:
                model.count_stall()
                dirty = True
        if reg is not None and ready:
            outstanding.pop(reg["id"])
            if not reg["error"]:
                held.append([reg["slot"], drv.cycles + int(rng.integers(*hold))])
        reg = reg_next
        fresh = not (done or exp_rel or exp_req)
        seen = req is not None
        model.check_invariants()
    await drv.cycle()
    got_c, want_c = drv.counters(), model.counters.as_dict()
    diff = {k: (got_c[k], want_c[k]) for k in EVENT_COUNTERS if got_c[k] != want_c[k]}
    assert not diff, f"end: counters differ (RTL, golden): {diff}"
    assert drv.ports.get("idle")
    return {"cycles": drv.cycles, "hits_under_miss": under_miss, **got_c}


class AmaranthPorts:
    """Ports of a controller in the Amaranth simulator, with a Python AXI4 read slave."""

    def __init__(self, ctx, dut, host: bytes, rng, *, r_idle=0.0, bad_ranges=()):
        from amaranth.hdl import Value
        self.ctx = ctx
        self.sig = {"__".join(str(p) for p in path): Value.cast(v)
                    for path, _, v in dut.signature.flatten(dut)}
        self.host = host
        self.rng = rng
        self.r_idle = r_idle
        self.bad_ranges = list(bad_ranges)
        self.bus_bytes = len(self.sig["m_axi__rdata"]) // 8
        self.ar = deque()
        self.beats = deque()
        self.started = False
        self.offer = False

    def get(self, name):
        return self.ctx.get(self.sig[name])

    async def cycle(self, inputs):
        ctx = self.ctx
        if self.started:
            await ctx.tick()
        self.started = True
        for name, v in inputs.items():
            ctx.set(self.sig[name], v)
        ctx.set(self.sig["m_axi__arready"], int(len(self.ar) < 4))
        if not self.beats and self.ar:
            addr, n = self.ar.popleft()
            for i in range(n):
                a = addr + i * self.bus_bytes
                bad = any(lo <= a < hi for lo, hi in self.bad_ranges)
                word = int.from_bytes(self.host[a:a + self.bus_bytes], "little")
                self.beats.append((word, 2 if bad else 0, int(i == n - 1)))
        self.offer = bool(self.beats) and self.rng.random() >= self.r_idle
        ctx.set(self.sig["m_axi__rvalid"], int(self.offer))
        if self.offer:
            word, resp, last = self.beats[0]
            ctx.set(self.sig["m_axi__rdata"], word)
            ctx.set(self.sig["m_axi__rresp"], resp)
            ctx.set(self.sig["m_axi__rlast"], last)
        if self.get("m_axi__arvalid") and self.get("m_axi__arready"):
            self.ar.append((self.get("m_axi__araddr"), self.get("m_axi__arlen") + 1))
        if self.offer and self.get("m_axi__rready"):
            self.beats.popleft()


def simulate_lockstep(cfg: CacheConfig, n_ops: int, seed: int, *, bad_experts=(),
                      r_idle=0.2, check_data=True, ops=None):
    """Run :func:`run_lockstep` in the Amaranth simulator; returns (model, counters, cycles)."""
    from amaranth.sim import Simulator

    dut = cfg.build()
    host = host_pattern(cfg, seed)
    rng = np.random.default_rng(seed)
    bad_ranges = [(cfg.address(l, e) + cfg.expert_bytes // 2,
                   cfg.address(l, e) + cfg.expert_bytes // 2 + 1) for l, e in bad_experts]
    out = {}

    async def bench(ctx):
        ports = AmaranthPorts(ctx, dut, host, rng, r_idle=r_idle, bad_ranges=bad_ranges)
        drv = CacheDriver(ports, cfg, host, rng)
        out["model"] = await run_lockstep(drv, n_ops, bad_experts=bad_experts,
                                          check_data=check_data, ops=ops)
        out["counters"] = drv.counters()
        out["cycles"] = drv.cycles

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out["model"], out["counters"], out["cycles"]
