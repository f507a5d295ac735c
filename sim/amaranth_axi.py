"""Cycle-level AXI4 slave models (and an AXI4-Lite master driver) for Amaranth testbenches.

Every model works on one interface member of the design under test (``dut.m_axi``: an
:class:`hw.dma.AxiReadSignature`, :class:`hw.axi.AxiWriteSignature` or
:class:`hw.axi.AxiSignature` member; both slaves may share an ``AxiSignature`` port) and
follows the same two-phase protocol, once per clock cycle::

    async def bench(ctx):
        while not done:
            for x in models: x.drive(ctx)    # inputs of the DUT for this cycle
            for x in models: x.sample(ctx)   # settled outputs: handshakes, state updates
            await ctx.tick()

(:func:`step` does exactly this.) ``drive`` only sets signals, ``sample`` only reads them,
so models and drivers may be listed in any order. Random idle cycles come from the ``rng``
passed in (a seeded :class:`numpy.random.Generator`), so a run is reproducible.

The slaves check the master's side of the protocol and raise :class:`AssertionError` with
a message naming the burst when it is broken: a VALID withdrawn or a payload changed before
its READY, a burst type other than INCR, a size other than the full bus width, a burst
crossing a 4 KiB boundary, a write burst leaving the memory, a wrong ``wlast``.
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["AxiReadSlave", "AxiWriteSlave", "AxiReadMasterDriver", "AxiLiteMasterDriver", "step",
           "until",
           "OKAY", "SLVERR"]

OKAY, SLVERR = 0, 2
BOUNDARY = 4096


async def step(ctx, *models):
    """One clock cycle: ``drive`` on every model, then ``sample`` on every model, then tick."""
    for x in models:
        x.drive(ctx)
    for x in models:
        x.sample(ctx)
    await ctx.tick()


async def until(ctx, models, cond, *, max_cycles=20_000, each=None) -> int:
    """:func:`step` on ``models`` until ``cond()``; ``each(ctx, cycle)`` observes the settled
    signals after sampling (it must not set any). Returns the cycles run; ``AssertionError``
    after ``max_cycles``."""
    for cycle in range(max_cycles):
        if cond():
            return cycle
        for x in models:
            x.drive(ctx)
        for x in models:
            x.sample(ctx)
        if each is not None:
            each(ctx, cycle)
        await ctx.tick()
    raise AssertionError(f"timeout after {max_cycles} cycles")


def _check_rate(name, value):
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), not {value!r}")
    return float(value)


def _check_count(name, value, low):
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, not {value!r}")
    return value


def _check_ranges(bad_ranges):
    out = []
    for r in bad_ranges:
        lo, hi = r
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi):
            raise ValueError(f"bad_ranges entries must be (start, end) with 0 <= start <= end, not {r!r}")
        out.append((lo, hi))
    return tuple(out)


def _check_burst(kind, bus_bytes, mem_size, addr, length, size, burst):
    """Beats and first aligned beat address of an AR/AW burst; AssertionError if unsupported.

    ``mem_size`` None skips the memory bound check."""
    beats = length + 1
    what = f"{kind} burst at {addr:#x} ({beats} beats)"
    if burst != 1:
        raise AssertionError(f"{what}: {kind.lower()}burst={burst}, only INCR (1) is modelled")
    if 1 << size != bus_bytes:
        raise AssertionError(f"{what}: {kind.lower()}size={size} ({1 << size} bytes), "
                             f"the model needs the full bus width ({bus_bytes} bytes)")
    base = addr - addr % bus_bytes
    end = base + beats * bus_bytes
    if addr // BOUNDARY != (end - 1) // BOUNDARY:
        raise AssertionError(f"{what} crosses a 4 KiB boundary (ends at {end - 1:#x})")
    if mem_size is not None and end > mem_size:
        raise AssertionError(f"{what} ends at {end - 1:#x}, outside the {mem_size}-byte memory")
    return beats, base


class _HoldCheck:
    """Remembers a VALID payload that was not accepted, to check it is offered again unchanged."""

    def __init__(self, channel):
        self.channel = channel
        self.held = None

    def check(self, valid, payload, ready):
        if self.held is not None:
            if not valid:
                raise AssertionError(f"{self.channel}VALID dropped before {self.channel}READY "
                                     f"(payload {self.held})")
            if payload != self.held:
                raise AssertionError(f"{self.channel} payload changed before {self.channel}READY: "
                                     f"{self.held} -> {payload}")
        self.held = payload if valid and not ready else None


class AxiReadSlave:
    """AXI4 read slave (AR, R) answering from a byte array.

    Parameters
    ----------
    port : interface
        The DUT's master-side member with the AR and R channels.
    mem : bytes or bytearray
        Memory seen at byte address 0 (read when each beat is offered, so writes by an
        :class:`AxiWriteSlave` on the same array are seen by later beats). Bytes past its
        end read as 0.
    rng : numpy.random.Generator
        Source of the idle cycles.
    latency : int
        An AR accepted in cycle ``c`` offers its first R beat no earlier than cycle
        ``c + 1 + latency``.
    ar_idle, r_idle : float
        Probability that ``arready`` is low in a cycle, and that an R beat that could be
        offered is not (a beat once offered stays until ``rready``).
    bad_ranges : iterable of (start, end)
        Byte ranges ``[start, end)``; a beat touching one returns RRESP SLVERR.
    max_outstanding : int
        Bursts accepted on AR whose last beat has not been returned, at most (``arready``
        stays low at the limit).

    Attributes
    ----------
    bursts : list of (arid, araddr, beats)
        Every accepted AR, in order.
    beats_returned : int
        R beats handed over (``rvalid & rready``).
    max_in_flight : int
        Most bursts in flight at once.
    cycle : int
        Cycles sampled so far.

    Bursts are returned in AR order, one beat per cycle unless ``r_idle`` pauses or the
    master holds ``rready`` low; the latency of the bursts in flight overlaps (a pipelined
    memory controller). ``rid`` is the burst's ``arid``. An unaligned ``araddr`` returns
    whole bus words from the aligned address below, as AXI does. The R payload reads 0
    while ``rvalid`` is low.
    """

    def __init__(self, port, mem, *, rng: np.random.Generator, latency: int = 0,
                 ar_idle: float = 0.0, r_idle: float = 0.0, bad_ranges=(),
                 max_outstanding: int = 8):
        if not isinstance(mem, (bytes, bytearray)):
            raise TypeError(f"mem must be bytes or bytearray, not {type(mem).__name__}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, not {type(rng).__name__}")
        self.port = port
        self.mem = mem
        self.rng = rng
        self.latency = _check_count("latency", latency, 0)
        self.ar_idle = _check_rate("ar_idle", ar_idle)
        self.r_idle = _check_rate("r_idle", r_idle)
        self.bad_ranges = _check_ranges(bad_ranges)
        self.max_outstanding = _check_count("max_outstanding", max_outstanding, 1)
        self.bus_bytes = len(port.rdata) // 8
        self.bursts: list[tuple[int, int, int]] = []
        self.beats_returned = 0
        self.max_in_flight = 0
        self.cycle = 0
        self._queue = deque()         # [arid, base, beats, ready_cycle, next_beat]
        self._ar_ready = False
        self._r_offered = False
        self._r_payload = True
        self._ar_hold = _HoldCheck("AR")

    @property
    def in_flight(self) -> int:
        """Bursts accepted whose last beat has not been returned."""
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """No burst in flight."""
        return not self._queue

    def _bad(self, addr):
        return any(lo < addr + self.bus_bytes and addr < hi for lo, hi in self.bad_ranges)

    def drive(self, ctx):
        p = self.port
        self._ar_ready = (len(self._queue) < self.max_outstanding
                          and self.rng.random() >= self.ar_idle)
        ctx.set(p.arready, self._ar_ready)
        offer = False
        if self._queue and self._queue[0][3] <= self.cycle:
            offer = self._r_offered or self.rng.random() >= self.r_idle
        self._r_offered = offer
        ctx.set(p.rvalid, offer)
        if offer:
            arid, base, beats, _, i = self._queue[0]
            addr = base + i * self.bus_bytes
            ctx.set(p.rdata, int.from_bytes(self.mem[addr:addr + self.bus_bytes], "little"))
            ctx.set(p.rresp, SLVERR if self._bad(addr) else OKAY)
            ctx.set(p.rid, arid)
            ctx.set(p.rlast, i == beats - 1)
        elif self._r_payload:
            for name in ("rdata", "rresp", "rid", "rlast"):
                ctx.set(getattr(p, name), 0)
        self._r_payload = offer

    def sample(self, ctx):
        p = self.port
        arvalid = ctx.get(p.arvalid)
        payload = None
        if arvalid:
            payload = (ctx.get(p.arid), ctx.get(p.araddr), ctx.get(p.arlen), ctx.get(p.arsize),
                       ctx.get(p.arburst))
        self._ar_hold.check(arvalid, payload, self._ar_ready)
        if self._r_offered and ctx.get(p.rready):
            self._r_offered = False
            self.beats_returned += 1
            head = self._queue[0]
            head[4] += 1
            if head[4] == head[2]:
                self._queue.popleft()
        if arvalid and self._ar_ready:
            arid, addr, length, size, burst = payload
            beats, base = _check_burst("AR", self.bus_bytes, None, addr, length, size, burst)
            self.bursts.append((arid, addr, beats))
            self._queue.append([arid, base, beats, self.cycle + 1 + self.latency, 0])
            self.max_in_flight = max(self.max_in_flight, len(self._queue))
        self.cycle += 1


class AxiWriteSlave:
    """AXI4 write slave (AW, W, B) writing into a byte array.

    Parameters
    ----------
    port : interface
        The DUT's master-side member with the AW, W and B channels.
    mem : bytearray
        Memory seen at byte address 0; a burst leaving it raises AssertionError.
    rng : numpy.random.Generator
        Source of the idle cycles.
    latency : int
        The B response of a burst whose last W beat was accepted in cycle ``c`` is offered
        no earlier than cycle ``c + 1 + latency``.
    aw_idle, w_idle, b_idle : float
        Probability that ``awready`` / ``wready`` is low in a cycle where it could be high,
        and that a B response that could be offered is not (once offered it stays until
        ``bready``).
    bad_ranges : iterable of (start, end)
        Byte ranges ``[start, end)``; a beat touching one is not written and its burst
        answers BRESP SLVERR.
    max_outstanding : int
        Bursts accepted on AW whose B response has not been accepted, at most.

    Attributes
    ----------
    bursts : list of (awid, awaddr, beats)
        Every accepted AW, in order.
    bytes_written : int
        Bytes written into ``mem`` (strobe set, beat not in a bad range).
    beats_written : int
        W beats accepted.
    responses : list of (bid, bresp)
        B responses accepted by the master, in order.
    cycle : int
        Cycles sampled so far.

    W data is accepted only for an AW already accepted (from the cycle after it), in AW
    order; ``wlast`` must be set on exactly the last beat of each burst. B responses go
    out in burst order with ``bid`` = ``awid``.
    """

    def __init__(self, port, mem, *, rng: np.random.Generator, latency: int = 0,
                 aw_idle: float = 0.0, w_idle: float = 0.0, b_idle: float = 0.0,
                 bad_ranges=(), max_outstanding: int = 8):
        if not isinstance(mem, bytearray):
            raise TypeError(f"mem must be a bytearray, not {type(mem).__name__}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, not {type(rng).__name__}")
        self.port = port
        self.mem = mem
        self.rng = rng
        self.latency = _check_count("latency", latency, 0)
        self.aw_idle = _check_rate("aw_idle", aw_idle)
        self.w_idle = _check_rate("w_idle", w_idle)
        self.b_idle = _check_rate("b_idle", b_idle)
        self.bad_ranges = _check_ranges(bad_ranges)
        self.max_outstanding = _check_count("max_outstanding", max_outstanding, 1)
        self.bus_bytes = len(port.wdata) // 8
        self.bursts: list[tuple[int, int, int]] = []
        self.bytes_written = 0
        self.beats_written = 0
        self.responses: list[tuple[int, int]] = []
        self.cycle = 0
        self._w_queue = deque()   # [awid, base, beats, next_beat, error] waiting for W data
        self._b_queue = deque()   # [bid, bresp, ready_cycle]
        self._aw_ready = False
        self._w_ready = False
        self._b_offered = False
        self._aw_hold = _HoldCheck("AW")
        self._w_hold = _HoldCheck("W")

    @property
    def idle(self) -> bool:
        """Every accepted burst has had its B response accepted."""
        return not self._w_queue and not self._b_queue

    def _bad(self, addr):
        return any(lo < addr + self.bus_bytes and addr < hi for lo, hi in self.bad_ranges)

    def drive(self, ctx):
        p = self.port
        outstanding = len(self._w_queue) + len(self._b_queue)
        self._aw_ready = outstanding < self.max_outstanding and self.rng.random() >= self.aw_idle
        ctx.set(p.awready, self._aw_ready)
        self._w_ready = bool(self._w_queue) and self.rng.random() >= self.w_idle
        ctx.set(p.wready, self._w_ready)
        offer = False
        if self._b_queue and self._b_queue[0][2] <= self.cycle:
            offer = self._b_offered or self.rng.random() >= self.b_idle
        self._b_offered = offer
        ctx.set(p.bvalid, offer)
        ctx.set(p.bid, self._b_queue[0][0] if offer else 0)
        ctx.set(p.bresp, self._b_queue[0][1] if offer else 0)

    def sample(self, ctx):
        p = self.port
        awvalid = ctx.get(p.awvalid)
        aw = None
        if awvalid:
            aw = (ctx.get(p.awid), ctx.get(p.awaddr), ctx.get(p.awlen), ctx.get(p.awsize),
                  ctx.get(p.awburst))
        self._aw_hold.check(awvalid, aw, self._aw_ready)
        wvalid = ctx.get(p.wvalid)
        w = None
        if wvalid:
            w = (ctx.get(p.wdata), ctx.get(p.wstrb), ctx.get(p.wlast))
        self._w_hold.check(wvalid, w, self._w_ready)
        if self._b_offered and ctx.get(p.bready):
            self._b_offered = False
            bid, bresp, _ = self._b_queue.popleft()
            self.responses.append((bid, bresp))
        if wvalid and self._w_ready:
            self._write_beat(*w)
        if awvalid and self._aw_ready:
            awid, addr, length, size, burst = aw
            beats, base = _check_burst("AW", self.bus_bytes, len(self.mem), addr, length, size, burst)
            self.bursts.append((awid, addr, beats))
            self._w_queue.append([awid, base, beats, 0, False])
        self.cycle += 1

    def _write_beat(self, wdata, wstrb, wlast):
        head = self._w_queue[0]
        awid, base, beats, i, _ = head
        addr = base + i * self.bus_bytes
        last = i == beats - 1
        if bool(wlast) != last:
            raise AssertionError(f"AW burst {awid=} at {base:#x} ({beats} beats): beat {i} has "
                                 f"wlast={int(wlast)}, expected {int(last)}")
        self.beats_written += 1
        if self._bad(addr):
            head[4] = True
        else:
            data = wdata.to_bytes(self.bus_bytes, "little")
            for j in range(self.bus_bytes):
                if wstrb >> j & 1:
                    self.mem[addr + j] = data[j]
                    self.bytes_written += 1
        head[3] += 1
        if last:
            self._w_queue.popleft()
            self._b_queue.append([awid, SLVERR if head[4] else OKAY,
                                  self.cycle + 1 + self.latency])


class AxiReadMasterDriver:
    """AXI4 read master driving a slave port (``In(AxiReadSignature)``) of the DUT.

    Bursts queued with :meth:`read` are offered on AR in order (INCR, full bus width),
    each held until ``arready`` (the AR payload reads 0 while ``arvalid`` is low); R
    beats are accepted independently, so several bursts may be in flight.

    Parameters
    ----------
    port : interface
        The DUT's slave-side member with the AR and R channels.
    rng : numpy.random.Generator
        Source of the gaps and stalls.
    ar_gap : float
        Probability that a queued AR is not offered in a cycle (before it is first offered).
    r_stall : float
        Probability that ``rready`` is low in a cycle.

    Attributes
    ----------
    bursts : list of (arid, araddr, beats)
        ARs accepted, in order.
    beats : list of (rid, rdata, rresp, rlast)
        R beats accepted, in order.
    cycle : int
        Cycles sampled so far.
    """

    def __init__(self, port, *, rng: np.random.Generator, ar_gap: float = 0.0,
                 r_stall: float = 0.0):
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, not {type(rng).__name__}")
        self.port = port
        self.rng = rng
        self.ar_gap = _check_rate("ar_gap", ar_gap)
        self.r_stall = _check_rate("r_stall", r_stall)
        self.bus_bytes = len(port.rdata) // 8
        self.bursts: list[tuple[int, int, int]] = []
        self.beats: list[tuple[int, int, int, int]] = []
        self.cycle = 0
        self._queue = deque()
        self._offered = False
        self._rready = False
        self._expected = 0

    def read(self, addr: int, beats: int, *, arid: int = 0):
        """Queue an INCR burst of ``beats`` (1..256) beats at ``addr``."""
        if not 1 <= beats <= 256:
            raise ValueError(f"beats must be in 1..256, not {beats}")
        self._queue.append((arid, addr, beats))
        self._expected += beats

    @property
    def done(self) -> bool:
        """Every queued burst was accepted and all its beats received."""
        return not self._queue and len(self.beats) == self._expected

    def drive(self, ctx):
        p = self.port
        offer = bool(self._queue) and (self._offered or self.rng.random() >= self.ar_gap)
        self._offered = offer
        ctx.set(p.arvalid, offer)
        arid, addr, beats = self._queue[0] if offer else (0, 0, 1)
        ctx.set(p.arid, arid)
        ctx.set(p.araddr, addr)
        ctx.set(p.arlen, beats - 1)
        ctx.set(p.arsize, (self.bus_bytes - 1).bit_length())
        ctx.set(p.arburst, 1)
        self._rready = self.r_stall == 0.0 or self.rng.random() >= self.r_stall
        ctx.set(p.rready, self._rready)

    def sample(self, ctx):
        p = self.port
        if self._rready and ctx.get(p.rvalid):
            self.beats.append((ctx.get(p.rid), ctx.get(p.rdata), ctx.get(p.rresp), ctx.get(p.rlast)))
        if self._offered and ctx.get(p.arready):
            self.bursts.append(self._queue.popleft())
            self._offered = False
        self.cycle += 1


class AxiLiteMasterDriver:
    """AXI4-Lite master driving a slave port (``In(AxiLiteSignature)``) of the DUT.

    Reads and writes are queued with :meth:`read` and :meth:`write`. Writes run one at a
    time in order, reads one at a time in order; the two proceed independently (a read
    and a write may be in flight together). A transaction starts in the cycle after the
    previous one of its kind completed (its response accepted), so transactions go back
    to back. Address and data read 0 while their VALID is low.

    Parameters
    ----------
    port : interface
        The DUT's slave-side member (``dut.s_axil``).
    rng : numpy.random.Generator, optional
        Source of ``bready`` / ``rready`` stalls.
    resp_stall : float
        Probability that ``bready`` / ``rready`` is low in a cycle.

    Attributes
    ----------
    reads : list of (addr, rdata, rresp)
        Completed reads, in order.
    writes : list of (addr, bresp)
        Completed writes, in order.
    cycle : int
        Cycles sampled so far.
    """

    def __init__(self, port, *, rng: np.random.Generator | None = None, resp_stall: float = 0.0):
        self.port = port
        self.rng = rng
        self.resp_stall = _check_rate("resp_stall", resp_stall)
        if resp_stall and rng is None:
            raise ValueError("resp_stall needs an rng")
        self.reads: list[tuple[int, int, int]] = []
        self.writes: list[tuple[int, int]] = []
        self.cycle = 0
        self._rq = deque()
        self._wq = deque()
        self._r = None     # current read: {addr, ar_done, start}
        self._w = None     # current write: {addr, data, strb, aw_at, w_at, aw_done, w_done}
        self._bready = self._rready = False

    def write(self, addr: int, data: int, strb: int = 0xF, *, aw_delay: int = 0,
              w_delay: int = 0):
        """Queue a write; AW is offered ``aw_delay`` cycles and W ``w_delay`` cycles after
        the transaction starts (so ``w_delay < aw_delay`` sends W first)."""
        self._wq.append(dict(addr=addr, data=data, strb=strb, aw_at=aw_delay, w_at=w_delay))

    def read(self, addr: int, *, ar_delay: int = 0):
        """Queue a read, AR offered ``ar_delay`` cycles after the transaction starts."""
        self._rq.append(dict(addr=addr, ar_at=ar_delay))

    @property
    def done(self) -> bool:
        """Every queued transaction has completed."""
        return not (self._rq or self._wq or self._r or self._w)

    def _ready(self):
        return self.resp_stall == 0.0 or self.rng.random() >= self.resp_stall

    def drive(self, ctx):
        p = self.port
        if self._w is None and self._wq:
            self._w = dict(self._wq.popleft(), start=self.cycle, aw_done=False, w_done=False)
        if self._r is None and self._rq:
            self._r = dict(self._rq.popleft(), start=self.cycle, ar_done=False)
        w = self._w
        awvalid = wvalid = False
        if w is not None:
            age = self.cycle - w["start"]
            awvalid = not w["aw_done"] and age >= w["aw_at"]
            wvalid = not w["w_done"] and age >= w["w_at"]
        ctx.set(p.awvalid, awvalid)
        ctx.set(p.wvalid, wvalid)
        ctx.set(p.awaddr, w["addr"] if awvalid else 0)
        ctx.set(p.awprot, 0)
        ctx.set(p.wdata, w["data"] if wvalid else 0)
        ctx.set(p.wstrb, w["strb"] if wvalid else 0)
        self._bready = self._ready()
        ctx.set(p.bready, self._bready)
        r = self._r
        arvalid = r is not None and not r["ar_done"] and self.cycle - r["start"] >= r["ar_at"]
        ctx.set(p.arvalid, arvalid)
        ctx.set(p.araddr, r["addr"] if arvalid else 0)
        ctx.set(p.arprot, 0)
        self._rready = self._ready()
        ctx.set(p.rready, self._rready)
        self._awvalid, self._wvalid, self._arvalid = awvalid, wvalid, arvalid

    def sample(self, ctx):
        p = self.port
        w, r = self._w, self._r
        if w is not None:
            if self._bready and ctx.get(p.bvalid):
                if not (w["aw_done"] and w["w_done"]):
                    raise AssertionError(f"BVALID before AW and W of the write to "
                                         f"{w['addr']:#x} were both accepted")
                self.writes.append((w["addr"], ctx.get(p.bresp)))
                self._w = None
            if self._awvalid and ctx.get(p.awready):
                w["aw_done"] = True
            if self._wvalid and ctx.get(p.wready):
                w["w_done"] = True
        elif self._bready and ctx.get(p.bvalid):
            raise AssertionError("BVALID with no write in flight")
        if r is not None:
            if self._rready and ctx.get(p.rvalid):
                if not r["ar_done"]:
                    raise AssertionError(f"RVALID before AR of the read of {r['addr']:#x} was accepted")
                self.reads.append((r["addr"], ctx.get(p.rdata), ctx.get(p.rresp)))
                self._r = None
            if self._arvalid and ctx.get(p.arready):
                r["ar_done"] = True
        elif self._rready and ctx.get(p.rvalid):
            raise AssertionError("RVALID with no read in flight")
        self.cycle += 1
