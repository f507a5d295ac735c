"""Expert-cache DMA controller (docs/expert_cache.md): tag store, replacement, pinning, prefetch queue.

The controller keeps ``slots`` experts of ``expert_bytes`` bytes in an on-chip memory
(``amaranth.lib.memory``, one word per AXI beat, slot ``s`` at words
``s * words_per_slot ..``) whose read port :attr:`ExpertCacheController.mem` is exposed for
the compute side. Misses are filled from host memory at
``base_addr + (layer * n_experts + expert) * expert_bytes`` by :class:`hw.dma.AxiReadDma`.

Requests follow the rules of the golden model :class:`golden.expert_cache.ExpertCacheModel`
(deferred mode; which see for the exact semantics), one slot-state event per cycle:

* demand hit: pin, touch, respond at once; demand on a slot being filled: respond when its
  fill completes; demand miss: take the lowest-index invalid slot, else the policy's victim
  among valid unpinned slots, fill it, respond (pinned) when the fill completes. A demand
  that can take no slot, or would exceed ``max_pins``, is not accepted (backpressure).
* hit under miss: while one demand waits for its fill (a miss or a hit in flight),
  releases, prefetches and demand hits on valid slots are still accepted and answered; a
  second demand that would wait for a fill is not accepted until the first one's response
  is in the response register.
* ``demand_stall_cycles`` counts every cycle in which a demand is offered on ``req`` and
  not accepted, whatever the reason (no slot, pin limit, a waiting demand, a busy response
  register, or the one-event-per-cycle rule).
* prefetch: dropped if resident, in flight, ``queue_depth`` prefetch fills already in
  flight, or no slot can be taken; otherwise the slot is taken at once and the fill waits
  in the prefetch queue, which reaches the bus only when no demand fill is waiting.
* release: unpins once; a release of an unpinned slot counts ``bad_releases`` only.
* a fill that sees an ``RRESP`` error invalidates its slot (counted in ``errors``); a
  demand waiting for it gets ``error=1`` and no pin.

Replacement keeps a rank per slot (0 = least recently touched, resp. allocated longest
ago) and picks the evictable slot with the smallest key: the LRU rank (``lru``), the FIFO
rank (``fifo``), or the use count then the LRU rank (``lfu``). Ranks are distinct, so no
ties remain.

Every allocation shows for one cycle on :attr:`ExpertCacheController.alloc` (slot, the new
expert's flat index ``tag = layer * n_experts + expert``, and the evicted expert's index
``victim`` if a valid slot was taken), so
that a testbench can check victims. ``idle`` is high when no request, response or fill is
pending.
"""

from amaranth import *
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hw import refusing
from hw.dma import AXI_DATA_WIDTHS, AxiReadDma, AxiReadSignature

__all__ = ["POLICIES", "COUNTERS", "RankOrder", "VictimSelect", "ExpertCacheController"]

POLICIES = ("lru", "fifo", "lfu")
COUNTERS = ("demands", "prefetches", "hits", "hits_in_flight", "misses", "prefetches_issued",
            "prefetches_dropped", "prefetches_useful", "evictions", "bytes_read",
            "demand_stall_cycles", "errors", "releases", "bad_releases")
COUNTER_WIDTH = 32
_INVALID, _FILLING, _VALID = 0, 1, 2


def _positive(name, value, minimum=1):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")


class RankOrder(wiring.Component):
    """A total order of ``slots`` slots kept as one distinct rank per slot.

    Rank 0 is the oldest, ``slots - 1`` the newest; the order starts as slot 0 (oldest) ..
    slot ``slots - 1`` (newest). A *touch* of slot ``s`` (``touch_en``) makes it the newest
    in the next cycle: every slot ranked above it moves down one. This is the recency list
    of the LRU policy (touched on allocation and demand hit) and the allocation list of
    FIFO (touched on allocation).
    """

    def __init__(self, *, slots: int):
        _positive("slots", slots)
        self._slots = slots
        super().__init__({
            "touch_en": In(1),
            "touch_slot": In(range(slots)),
            "ranks": Out(data.ArrayLayout(range(slots), slots)),
        })

    slots = property(lambda self: self._slots)

    def elaborate(self, platform):
        m = Module()
        S = self._slots
        ranks = [Signal(range(S), init=i, name=f"rank{i}") for i in range(S)]
        sel = Signal(range(S))
        m.d.comb += sel.eq(Array(ranks)[self.touch_slot])
        for j in range(S):
            m.d.comb += self.ranks[j].eq(ranks[j])
        with m.If(self.touch_en):
            for j in range(S):
                with m.If(self.touch_slot == j):
                    m.d.sync += ranks[j].eq(S - 1)
                with m.Elif(ranks[j] > sel):
                    m.d.sync += ranks[j].eq(ranks[j] - 1)
        return m


class VictimSelect(wiring.Component):
    """The eligible slot with the smallest key (combinational comparator tree).

    Keys must be distinct among eligible slots (the controller's keys contain a rank), so
    there are no ties. ``valid`` is low when no slot is eligible.
    """

    def __init__(self, *, slots: int, key_width: int):
        _positive("slots", slots)
        _positive("key_width", key_width)
        self._slots, self._key_width = slots, key_width
        super().__init__({
            "eligible": In(slots),
            "keys": In(data.ArrayLayout(key_width, slots)),
            "valid": Out(1),
            "slot": Out(range(slots)),
        })

    slots = property(lambda self: self._slots)
    key_width = property(lambda self: self._key_width)

    def elaborate(self, platform):
        m = Module()
        entries = [(self.eligible[i], self.keys[i], C(i, range(self._slots)))
                   for i in range(self._slots)]
        while len(entries) > 1:
            nxt = []
            for k in range(0, len(entries) - 1, 2):
                (va, ka, ia), (vb, kb, ib) = entries[k], entries[k + 1]
                take_b = Signal()
                m.d.comb += take_b.eq(vb & (~va | (kb < ka)))
                v, key, idx = Signal(), Signal(self._key_width), Signal(range(self._slots))
                m.d.comb += [v.eq(va | vb), key.eq(Mux(take_b, kb, ka)),
                             idx.eq(Mux(take_b, ib, ia))]
                nxt.append((v, key, idx))
            if len(entries) % 2:
                nxt.append(entries[-1])
            entries = nxt
        valid, _, slot = entries[0]
        m.d.comb += [self.valid.eq(valid), self.slot.eq(slot)]
        return m


class ExpertCacheController(wiring.Component):
    """Expert cache with an AXI4 read DMA.

    Parameters
    ----------
    slots : int
        Expert slots, 1..64.
    expert_bytes : int
        Bytes per expert, a multiple of the bus width in bytes.
    n_layers, n_experts : int
        MoE layers L and experts per layer E.
    data_width : int
        AXI data width and memory word: 64, 128 or 256.
    addr_width : int
        AXI address width, 13..64.
    max_burst : int
        Longest AXI burst in beats, 1..256.
    outstanding : int
        Bursts in flight, >= 1.
    policy : str
        ``"lru"`` (default), ``"fifo"`` or ``"lfu"``.
    queue_depth : int
        Prefetch fills in flight at most, >= 0 (0 drops every prefetch).
    max_pins, lfu_max : int
        Pin counter limit and LFU counter saturation.
    id_width : int
        Width of the request id echoed in the response.

    Interfaces
    ----------
    req : In(stream) ``{layer, expert, kind, id}``, ``kind`` 0 demand, 1 prefetch. A
        request is accepted at the earliest in the second cycle it is offered (its lookup
        is registered), and not in a cycle after a state change (a fill completing, a
        release, an accepted request). A request not accepted must keep its payload while
        it stays offered (it may be withdrawn).
    resp : Out(stream) ``{id, slot, hit, error}``, one per demand.
    release : In(stream) ``{slot}``.
    base_addr : In(addr_width), host address of expert (0, 0). It must be aligned to the
        bus width: otherwise every fill completes with ``error=1`` (its slot is invalidated
        and counted in ``errors``), never with the bytes of a neighbouring address.
    mem : the on-chip memory's read port (synchronous, 1 cycle latency).
    m_axi : the AXI4 read master.
    alloc : Out ``{valid, slot, tag, evict, victim}`` pulse per allocation.
    counters : Out, one ``COUNTER_WIDTH``-bit member per name in :data:`COUNTERS`.
    release_error : Out(1), high in the cycle a release of an unpinned slot is accepted
        (it changes nothing else and counts ``bad_releases``).
    pinned : Out(slots), bit ``s`` high while slot ``s`` is valid and pinned at least once.
    blocked : Out(1), high while the demand offered on ``req`` can never be accepted without a
        release: it misses, no slot can be taken and no fill is in flight, or it hits a slot
        pinned ``max_pins`` times. A master that cannot release (its releases queue behind the
        demand) withdraws the request instead of waiting forever.
    fill_prefetch : Out(1), high while the fill whose bursts the DMA issues last was a prefetch
        (an arbiter in front of the AXI port may rank prefetch fills below other traffic).
    fill_done : Out ``{valid, slot, error}``, high in the cycle a fill completes (the slot
        becomes valid, or invalid if ``error``), for testbenches.
    idle : Out(1).

    Latency: a demand hit responds 2 cycles after it is offered (one more right after another
    event); a miss 2 cycles after its fill's last beat has arrived.
    """

    @refusing
    def __init__(self, *, slots=4, expert_bytes=2560, n_layers=4, n_experts=16, data_width=64,
                 addr_width=32, max_burst=16, outstanding=4, policy="lru", queue_depth=2,
                 max_pins=15, lfu_max=255, id_width=8):
        _positive("slots", slots)
        if slots > 64:
            raise ValueError(f"slots must be at most 64, not {slots!r}")
        if data_width not in AXI_DATA_WIDTHS:
            raise ValueError(f"data_width must be one of {AXI_DATA_WIDTHS}, not {data_width!r}")
        _positive("expert_bytes", expert_bytes)
        if expert_bytes % (data_width // 8):
            raise ValueError(f"expert_bytes ({expert_bytes}) must be a multiple of the bus width "
                             f"({data_width // 8} bytes)")
        _positive("n_layers", n_layers)
        _positive("n_experts", n_experts)
        if not isinstance(addr_width, int) or not 13 <= addr_width <= 64:
            raise ValueError(f"addr_width must be an integer in 13..64, not {addr_width!r}")
        if n_layers * n_experts * expert_bytes > 1 << addr_width:
            raise ValueError(f"{n_layers} x {n_experts} experts of {expert_bytes} bytes do not "
                             f"fit a {addr_width}-bit address space")
        if not isinstance(max_burst, int) or not 1 <= max_burst <= 256:
            raise ValueError(f"max_burst must be an integer in 1..256, not {max_burst!r}")
        _positive("outstanding", outstanding)
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        _positive("queue_depth", queue_depth, 0)
        _positive("max_pins", max_pins)
        _positive("lfu_max", lfu_max)
        _positive("id_width", id_width)
        self._slots = slots
        self._expert_bytes = expert_bytes
        self._n_layers = n_layers
        self._n_experts = n_experts
        self._data_width = data_width
        self._addr_width = addr_width
        self._max_burst = max_burst
        self._outstanding = outstanding
        self._policy = policy
        self._queue_depth = queue_depth
        self._max_pins = max_pins
        self._lfu_max = lfu_max
        self._id_width = id_width
        slot_shape = range(slots)
        self.req_layout = data.StructLayout({
            "layer": range(n_layers), "expert": range(n_experts), "kind": 1, "id": id_width})
        self.resp_layout = data.StructLayout({
            "id": id_width, "slot": slot_shape, "hit": 1, "error": 1})
        super().__init__({
            "req": In(stream.Signature(self.req_layout)),
            "resp": Out(stream.Signature(self.resp_layout)),
            "release": In(stream.Signature(data.StructLayout({"slot": slot_shape}))),
            "base_addr": In(addr_width),
            "mem": Out(memory.ReadPort.Signature(addr_width=ceil_log2(self.mem_depth),
                                                 shape=data_width)),
            "m_axi": Out(AxiReadSignature(addr_width=addr_width, data_width=data_width)),
            "alloc": Out(wiring.Signature({
                "valid": Out(1), "slot": Out(slot_shape), "tag": Out(range(n_layers * n_experts)),
                "evict": Out(1), "victim": Out(range(n_layers * n_experts))})),
            "counters": Out(wiring.Signature({n: Out(COUNTER_WIDTH) for n in COUNTERS})),
            "release_error": Out(1),
            "pinned": Out(slots),
            "fill_prefetch": Out(1),
            "fill_done": Out(wiring.Signature({
                "valid": Out(1), "slot": Out(slot_shape), "error": Out(1)})),
            "blocked": Out(1),
            "idle": Out(1),
        })

    slots = property(lambda self: self._slots)
    expert_bytes = property(lambda self: self._expert_bytes)
    n_layers = property(lambda self: self._n_layers)
    n_experts = property(lambda self: self._n_experts)
    data_width = property(lambda self: self._data_width)
    addr_width = property(lambda self: self._addr_width)
    max_burst = property(lambda self: self._max_burst)
    outstanding = property(lambda self: self._outstanding)
    policy = property(lambda self: self._policy)
    queue_depth = property(lambda self: self._queue_depth)
    max_pins = property(lambda self: self._max_pins)
    lfu_max = property(lambda self: self._lfu_max)
    id_width = property(lambda self: self._id_width)
    bus_bytes = property(lambda self: self._data_width // 8)
    words_per_slot = property(lambda self: self._expert_bytes // (self._data_width // 8))
    mem_depth = property(lambda self: self._slots * self.words_per_slot)

    def elaborate(self, platform):
        m = Module()
        S = self._slots
        n_tags = self._n_layers * self._n_experts
        wps = self.words_per_slot

        m.submodules.dma = dma = AxiReadDma(
            addr_width=self._addr_width, data_width=self._data_width, max_burst=self._max_burst,
            outstanding=self._outstanding, max_beats=wps,
            mem_addr_width=ceil_log2(self.mem_depth))
        wiring.connect(m, wiring.flipped(self.m_axi), dma.m_axi)

        m.submodules.storage = storage = memory.Memory(
            shape=self._data_width, depth=self.mem_depth, init=[])
        wp = storage.write_port()
        rp = storage.read_port()
        m.d.comb += [wp.en.eq(dma.wr.en), wp.addr.eq(dma.wr.addr), wp.data.eq(dma.wr.data),
                     rp.addr.eq(self.mem.addr), rp.en.eq(self.mem.en),
                     self.mem.data.eq(rp.data)]

        # -- slot state ---------------------------------------------------------------
        st = [Signal(2, name=f"st{i}") for i in range(S)]
        tag = [Signal(range(n_tags), name=f"tag{i}") for i in range(S)]
        pins = [Signal(range(self._max_pins + 1), name=f"pins{i}") for i in range(S)]
        use = [Signal(range(self._lfu_max + 1), name=f"use{i}") for i in range(S)]
        pf = [Signal(name=f"pf{i}") for i in range(S)]
        m.submodules.lru = lru_order = RankOrder(slots=S)
        m.submodules.fifo_order = fifo_order = RankOrder(slots=S)
        lru = [lru_order.ranks[i] for i in range(S)]
        cnt = {n: Signal(COUNTER_WIDTH, name=f"cnt_{n}") for n in COUNTERS}
        for n in COUNTERS:
            m.d.comb += getattr(self.counters, n).eq(cnt[n])

        def inc(name, by=1):
            m.d.sync += cnt[name].eq(cnt[name] + by)

        touches = {"lru": lru_order, "fifo": fifo_order}
        for order_ in touches.values():
            m.d.comb += order_.touch_en.eq(0)

        def touch(name, s_sig):
            m.d.comb += [touches[name].touch_en.eq(1), touches[name].touch_slot.eq(s_sig)]

        def per_slot(sel, fn):
            for i in range(S):
                with m.If(sel == i):
                    fn(i)

        # -- the request being looked at -------------------------------------------------
        req = self.req.payload
        idx = Signal(range(n_tags))
        m.d.comb += idx.eq(req.layer * self._n_experts + req.expert)
        match = Signal(S)
        filling = Signal(S)
        invalid = Signal(S)
        evictable = Signal(S)
        for i in range(S):
            m.d.comb += self.pinned[i].eq((st[i] == _VALID) & (pins[i] != 0))
        for i in range(S):
            m.d.comb += [match[i].eq((st[i] != _INVALID) & (tag[i] == idx)),
                         invalid[i].eq(st[i] == _INVALID),
                         filling[i].eq(st[i] == _FILLING),
                         evictable[i].eq((st[i] == _VALID) & (pins[i] == 0))]
        hit_slot = Signal(range(S))
        inv_slot = Signal(range(S))
        for i in reversed(range(S)):
            with m.If(match[i]):
                m.d.comb += hit_slot.eq(i)
            with m.If(invalid[i]):
                m.d.comb += inv_slot.eq(i)
        if self._policy == "lru":
            keys = lru
        elif self._policy == "fifo":
            keys = [fifo_order.ranks[i] for i in range(S)]
        else:
            keys = [Cat(lru[i], use[i]) for i in range(S)]
        m.submodules.victim = victim = VictimSelect(slots=S,
                                                    key_width=max(1, len(Value.cast(keys[0]))))
        m.d.comb += victim.eligible.eq(evictable)
        for i in range(S):
            m.d.comb += victim.keys[i].eq(keys[i])
        victim_valid, victim_slot = victim.valid, victim.slot
        # The slot a miss would take is computed from the state and registered; it is used
        # only when the state did not change in the previous cycle (``fresh``), so a
        # request waits one cycle after any event. This keeps the victim search (a
        # comparator tree) off the paths that update the state.
        take_any = Signal()
        take_slot = Signal(range(S))
        fresh = Signal()
        event = Signal()
        m.d.sync += [take_any.eq(invalid.any() | victim_valid),
                     take_slot.eq(Mux(invalid.any(), inv_slot, victim_slot)),
                     fresh.eq(~event)]
        hit_st = Signal(2)
        hit_pins = Signal.like(pins[0])
        take_st = Signal(2)
        take_tag = Signal.like(tag[0])
        for i in range(S):
            with m.If(hit_slot == i):
                m.d.comb += [hit_st.eq(st[i]), hit_pins.eq(pins[i])]
            with m.If(take_slot == i):
                m.d.comb += [take_st.eq(st[i]), take_tag.eq(tag[i])]
        # The lookup of the offered request (its tag, the tag compare, the hit slot and its
        # state) is registered too, and used when the same request was offered in the
        # previous cycle (``seen``) and the state did not change (``fresh``): a request
        # waits one cycle before it can be accepted, and no path runs from the requester's
        # registers through the tag compare to its handshake and back.
        seen = Signal()
        lk_idx = Signal.like(idx)
        lk_any = Signal()
        lk_slot = Signal.like(hit_slot)
        lk_st = Signal(2)
        lk_pins = Signal.like(pins[0])
        m.d.sync += [seen.eq(self.req.valid & ~self.req.ready), lk_idx.eq(idx),
                     lk_any.eq(match.any()), lk_slot.eq(hit_slot), lk_st.eq(hit_st),
                     lk_pins.eq(hit_pins)]

        # -- fills: demand register, prefetch queue, DMA order ---------------------------
        d_valid = Signal()
        d_slot = Signal(range(S))
        m.submodules.pfq = pfq = fifo.SyncFIFO(width=len(d_slot), depth=max(1, self._queue_depth))
        m.submodules.order = order = fifo.SyncFIFO(width=len(d_slot) + 1, depth=4)
        pf_inflight = Signal(range(self._queue_depth + 2))
        cmd_slot = Signal(range(S))
        cmd_tag = Signal.like(tag[0])
        m.d.comb += cmd_slot.eq(Mux(d_valid, d_slot, pfq.r_data))
        for i in range(S):
            with m.If(cmd_slot == i):
                m.d.comb += cmd_tag.eq(tag[i])
        # One register stage holds the next fill command (its host address is a multiply
        # and an add); fills enter the ``order`` FIFO here, in the order the DMA runs them.
        c_valid = Signal()
        m.d.comb += [
            dma.cmd.valid.eq(c_valid),
            dma.cmd.payload.beats.eq(wps),
            order.w_data.eq(Cat(cmd_slot, ~d_valid)),
        ]
        c_prefetch = Signal()
        with m.If(dma.cmd.valid & dma.cmd.ready):
            m.d.sync += [c_valid.eq(0), self.fill_prefetch.eq(c_prefetch)]
        with m.If((d_valid | pfq.r_rdy) & order.w_rdy & (~c_valid | dma.cmd.ready)):
            m.d.comb += order.w_en.eq(1)
            m.d.sync += [c_valid.eq(1), c_prefetch.eq(~d_valid),
                         dma.cmd.payload.addr.eq(self.base_addr + cmd_tag * self._expert_bytes),
                         dma.cmd.payload.dest.eq(cmd_slot * wps)]
            with m.If(d_valid):
                m.d.sync += d_valid.eq(0)
            with m.Else():
                m.d.comb += pfq.r_en.eq(1)

        done_slot = Signal(range(S))
        done_prefetch = Signal()
        done_fire = Signal()
        m.d.comb += [Cat(done_slot, done_prefetch).eq(order.r_data),
                     dma.done.ready.eq(1),
                     done_fire.eq(dma.done.valid),
                     order.r_en.eq(done_fire)]
        pf_issue = Signal()
        m.d.sync += pf_inflight.eq(pf_inflight + pf_issue - (done_fire & done_prefetch))
        with m.If(done_fire):
            with m.If(dma.done.payload.error):
                inc("errors")

                def fail(i):
                    m.d.sync += [st[i].eq(_INVALID), pins[i].eq(0), use[i].eq(0), pf[i].eq(0)]
                per_slot(done_slot, fail)
            with m.Else():
                def ok(i):
                    m.d.sync += st[i].eq(_VALID)
                per_slot(done_slot, ok)

        # -- request logic ------------------------------------------------------------
        # One slot-state event per cycle: a completing fill, else a release, else (if the
        # registered victim is up to date) a request. A demand that must wait for a fill
        # (a miss, or a hit on a filling slot) is held in the ``w_*`` registers; while it
        # waits, releases, prefetches and demand hits on valid slots are still served (hit
        # under miss); a second miss or hit in flight waits until the first one's response
        # has been loaded. Responses leave through one register (``resp``): a waited
        # demand's response is loaded when its fill completes, or (``w_done``) as soon as
        # the register is free; a hit is accepted only while the register is free and no
        # waited response is pending.
        w_valid = Signal()
        w_done = Signal()
        w_err = Signal()
        wait_slot = Signal(range(S))
        r_id = Signal(self._id_width)
        r_hit = Signal()
        resp_free = Signal()
        m.d.comb += [self.alloc.valid.eq(0), resp_free.eq(~self.resp.valid & ~w_done)]

        def allocate(s_sig):
            m.d.comb += [self.alloc.valid.eq(1), self.alloc.slot.eq(s_sig), self.alloc.tag.eq(lk_idx),
                         self.alloc.evict.eq(take_st == _VALID), self.alloc.victim.eq(take_tag)]
            with m.If(take_st == _VALID):
                inc("evictions")
            inc("bytes_read", self._expert_bytes)

            def one(i):
                m.d.sync += [st[i].eq(_FILLING), tag[i].eq(lk_idx), pins[i].eq(0), pf[i].eq(0)]
            per_slot(s_sig, one)
            touch("lru", s_sig)
            touch("fifo", s_sig)

        def pin_hit(i):
            m.d.sync += [pins[i].eq(pins[i] + 1),
                         use[i].eq(Mux(use[i] == self._lfu_max, use[i], use[i] + 1))]
            with m.If(pf[i]):
                m.d.sync += pf[i].eq(0)
                inc("prefetches_useful")

        # the response register
        with m.If(self.resp.valid & self.resp.ready):
            m.d.sync += self.resp.valid.eq(0)
        with m.If(w_done & ~self.resp.valid):
            m.d.sync += [self.resp.valid.eq(1), self.resp.payload.id.eq(r_id),
                         self.resp.payload.slot.eq(wait_slot),
                         self.resp.payload.hit.eq(r_hit),
                         self.resp.payload.error.eq(w_err),
                         w_done.eq(0), w_valid.eq(0)]

        with m.If(done_fire):
            with m.If(w_valid & ~w_done & (done_slot == wait_slot)):
                # the fill the waiting demand needs
                with m.If(~dma.done.payload.error):
                    def finish(i):
                        m.d.sync += [pins[i].eq(1), use[i].eq(1)]
                        with m.If(pf[i]):
                            m.d.sync += pf[i].eq(0)
                            inc("prefetches_useful")
                    per_slot(wait_slot, finish)
                    touch("lru", wait_slot)
                with m.If(~self.resp.valid):
                    m.d.sync += [self.resp.valid.eq(1), self.resp.payload.id.eq(r_id),
                                 self.resp.payload.slot.eq(wait_slot),
                                 self.resp.payload.hit.eq(r_hit),
                                 self.resp.payload.error.eq(dma.done.payload.error),
                                 w_valid.eq(0)]
                with m.Else():
                    m.d.sync += [w_done.eq(1), w_err.eq(dma.done.payload.error)]
        with m.Elif(self.release.valid):
            m.d.comb += self.release.ready.eq(1)
            rs = self.release.payload.slot

            def rel(i):
                with m.If(pins[i] == 0):
                    inc("bad_releases")
                    m.d.comb += self.release_error.eq(1)
                with m.Else():
                    m.d.sync += pins[i].eq(pins[i] - 1)
                    inc("releases")
            per_slot(rs, rel)
        with m.Elif(~fresh | ~seen):
            pass
        with m.Elif(self.req.valid & (req.kind == 0)):
            with m.If(lk_any & (lk_st == _VALID)):
                with m.If(lk_pins == self._max_pins):
                    m.d.comb += self.blocked.eq(1)
                with m.Elif(resp_free):
                    m.d.comb += self.req.ready.eq(1)
                    inc("demands")
                    inc("hits")
                    per_slot(lk_slot, pin_hit)
                    touch("lru", lk_slot)
                    m.d.sync += [self.resp.valid.eq(1),
                                 self.resp.payload.id.eq(req.id),
                                 self.resp.payload.slot.eq(lk_slot),
                                 self.resp.payload.hit.eq(1),
                                 self.resp.payload.error.eq(0)]
            with m.Elif(w_valid):
                pass                    # a second miss waits for the first one's response
            with m.Elif(lk_any):
                m.d.comb += self.req.ready.eq(1)
                inc("demands")
                inc("hits")
                inc("hits_in_flight")
                m.d.sync += [w_valid.eq(1), wait_slot.eq(lk_slot), r_id.eq(req.id),
                             r_hit.eq(1)]
            with m.Elif(take_any):
                m.d.comb += self.req.ready.eq(1)
                inc("demands")
                inc("misses")
                allocate(take_slot)
                m.d.sync += [w_valid.eq(1), wait_slot.eq(take_slot), r_id.eq(req.id),
                             r_hit.eq(0), d_valid.eq(1), d_slot.eq(take_slot)]
            with m.Else():
                m.d.comb += self.blocked.eq(~filling.any())
        with m.Elif(self.req.valid):
            m.d.comb += self.req.ready.eq(1)
            inc("prefetches")
            with m.If(lk_any | (pf_inflight >= self._queue_depth) | ~take_any):
                inc("prefetches_dropped")
            with m.Else():
                inc("prefetches_issued")
                m.d.comb += [pf_issue.eq(1), pfq.w_en.eq(1), pfq.w_data.eq(take_slot)]
                allocate(take_slot)

                def mark(i):
                    m.d.sync += [use[i].eq(0), pf[i].eq(1)]
                per_slot(take_slot, mark)
        # every cycle a demand is offered and not accepted, whatever the reason
        with m.If(self.req.valid & (req.kind == 0) & ~self.req.ready):
            inc("demand_stall_cycles")
        m.d.comb += event.eq(done_fire | (self.release.valid & self.release.ready)
                             | (self.req.valid & self.req.ready))
        m.d.comb += self.idle.eq(
            ~w_valid & ~self.resp.valid & ~d_valid & ~pfq.r_rdy & ~c_valid & ~order.r_rdy
            & ~dma.busy)
        m.d.comb += [self.fill_done.valid.eq(done_fire), self.fill_done.slot.eq(done_slot),
                     self.fill_done.error.eq(dma.done.payload.error)]
        return m
