"""AXI4 read DMA: burst splitting (reference and RTL), Amaranth-simulated fills, cocotb on
Verilator against cocotbext-axi's AxiRam."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.seed import base_seed
from hw.dma import BOUNDARY, AxiReadDma, BurstSplitter, burst_length, split_bursts
from sim.amaranth_dma import simulate_dma
from sim.runner import simulator_missing

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "tests"


def _check_bursts(bursts, addr, beats, bus_bytes, max_burst):
    assert sum(n for _, n in bursts) == beats
    expect = addr - addr % bus_bytes
    for a, n in bursts:
        assert a == expect, f"burst at {a:#x}, expected {expect:#x}"
        assert 1 <= n <= max_burst
        assert a // BOUNDARY == (a + n * bus_bytes - 1) // BOUNDARY, f"burst {a:#x}+{n} crosses 4 KiB"
        expect += n * bus_bytes


# --- reference splitter ----------------------------------------------------------------

@pytest.mark.parametrize("bus_bytes,max_burst", [(8, 16), (16, 256), (32, 1), (8, 256)])
def test_split_bursts_never_cross_4k_and_never_exceed_max_burst(rng, bus_bytes, max_burst):
    for _ in range(300):
        addr = int(rng.integers(0, 1 << 20)) * bus_bytes
        beats = int(rng.integers(1, 3000))
        _check_bursts(split_bursts(addr, beats, bus_bytes=bus_bytes, max_burst=max_burst),
                      addr, beats, bus_bytes, max_burst)


def test_split_bursts_takes_longest_bursts_allowed():
    # 8-byte bus, 16-beat bursts, 40 bytes before a 4 KiB boundary.
    assert split_bursts(0x0FD8, 30, bus_bytes=8, max_burst=16) == [
        (0x0FD8, 5), (0x1000, 16), (0x1080, 9)]


# --- RTL splitter, Amaranth simulator --------------------------------------------------

@pytest.mark.parametrize("bus_bytes,max_burst", [(8, 16), (16, 256), (32, 64)])
def test_burst_splitter_rtl_matches_reference(rng, bus_bytes, max_burst):
    dut = BurstSplitter(addr_width=32, beats_width=13, bus_bytes=bus_bytes, max_burst=max_burst)
    page = BOUNDARY // bus_bytes
    cases = [(BOUNDARY - bus_bytes, 5), (0, 1), (0, 4096), (BOUNDARY * 3, page + 1)]
    for _ in range(400):
        cases.append((int(rng.integers(0, 1 << 26)) * bus_bytes, int(rng.integers(1, 1 << 13))))

    async def bench(ctx):
        for addr, beats in cases:
            ctx.set(dut.addr, addr % (1 << 32))
            ctx.set(dut.beats, beats)
            want = burst_length(addr % (1 << 32), beats, bus_bytes=bus_bytes, max_burst=max_burst)
            assert ctx.get(dut.length) == want, (hex(addr), beats)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()


# --- the whole engine, Amaranth simulator ---------------------------------------------

def test_dma_rejects_bad_parameters():
    for bad in (dict(data_width=32), dict(max_burst=0), dict(max_burst=257),
                dict(outstanding=0), dict(addr_width=8), dict(max_beats=0)):
        with pytest.raises(ValueError):
            AxiReadDma(**bad)


def _host(rng, size):
    return rng.integers(0, 256, size, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("data_width,max_burst,outstanding", [(64, 16, 4), (128, 8, 2), (256, 4, 1)])
def test_dma_fills_memory_and_splits_bursts_in_amaranth_sim(rng, seed, data_width, max_burst,
                                                            outstanding):
    bus = data_width // 8
    dma = AxiReadDma(data_width=data_width, max_burst=max_burst, outstanding=outstanding,
                     max_beats=512, mem_addr_width=12)
    host = _host(rng, 1 << 16)
    fills, dest = [], 0
    for _ in range(6):
        beats = int(rng.integers(1, 200))
        addr = int(rng.integers(0, (len(host) - beats * bus) // bus)) * bus
        if rng.random() < 0.5:   # end right before a 4 KiB boundary, then go on
            addr = max(0, (addr // BOUNDARY + 1) * BOUNDARY - bus * int(rng.integers(1, 8)))
        fills.append((addr, beats, dest))
        dest += beats
    run = simulate_dma(dma, host, fills, seed=seed, ar_idle=0.3, r_idle=0.3, done_stall=0.3)
    assert run.done == [False] * len(fills)
    # Several bursts are outstanding, never more than allowed.
    assert run.max_in_flight == min(outstanding, 5), run.max_in_flight
    expect_bursts = [b for a, n, _ in fills
                     for b in split_bursts(a, n, bus_bytes=bus, max_burst=max_burst)]
    assert run.bursts == expect_bursts
    for a, n, d in fills:
        for i in range(n):
            want = int.from_bytes(host[a + i * bus:a + (i + 1) * bus], "little")
            assert run.memory[d + i] == want, (a, i)


def test_dma_reports_rresp_error_for_that_fill_only(rng, seed):
    dma = AxiReadDma(data_width=64, max_burst=8, outstanding=3, max_beats=256, mem_addr_width=10)
    host = _host(rng, 1 << 14)
    fills = [(0x0000, 40, 0), (0x1000, 40, 40), (0x2000, 40, 80)]
    run = simulate_dma(dma, host, fills, seed=seed, r_idle=0.2,
                       bad_ranges=[(0x1000 + 8 * 17, 0x1000 + 8 * 18)])
    assert run.done == [False, True, False]
    # Every burst of the failing fill was still read.
    assert sum(n for a, n in run.bursts) == 120


def test_dma_flags_a_fill_whose_address_is_not_bus_aligned(rng, seed):
    # A host address below the bus width cannot be read as whole beats: the fill must
    # complete with error=1 rather than deliver the bytes of the aligned address.
    dma = AxiReadDma(data_width=64, max_burst=8, outstanding=3, max_beats=256, mem_addr_width=10)
    host = _host(rng, 1 << 14)
    fills = [(0x0000, 20, 0), (0x1004, 20, 20), (0x2000, 20, 40), (0x3001, 3, 60)]
    run = simulate_dma(dma, host, fills, seed=seed, r_idle=0.2, done_stall=0.2)
    assert run.done == [False, True, False, True]
    for d in range(20):
        assert run.memory[40 + d] == int.from_bytes(host[0x2000 + 8 * d:0x2008 + 8 * d], "little")
    # The unaligned fills touch neither the bus nor the on-chip memory.
    assert run.bursts == [(0x0000, 8), (0x0040, 8), (0x0080, 4), (0x2000, 8), (0x2040, 8),
                          (0x2080, 4)]
    assert sorted(run.memory) == list(range(20)) + list(range(40, 60))


def _expect_run(fills, *, bus_bytes, max_burst, max_beats):
    """Done flags, bursts and written words of ``fills`` when malformed ones touch nothing."""
    done, bursts, words = [], [], {}
    for a, n, d in fills:
        bad = a % bus_bytes != 0 or n == 0 or n > max_beats
        done.append(bad)
        if not bad:
            bursts += split_bursts(a, n, bus_bytes=bus_bytes, max_burst=max_burst)
            words.update({d + i: (a + i * bus_bytes) for i in range(n)})
    return done, bursts, words


def _check_run(run, host, fills, *, bus_bytes, max_burst, max_beats):
    done, bursts, words = _expect_run(fills, bus_bytes=bus_bytes, max_burst=max_burst,
                                      max_beats=max_beats)
    assert run.done == done
    assert run.bursts == bursts
    assert sorted(run.memory) == sorted(words)
    for d, a in words.items():
        assert run.memory[d] == int.from_bytes(host[a:a + bus_bytes], "little"), (hex(a), d)


def test_dma_zero_beat_fill_completes_with_error_without_touching_the_bus(rng, seed):
    # beats=0 used to issue arlen = 0 - 1 = 255 (a 256-beat burst, here across 4 KiB)
    # and never report done.
    dma = AxiReadDma(data_width=64, max_burst=8, outstanding=3, max_beats=256, mem_addr_width=10)
    host = _host(rng, 1 << 14)
    fills = [(0x0000, 20, 0), (0x0FF8, 0, 100), (0x2000, 20, 20), (0x3000, 0, 200)]
    run = simulate_dma(dma, host, fills, seed=seed, r_idle=0.2, done_stall=0.2)
    _check_run(run, host, fills, bus_bytes=8, max_burst=8, max_beats=256)
    # A malformed fill alone, as the very first command.
    run = simulate_dma(dma, host, [(0x0FF8, 0, 0)], seed=seed)
    assert (run.done, run.bursts, run.memory) == ([True], [], {})


@pytest.mark.parametrize("beats", [257, 300, 511])
def test_dma_fill_longer_than_max_beats_completes_with_error_without_touching_the_bus(
        rng, seed, beats):
    # max_beats=256: the beats field is range(257), 9 bits, so it can hold up to 511.
    dma = AxiReadDma(data_width=64, max_burst=16, outstanding=2, max_beats=256, mem_addr_width=10)
    assert (1 << len(dma.cmd.payload.beats)) - 1 >= beats
    host = _host(rng, 1 << 14)
    fills = [(0x0000, 256, 0), (0x1000, beats, 256), (0x2000, 16, 256)]
    run = simulate_dma(dma, host, fills, seed=seed, r_idle=0.2, done_stall=0.2)
    _check_run(run, host, fills, bus_bytes=8, max_burst=16, max_beats=256)


@pytest.mark.parametrize("outstanding,done_stall", [(1, 0.0), (3, 0.5)])
def test_dma_mixes_malformed_and_good_fills_in_command_order(rng, seed, outstanding, done_stall):
    bus, max_beats = 16, 100
    dma = AxiReadDma(data_width=128, max_burst=8, outstanding=outstanding, max_beats=max_beats,
                     mem_addr_width=12)
    host = _host(rng, 1 << 16)
    fills, dest = [], 0
    # 0 and 4: good; 1: zero beats; 2: beats > max_beats; 3: unaligned. Runs of malformed
    # fills back to back, then random kinds.
    kinds = [0, 1, 0, 2, 3, 1, 2, 0] + [int(k) for k in rng.integers(0, 5, 32)]
    for kind in kinds:
        beats = int(rng.integers(1, max_beats + 1))
        addr = int(rng.integers(0, (len(host) - beats * bus) // bus)) * bus
        if kind == 1:
            beats = 0
        elif kind == 2:
            beats = int(rng.integers(max_beats + 1, 128))   # 7-bit field: up to 127
        elif kind == 3:
            addr += int(rng.integers(1, bus))
        fills.append((addr, beats, dest))
        if kind in (0, 4):
            dest += beats
    run = simulate_dma(dma, host, fills, seed=seed, ar_idle=0.2, r_idle=0.2,
                       done_stall=done_stall)
    _check_run(run, host, fills, bus_bytes=bus, max_burst=8, max_beats=max_beats)


def test_dma_keeps_r_channel_busy_without_backpressure(rng, seed):
    dma = AxiReadDma(data_width=64, max_burst=16, outstanding=4, max_beats=512, mem_addr_width=12)
    host = _host(rng, 1 << 16)
    fills = [(0x300 + i * 2560, 320, i * 320) for i in range(8)]
    run = simulate_dma(dma, host, fills, seed=seed)
    beats = sum(n for _, n, _ in fills)
    assert beats / run.cycles > 0.95, f"{beats} beats in {run.cycles} cycles"


# --- cocotb on the generated Verilog, against cocotbext-axi's AxiRamRead --------------

def run_dma_cocotb(simulator: str, data_width: int, max_burst: int, build_dir: Path, *,
                   fills: int = 24, eff_fills: int = 32, testcase: str | None = None,
                   stats: Path | None = None):
    """Build the DMA for *data_width* and run ``sim.tb_dma`` on it."""
    from sim.runner import run_cocotb, write_verilog

    dma = AxiReadDma(data_width=data_width, max_burst=max_burst, outstanding=4, max_beats=512,
                     mem_addr_width=13)
    v = write_verilog(dma, "axi_read_dma", build_dir / "axi_read_dma.v")
    env = {"DMA_MAX_BURST": str(max_burst), "DMA_OUTSTANDING": "4", "DMA_FILLS": str(fills),
           "DMA_EFF_FILLS": str(eff_fills), "SPEQMOE_SEED": str(base_seed())}
    if stats is not None:
        env["DMA_STATS"] = str(stats)
    return run_cocotb(simulator=simulator, verilog_path=v, toplevel="axi_read_dma",
                      test_module="sim.tb_dma", build_dir=build_dir, extra_env=env,
                      testcase=testcase)


# Verilator runs the 64-bit engine; Icarus (ten times slower, but a quick build) the
# 128-bit one with fewer fills. The controller's tests run both widths on Verilator too.
@pytest.mark.parametrize("simulator,data_width,max_burst,fills", [
    ("verilator", 64, 16, 24), ("icarus", 128, 32, 8)])
@pytest.mark.slow
def test_dma_verilog_against_axi_ram(simulator, data_width, max_burst, fills):
    reason = simulator_missing(simulator)
    if reason:
        pytest.skip(reason)
    result = run_dma_cocotb(simulator, data_width, max_burst,
                            BUILD / f"dma_{data_width}" / simulator, fills=fills,
                            eff_fills=32 if simulator == "verilator" else 8)
    assert result.tests == 3 and result.failed == 0
