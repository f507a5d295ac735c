"""Activation buffer (hw.actbuf): AXI loads into the token memories, activation streaming,
in the Amaranth simulator against sim.amaranth_axi.AxiReadSlave."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from hw.actbuf import ActBuffer, ActStreamer
from hw.dma import split_bursts
from sim.amaranth_axi import AxiReadSlave


@dataclass
class Run:
    done: list = field(default_factory=list)        # load_done errors, in order
    reads: list = field(default_factory=list)       # per read: (tiles * K, 4) uint16
    beat_cycles: list = field(default_factory=list)  # per read: cycle of each beat
    accept_cycles: list = field(default_factory=list)  # per op: cycle accepted
    bursts: list = field(default_factory=list)
    max_in_flight: int = 0


def _simulate(dut, host, ops, *, rng, ar_idle=0.0, r_idle=0.0, stall=0.0, latency=0,
              bad_ranges=(), max_cycles=100_000) -> Run:
    """Run ``ops`` one after another: ``("load", tokens, k, addr, stride)`` waits for its
    ``load_done``, ``("read", k, tiles)`` for its last beat."""
    slave = AxiReadSlave(dut.m_axi, host, rng=rng, latency=latency, ar_idle=ar_idle,
                         r_idle=r_idle, bad_ranges=bad_ranges)
    run = Run()

    async def bench(ctx):
        cycle = 0
        for op in ops:
            stream = dut.load if op[0] == "load" else dut.read
            if op[0] == "load":
                payload = dict(zip(("tokens", "k", "addr", "stride"), op[1:]))
            else:
                payload = dict(k=op[1], tiles=op[2])
                want = op[1] * op[2]
                beats, cycles = [], []
            offered, waiting = True, True
            while waiting:
                assert cycle < max_cycles, f"timeout in {op}"
                ctx.set(stream.valid, offered)
                ctx.set(stream.payload, payload)
                ctx.set(dut.load_done.ready, 1)
                ready = stall == 0.0 or rng.random() >= stall
                ctx.set(dut.acts.ready, ready)
                slave.drive(ctx)
                slave.sample(ctx)
                if offered and ctx.get(stream.ready):
                    offered = False
                    run.accept_cycles.append(cycle)
                if op[0] == "load" and ctx.get(dut.load_done.valid):
                    run.done.append(bool(ctx.get(dut.load_done.payload.error)))
                    waiting = False
                if ctx.get(dut.acts.valid) and ready:
                    assert op[0] == "read", "acts beat outside a read"
                    beats.append([ctx.get(dut.acts.payload[t]) for t in range(4)])
                    cycles.append(cycle)
                    waiting = len(beats) < want
                if op[0] == "read" and want == 0 and not offered:
                    waiting = False
                await ctx.tick()
                cycle += 1
            if op[0] == "read":
                run.reads.append(np.array(beats, dtype=np.uint16).reshape(-1, 4))
                run.beat_cycles.append(cycles)
        for _ in range(3):     # nothing more comes out
            ctx.set(dut.load.valid, 0)
            ctx.set(dut.read.valid, 0)
            slave.drive(ctx)
            slave.sample(ctx)
            assert not ctx.get(dut.acts.valid) and not ctx.get(dut.load_done.valid)
            assert not ctx.get(dut.busy)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    run.bursts = slave.bursts
    run.max_in_flight = slave.max_in_flight
    return run


class Model:
    """The buffer's contents: ``(4, depth * P)`` FP16 patterns, and the expected outputs."""

    def __init__(self, pes, k_max):
        self.p = pes
        self.lines = -(-k_max // pes)
        self.mem = np.zeros((4, self.lines * pes), dtype=np.uint16)
        self.valid = np.zeros(4, dtype=bool)

    def load(self, host, tokens, k, addr, stride):
        n = -(-k // self.p) * self.p
        for t in range(tokens):
            a = addr + t * stride
            self.mem[t, :n] = np.frombuffer(bytes(host[a:a + 2 * n]), dtype="<u2")
            self.valid[t] = True

    def read(self, k, tiles):
        return np.tile(self.mem[:, :k].T, (tiles, 1))


def _host(rng, size):
    return bytearray(rng.integers(0, 256, size, dtype=np.uint8).tobytes())


def _expected_bursts(p, max_burst, loads):
    out = []
    for tokens, k, addr, stride in loads:
        for t in range(tokens):
            out += [(0, a, n) for a, n in split_bursts(addr + t * stride, -(-k // p),
                                                       bus_bytes=2 * p, max_burst=max_burst)]
    return out


# --- construction ------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    dict(rows=1, cols=2), dict(rows=3, cols=4), dict(rows=0, cols=4), dict(rows=2.0, cols=2),
    dict(rows=2, cols=2, k_max=0), dict(rows=2, cols=2, addr_width=8),
    dict(rows=2, cols=2, max_burst=0), dict(rows=2, cols=2, max_burst=257),
    dict(rows=2, cols=2, outstanding=0), dict(rows=2, cols=2, tiles_width=0)])
def test_actbuf_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        ActBuffer(**kwargs)


def test_actbuf_has_one_memory_line_per_p_activations_and_a_bus_of_one_line():
    dut = ActBuffer(rows=2, cols=4, k_max=100)
    assert (dut.pes, dut.depth, dut.bus_bytes) == (8, 13, 16)
    assert len(dut.m_axi.rdata) == 128
    assert dut.signature.members["acts"].signature.members["payload"].shape.size == 64
    with pytest.raises(AttributeError):
        dut.k_max = 5
    Fragment.get(dut, None)


# --- loads and reads -------------------------------------------------------------------

@pytest.mark.parametrize("rows,cols,max_burst", [(2, 2, 16), (2, 4, 4)])
def test_actbuf_streams_loaded_tokens_and_keeps_tokens_not_loaded(rows, cols, max_burst, rng):
    p = rows * cols
    w = 2 * p
    k_max = 96
    dut = ActBuffer(rows=rows, cols=cols, k_max=k_max, max_burst=max_burst)
    host = _host(rng, 1 << 15)
    model = Model(p, k_max)
    ops, loads = [], []
    # 4 tokens first, then fewer: tokens not loaded keep the older values.
    for tokens in (4, 2, 1, 3):
        k = int(rng.integers(1, k_max // 4 + 1)) * 4
        if k % p == 0:
            k += 4                          # K not a multiple of P
        k = min(k, k_max)
        stride = int(rng.integers(k * 2 // w + 1, 64)) * w
        # Some tokens end right before a 4 KiB boundary or straddle one.
        addr = 4096 * int(rng.integers(1, 4)) - w * int(rng.integers(1, 12))
        ops.append(("load", tokens, k, addr, stride))
        loads.append((tokens, k, addr, stride))
        for tiles in (1, int(rng.integers(2, 4))):
            ops.append(("read", k, tiles))
    run = _simulate(dut, host, ops, rng=rng, ar_idle=0.3, r_idle=0.3, stall=0.3, latency=2)
    assert run.done == [False] * 4
    assert run.bursts == _expected_bursts(p, max_burst, loads)
    assert run.max_in_flight > 1        # several bursts in flight
    reads = iter(run.reads)
    for op in ops:
        if op[0] == "load":
            model.load(host, *op[1:])
        else:
            got = next(reads)
            np.testing.assert_array_equal(got, model.read(op[1], op[2]), err_msg=str(op))


def test_actbuf_loads_and_streams_k_max_when_it_is_not_a_multiple_of_p(rng):
    dut = ActBuffer(rows=2, cols=2, k_max=62, max_burst=8)      # 16 lines, the last half used
    host = _host(rng, 1 << 13)
    model = Model(4, 62)
    ops = [("load", 4, 62, 0x800, 0x100), ("read", 62, 2),
           ("load", 1, 3, 0x1000 - 8, 0x100), ("read", 62, 1), ("read", 3, 1)]
    run = _simulate(dut, host, ops, rng=rng, r_idle=0.2, stall=0.2)
    assert run.done == [False, False]
    model.load(host, *ops[0][1:])
    np.testing.assert_array_equal(run.reads[0], model.read(62, 2))
    model.load(host, *ops[2][1:])
    np.testing.assert_array_equal(run.reads[1], model.read(62, 1))
    np.testing.assert_array_equal(run.reads[2], model.read(3, 1))


def test_actbuf_flags_rresp_error_reads_every_burst_and_next_load_is_clean(rng):
    dut = ActBuffer(rows=2, cols=2, k_max=64, max_burst=4)
    host = _host(rng, 1 << 14)
    ops = [("load", 3, 64, 0x1000, 0x400), ("load", 2, 40, 0x2000, 0x200), ("read", 40, 1)]
    run = _simulate(dut, host, ops, rng=rng, r_idle=0.3,
                    bad_ranges=[(0x1400 + 8 * 9, 0x1400 + 8 * 9 + 1)])   # token 1, line 9
    assert run.done == [True, False]
    assert run.bursts == _expected_bursts(4, 4, [op[1:] for op in ops[:2]])
    model = Model(4, 64)
    model.load(host, *ops[0][1:])
    model.load(host, *ops[1][1:])
    np.testing.assert_array_equal(run.reads[0], model.read(40, 1))


@pytest.mark.parametrize("rows,cols,k,tiles,interleave", [
    (2, 2, 30, 3, 1), (4, 4, 17, 4, 1), (2, 2, 1, 5, 1), (4, 4, 17, 8, 4), (2, 2, 1, 4, 4)])
def test_actbuf_streams_one_beat_per_cycle_without_backpressure(rows, cols, k, tiles,
                                                                interleave, rng):
    dut = ActBuffer(rows=rows, cols=cols, k_max=64, interleave=interleave)
    host = _host(rng, 1 << 12)
    ops = [("load", 4, k, 0, 0x100), ("read", k, tiles), ("read", k, tiles)]
    run = _simulate(dut, host, ops, rng=rng)
    for i, cycles in enumerate(run.beat_cycles):
        accepted = run.accept_cycles[1 + i]
        # First beat 3 cycles after the read is accepted, then one beat every cycle.
        assert cycles == list(range(accepted + 3, accepted + 3 + tiles * k))
    model = Model(rows * cols, 64)
    model.load(host, *ops[0][1:])
    for got in run.reads:
        want = model.read(k, tiles).reshape(tiles // interleave, interleave, k, 4)
        np.testing.assert_array_equal(got, want.transpose(0, 2, 1, 3).reshape(-1, 4))


def test_actbuf_read_of_zero_beats_completes_at_once(rng):
    dut = ActBuffer(rows=2, cols=2, k_max=16)
    host = _host(rng, 1 << 12)
    run = _simulate(dut, host, [("read", 8, 0), ("load", 1, 8, 0, 0), ("read", 0, 3),
                                ("read", 8, 1)], rng=rng)
    assert [len(r) for r in run.reads] == [0, 0, 8]


def test_act_streamer_rejects_a_non_power_of_two_line():
    with pytest.raises(ValueError, match="power of two"):
        ActStreamer(pes=6, k_max=16)


def test_actbuf_read_offered_with_a_load_waits_for_the_load(rng):
    # Both offered from cycle 0: the load goes first, the read streams the new values.
    dut = ActBuffer(rows=2, cols=2, k_max=32)
    host = _host(rng, 1 << 12)
    slave = AxiReadSlave(dut.m_axi, host, rng=rng, r_idle=0.3)
    log = {}
    beats = []

    async def bench(ctx):
        ctx.set(dut.load.payload, dict(tokens=4, k=20, addr=0x200, stride=0x80))
        ctx.set(dut.read.payload, dict(k=20, tiles=2))
        ctx.set(dut.acts.ready, 1)
        ctx.set(dut.load_done.ready, 1)
        for cycle in range(200):
            ctx.set(dut.load.valid, "load" not in log)
            ctx.set(dut.read.valid, "read" not in log)
            slave.drive(ctx)
            slave.sample(ctx)
            for name in ("load", "read"):
                if name not in log and ctx.get(getattr(dut, name).ready):
                    log[name] = cycle
            if ctx.get(dut.load_done.valid):
                log["done"] = cycle
            if ctx.get(dut.acts.valid):
                beats.append([ctx.get(dut.acts.payload[t]) for t in range(4)])
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert log["load"] == 0 and log["read"] > log["done"]
    model = Model(4, 32)
    model.load(host, 4, 20, 0x200, 0x80)
    np.testing.assert_array_equal(np.array(beats, dtype=np.uint16), model.read(20, 2))


@pytest.mark.parametrize("interleave", [1, 2, 4])
def test_act_streamer_hides_the_read_latency_under_random_backpressure(rng, interleave):
    p, k_max, g = 4, 40, interleave
    dut = ActStreamer(pes=p, k_max=k_max, tiles_width=4, interleave=g)
    lines = rng.integers(0, 1 << 16, (4, 10 * p), dtype=np.uint32).astype(np.uint16)
    reads = [(37, 3 * g), (5, 2 * g), (40, g)]
    got = []

    def line(t, a):
        return int.from_bytes(lines[t, a * p:(a + 1) * p].astype("<u2").tobytes(), "little")

    async def bench(ctx):
        pending = None
        for k, tiles in reads:
            ctx.set(dut.read.payload, dict(k=k, tiles=tiles))
            offered, beats = True, []
            while len(beats) < k * tiles:
                ctx.set(dut.read.valid, offered)
                if pending is not None:
                    ctx.set(dut.rd_data, [line(t, pending) for t in range(4)])
                ready = rng.random() >= 0.4
                ctx.set(dut.acts.ready, ready)
                if offered and ctx.get(dut.read.ready):
                    offered = False
                pending = ctx.get(dut.rd.addr) if ctx.get(dut.rd.en) else None
                if ready and ctx.get(dut.acts.valid):
                    beats.append([ctx.get(dut.acts.payload[t]) for t in range(4)])
                await ctx.tick()
            got.append(np.array(beats, dtype=np.uint16))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for (k, tiles), got_ in zip(reads, got):
        # Groups of G tiles, k-major: each k's beat G times in a row.
        np.testing.assert_array_equal(
            got_, np.tile(np.repeat(lines[:, :k].T, g, axis=0), (tiles // g, 1)))
