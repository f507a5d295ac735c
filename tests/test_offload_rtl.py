"""Fill order: the offloading time model (golden.offload) against the expert-cache RTL.

One request trace is timed by :func:`golden.offload.simulate` (in clock cycles: the link moves
one bus word per cycle) and replayed through ``hw.expert_cache.ExpertCacheController`` in the
Amaranth simulator by a host that behaves like the model's (the dense part of a layer, then
the layer's requests in trace order, each demand waiting for its response, then the experts'
compute, then the releases). The order in which fills complete on the RTL (its AXI read
bursts: the DMA completes fills in command order) must equal the model's, and so must the
hit/miss/prefetch counters. The old model, in which a demand preempted a running prefetch
fill, completes demands ahead of prefetches that the RTL runs first.
"""

from __future__ import annotations

import numpy as np
import pytest

from golden import offload
from golden.trace import TraceBuilder
from sim.cache_flow import AmaranthPorts, CacheConfig, CacheDriver, host_pattern

# 64-bit bus, 1 KiB experts: a fill is 128 beats, much longer than the DMA's burst window
# (outstanding x max_burst = 16 beats), as the model assumes; a third prefetch can wait in
# the queue behind the running fill and the one handed to the DMA
RTL = CacheConfig(slots=6, expert_bytes=1024, n_layers=3, n_experts=8, data_width=64,
                  max_burst=8, outstanding=2, policy="lru", queue_depth=3, base_addr=0x1000)
DENSE = 23            # cycles of a layer's dense part
EXPERT = 16           # cycles of one expert's compute
FILL_OVERHEAD = 2     # cycles a fill takes beyond its beats, back to back


def model_config(**kw) -> offload.OffloadConfig:
    """The RTL's timing in the model's units (1 s = 1 cycle)."""
    return offload.OffloadConfig(
        expert_bytes=RTL.expert_bytes, dense_bytes_per_layer=DENSE * RTL.expert_bytes // EXPERT,
        slots=RTL.slots, policy=RTL.policy, queue_depth=RTL.queue_depth,
        link_bytes_per_s=RTL.data_width // 8, link_latency_s=FILL_OVERHEAD,
        device_bytes_per_s=RTL.expert_bytes / EXPERT, **kw)


def mobile_like_trace(rng, steps: int = 10):
    """Little passes (2 demands, the other 2 of the top-4 and 1-2 next-layer experts
    prefetched), some big re-runs (4 demands), skewed expert popularity."""
    b = TraceBuilder(RTL.n_layers, RTL.n_experts, source="test")
    pop = 1.0 / np.arange(1, RTL.n_experts + 1) ** 1.2
    pop /= pop.sum()
    perms = [rng.permutation(RTL.n_experts) for _ in range(RTL.n_layers)]

    def top4(layer):
        return [int(perms[layer][i]) for i in rng.choice(RTL.n_experts, 4, replace=False, p=pop)]

    for step in range(steps):
        passes = ["little", "big"] if rng.random() < 0.35 else ["little"]
        for kind in passes:
            for layer in range(RTL.n_layers):
                top = top4(layer)
                demands = top if kind == "big" else top[:2]
                ids = [b.demand(step, layer, e) for e in demands]
                if kind == "little":
                    for e in top[2:]:
                        b.prefetch(step, layer, e)
                    if layer + 1 < RTL.n_layers:
                        for e in top4(layer + 1)[:int(rng.integers(1, 3))]:
                            b.prefetch(step, layer + 1, e)
                b.compute(step, layer, len(demands))
                for rid in ids:
                    b.release(step, rid)
    return b.trace


class _ArLog(AmaranthPorts):
    """AmaranthPorts that records the address of every AR handshake."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.ar_log: list[int] = []

    async def cycle(self, inputs):
        await super().cycle(inputs)
        if self.get("m_axi__arvalid") and self.get("m_axi__arready"):
            self.ar_log.append(self.get("m_axi__araddr"))


def run_rtl(trace, seed: int) -> dict:
    """Replay ``trace`` with the model's host timing; fills in completion order, counters."""
    from amaranth.sim import Simulator

    dut = RTL.build()
    host = host_pattern(RTL, seed)
    out = {}

    async def bench(ctx):
        ports = _ArLog(ctx, dut, host, np.random.default_rng(seed), r_idle=0.0)
        drv = CacheDriver(ports, RTL, host, np.random.default_rng(seed), resp_stall=0.0)

        async def idle_until(t):
            while drv.cycles < t:
                await drv.cycle()

        now = 0
        layer_open = False
        ready: list[int] = []
        slot_of: dict[int, int] = {}
        for r in trace.records:
            if r.op in ("D", "P") and not layer_open:
                now += DENSE
                await idle_until(now)
                layer_open, ready = True, []
            if r.op == "D":
                resp = await drv.request(r.layer, r.expert, "demand", r.id)
                assert not resp["error"]
                ready.append(drv.cycles)
                slot_of[r.id] = resp["slot"]
            elif r.op == "P":
                await drv.request(r.layer, r.expert, "prefetch")
            elif r.op == "X":
                t = now
                for rd in sorted(ready):
                    t = max(t, rd) + EXPERT
                now = t
                layer_open = False
            elif r.op == "R":
                await idle_until(now)
                assert not await drv.release(slot_of.pop(r.id))
        await drv.wait_idle()
        out["ar"] = list(ports.ar_log)
        out["counters"] = drv.counters()
        out["cycles"] = drv.cycles

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    fills = []
    for addr in out["ar"]:
        off = addr - RTL.base_addr
        if off % RTL.expert_bytes == 0:          # the first burst of a fill
            fills.append(divmod(off // RTL.expert_bytes, RTL.n_experts))
    out["fills"] = fills
    return out


def test_model_fill_order_and_counters_match_the_rtl(seed):
    trace = mobile_like_trace(np.random.default_rng(seed))
    model = offload.simulate(trace, model_config())
    rtl = run_rtl(trace, seed)
    c = rtl["counters"]
    assert (c["hits"], c["misses"], c["prefetches_issued"], c["prefetches_useful"]) == (
        model.hits, model.misses, model.prefetches_issued, model.prefetches_useful)
    # the model's total time tracks the RTL's cycles (a few cycles per fill apart)
    assert model.time_s == pytest.approx(rtl["cycles"], rel=0.02)
    order = [(f.layer, f.expert) for f in model.fills]
    kinds = [f.kind for f in model.fills]
    # the scenario exercises every rule: demands behind a running prefetch, a demand ahead of
    # a queued prefetch, demands hitting a prefetch in flight
    behind = sum(1 for i, f in enumerate(model.fills) if f.kind == "demand" and i
                 and model.fills[i - 1].kind == "prefetch" and model.fills[i - 1].end > f.issued)
    ahead = sum(1 for f in model.fills if f.kind == "demand" and any(
        p.kind == "prefetch" and p.issued < f.issued and p.committed > f.committed
        for p in model.fills))
    assert behind > 0 and ahead > 0, (behind, ahead)
    assert 0 < model.prefetches_useful < model.prefetches_issued
    assert rtl["fills"] == order, next(
        (i, rtl["fills"][i:i + 4], list(zip(kinds, order))[i:i + 4])
        for i in range(min(len(order), len(rtl["fills"]))) if rtl["fills"][i] != order[i])
