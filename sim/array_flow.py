"""PE-array stimulus and simulation flows: Amaranth simulator and cocotb (Verilator, Icarus).

A *job* is one pass of the array over a layer (:class:`ArrayJob`): its configuration, its
weight and activation beats and the result beats the golden model expects, all produced by
:mod:`golden.pe_array`. A run is a list of jobs streamed one after another; the
configuration of a job is loaded once every beat of the previous job has been accepted,
while the pipeline still holds them (or, with ``overlap=False``, once all its results have
left, so that each job's cycle count can be compared with :func:`golden.pe_array.cycles`).

:func:`simulate_array` runs the Amaranth simulator; :func:`run_array_cocotb` writes the jobs
to a file and runs :mod:`sim.tb_array` on the generated Verilog. Both return per-job result
beats (uint32, ``(beats, 4)``) and statistics; callers compare them with the golden model.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from golden import pe_array
from golden.bsfp import encode
from hw.array import INPUT_STAGES, PEArray, array_pe, array_result_depth

#: The array's cycle counters; every cycle is counted in exactly one.
ARRAY_COUNTERS = ("busy_cycles", "starved_cycles", "blocked_cycles", "lut_cycles")

JOB_KEYS = ("base", "lut", "words", "last", "acts", "expected")


@dataclass
class ArrayJob:
    mode: str
    n: int
    k: int
    tokens: int
    base: np.ndarray          # (8,) uint16
    lut: np.ndarray           # (8,) uint16, 15-bit magnitudes
    words: np.ndarray         # (beats, P) uint16
    last: np.ndarray          # (beats,) bool
    acts: np.ndarray          # (beats, 4) uint16
    expected: np.ndarray      # (tiles * P, 4) uint32
    cycles: int               # golden cycle count without stalls
    macs: int
    interleave: int = 1       # tiles the beats interleave (the PEs' add_stages + 1)

    @property
    def beats(self) -> int:
        return int(self.words.shape[0])


def make_job(mode: str, enc, acts: np.ndarray, rows: int, cols: int, *, mul_stages: int = 0,
             add_stages: int = 0) -> ArrayJob:
    """The job of one pass of a ``rows x cols`` array (PEs of the given pipeline depth)
    over ``enc`` with ``acts``."""
    n, k = enc.shape
    g = add_stages + 1
    words, last = pe_array.weight_stream(mode, enc, rows, cols, g)
    base, lut = pe_array.pe_tables(enc)
    tokens = 1 if mode == "draft" else acts.shape[0]
    latency = pe_array.array_latency(mul_stages, add_stages)
    return ArrayJob(mode=mode, n=n, k=k, tokens=tokens, base=base, lut=lut, words=words,
                    last=last, acts=pe_array.acts_stream(mode, acts, n, rows, cols, g),
                    expected=pe_array.result_beats(mode, enc, acts, rows, cols, g),
                    cycles=pe_array.cycles(mode, n, k, rows, cols, interleave=g, latency=latency),
                    macs=pe_array.macs(mode, n, k, rows, cols, g), interleave=g)


def random_layer(rng: np.random.Generator, n: int, k: int, edges: bool = False) -> np.ndarray:
    """FP16 weights spread over many exponents; ``edges`` mixes in zeros, subnormals, inf, NaN."""
    w = rng.normal(size=(n, k)) * 2.0 ** rng.integers(-12, 3, size=(n, k))
    w = w.astype(np.float16)
    if edges:
        from sim.pe_stimulus import FP16_EDGES
        pick = rng.random((n, k)) < 0.05
        w[pick] = FP16_EDGES[rng.integers(0, FP16_EDGES.size, int(pick.sum()))].view(np.float16)
    return w


def random_job(rng: np.random.Generator, mode: str, n: int, k: int, rows: int, cols: int,
               tokens: int = 4, edges: bool = False, **depth) -> ArrayJob:
    enc = encode(random_layer(rng, n, k, edges))
    shape = (k,) if mode == "draft" else (tokens, k)
    acts = rng.normal(size=shape).astype(np.float16)
    if edges:
        from sim.pe_stimulus import FP16_EDGES
        pick = rng.random(shape) < 0.02
        acts[pick] = FP16_EDGES[rng.integers(0, FP16_EDGES.size, int(pick.sum()))].view(np.float16)
    return make_job(mode, enc, acts, rows, cols, **depth)


def standard_jobs(rows: int, cols: int, seed: int, *, edges: bool = True, **depth) -> list[ArrayJob]:
    """The shapes every configuration runs, both modes, 1 to 4 verify tokens:
    ``(N, K)`` = (16, 32), (64, 128) and (4 * P + 4, 100)."""
    rng = np.random.default_rng(seed)
    p = rows * cols
    jobs = []
    for i, (n, k) in enumerate([(16, 32), (64, 128), (4 * p + 4, 100)]):
        jobs.append(random_job(rng, "draft", n, k, rows, cols, edges=edges and i == 0, **depth))
        for tokens in ((1, 4) if i == 0 else (2, 3) if i == 1 else (4,)):
            jobs.append(random_job(rng, "verify", n, k, rows, cols, tokens,
                                   edges=edges and i == 0, **depth))
    return jobs


def save_jobs(path: Path, jobs: list[ArrayJob]) -> None:
    arrays = {}
    meta = []
    for i, j in enumerate(jobs):
        for key in JOB_KEYS:
            arrays[f"{i}_{key}"] = getattr(j, key)
        meta.append({"mode": j.mode, "n": j.n, "k": j.k, "tokens": j.tokens,
                     "cycles": j.cycles, "macs": j.macs, "interleave": j.interleave})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def load_jobs(path: Path) -> list[ArrayJob]:
    with np.load(path) as f:
        meta = json.loads(f["meta"].tobytes().decode())
        return [ArrayJob(**m, **{key: f[f"{i}_{key}"] for key in JOB_KEYS})
                for i, m in enumerate(meta)]


@dataclass
class JobStats:
    first_beat: int = -1      # cycle of the first accepted beat
    last_result: int = -1     # cycle of the last result taken

    @property
    def cycles(self) -> int:
        return self.last_result - self.first_beat + 1


@dataclass
class ArrayRun:
    results: list             # per job: (beats, 4) uint32
    stats: list               # per job: JobStats
    cycles: int
    seconds: float
    # The array's counters over the driver's ``cycles`` cycles, and what the testbench's
    # flow model (:class:`FlowModel`) says they must be.
    counters: dict = field(default_factory=dict)
    model_counters: dict = field(default_factory=dict)
    waves: Path | None = None         # the waveform, when the run recorded one

    @property
    def cycles_per_s(self) -> float:
        return self.cycles / self.seconds if self.seconds else 0.0


def mismatches(run: ArrayRun, jobs: list[ArrayJob], limit: int = 5) -> list[str]:
    """Describe results that differ bit for bit (NaNs included) from the golden beats;
    empty if none."""
    out = []
    for i, (got, job) in enumerate(zip(run.results, jobs)):
        got = np.asarray(got, dtype=np.uint32).reshape(-1, 4)
        if got.shape != job.expected.shape:
            out.append(f"job {i} ({job.mode} N={job.n} K={job.k}): {got.shape[0]} result beats, "
                       f"expected {job.expected.shape[0]}")
            continue
        bad = np.argwhere(got != np.asarray(job.expected, np.uint32))
        for b, lane in bad[:limit]:
            out.append(f"job {i} ({job.mode} N={job.n} K={job.k} T={job.tokens}) beat {b} lane "
                       f"{lane}: got {int(got[b, lane]):08x}, "
                       f"golden {int(job.expected[b, lane]):08x}")
    if len(run.results) != len(jobs):
        out.append(f"{len(run.results)} jobs finished, {len(jobs)} expected")
    return out[:limit]


class FlowModel:
    """When the array accepts beats and offers results, cycle by cycle, from the stimulus.

    The testbench's own model of the array's documented flow control (:class:`hw.array.PEArray`):
    the PEs' pipeline never holds; a beat moves through ``stages`` pipeline stages (2 plus
    the array's input registers, plus the PE's multiplier and adder stages) and a tile's
    results enter the result queues when its last beat leaves the last one. A tile is
    *outstanding* from the cycle after its last beat is accepted until the cycle after its
    results are released; the array accepts no beat while ``depth`` tiles are outstanding
    (:func:`hw.array.array_result_depth`).
    The result drain is two registers (:attr:`hw.array.PEArray.DRAIN_STAGES`), the second
    the head of a queue of :attr:`hw.array.PEArray.DRAIN_QUEUE` beats. The drain moves in
    the cycles for which it decided so two cycles before, when the queue had room for every
    beat already moved and one more even if none left it; each move reads the next PE's
    result while the PEs hold one, and a tile's results are released as its last PE's
    result is read.
    A configuration beat with a new ``lut`` (:meth:`load`)
    blocks the next :attr:`hw.array.PEArray.LUT_LOAD_CYCLES` cycles while the table is
    written; the pipeline and the result drain go on meanwhile. From this the model counts
    what the array's counters must read: ``lut_cycles`` (a lut being written),
    ``blocked_cycles`` (else the array cannot accept), ``busy_cycles`` (a beat accepted),
    ``starved_cycles`` (it could accept, but no weight and activation beat pair was
    offered).
    """

    def __init__(self, pes: int, stages: int = 2, depth: int = 4):
        self.pes = pes
        self.depth = depth
        self.loading = 0                        # cycles left of a lut write
        self.pipe = [(False, False)] * stages   # (valid, last) of each pipeline stage
        self.outstanding = 0                    # tiles accepted whose results are not released
        self.level = 0                          # finished tiles whose results wait
        self.drain = 0                          # next PE to read
        self.s1 = False                         # valid of the drain's first register
        self.queued = 0                         # beats in the output queue
        self.move = self.move_next = True       # the drain's decisions
        self.counters = dict.fromkeys(ARRAY_COUNTERS, 0)

    def step(self, w_on: bool, a_on: bool, last: bool, ready: bool) -> tuple[bool, bool]:
        """One cycle with these offers; return ``(can_take, results_valid)`` for it."""
        valid = self.level > 0
        step = self.move and valid
        take_all = step and self.drain == self.pes - 1
        done = self.pipe[-1][0] and self.pipe[-1][1]
        loading = self.loading > 0
        self.loading = max(0, self.loading - 1)
        can_take = self.outstanding < self.depth and not loading
        fire = can_take and w_on and a_on
        c = self.counters
        if loading:
            c["lut_cycles"] += 1
        elif not can_take:
            c["blocked_cycles"] += 1
        elif fire:
            c["busy_cycles"] += 1
        else:
            c["starved_cycles"] += 1
        results_valid = self.queued > 0
        self.queued += int(self.s1) - int(results_valid and ready)
        decide = self.queued + int(step) + int(self.move_next) + 1 <= PEArray.DRAIN_QUEUE
        self.move, self.move_next = self.move_next, decide
        if step:
            self.drain = 0 if self.drain == self.pes - 1 else self.drain + 1
        self.s1 = step
        self.level += int(done) - int(take_all)
        self.outstanding += int(fire and last) - int(take_all)
        self.pipe = [(fire, fire and last)] + self.pipe[:-1]
        return can_take, results_valid

    def load(self, cycles: int) -> None:
        """A configuration beat with a new ``lut`` was accepted this cycle."""
        self.loading = cycles


class ArrayDriver:
    """The cycle-by-cycle stimulus policy shared by the Amaranth and cocotb testbenches.

    Each cycle :meth:`offer` says what to present (a config beat, the next weight and
    activation beats, results.ready), and :meth:`update` takes the handshakes seen.
    Offered beats stay offered until taken (stream rules); idle cycles and backpressure
    are drawn from *seed*. A :class:`FlowModel` runs in lockstep: :meth:`update` raises
    :class:`AssertionError` when the array accepts a beat, refuses one, or offers a result
    in a cycle the model says otherwise, and :attr:`model_counters` are the counter values
    the model predicts for the cycles driven so far.
    """

    def __init__(self, jobs, *, stall: float, backpressure: float, seed: int, overlap: bool,
                 mul_stages: int = 0, add_stages: int = 0):
        self.jobs = jobs
        self.stall = stall
        self.backpressure = backpressure
        self.overlap = overlap
        self.rng = np.random.default_rng(seed)
        self.job_w = 0            # job whose beats are streaming (or whose config is due)
        self.wi = self.ai = 0     # next beat index within job_w
        self.configured = -1      # last job whose config was loaded
        self.lut = (0,) * 8       # the table the array holds (all +0.0 after reset)
        self.w_on = self.a_on = False
        self.results = [[] for _ in jobs]
        self.stats = [JobStats() for _ in jobs]
        self.job_r = 0            # job whose results are draining
        self.cycle = 0
        self.model = FlowModel(int(jobs[0].words.shape[1]) if jobs else 1,
                               stages=INPUT_STAGES + 2 + mul_stages + add_stages,
                               depth=array_result_depth(mul_stages, add_stages))
        self._ready = False

    @property
    def model_counters(self) -> dict:
        return dict(self.model.counters)

    @property
    def done(self) -> bool:
        return self.job_r >= len(self.jobs)

    def offer(self):
        """Return ``(config_job or None, weight_beat or None, acts_beat or None, ready)``."""
        cfg = None
        if self.job_w < len(self.jobs) and self.configured < self.job_w:
            if self.overlap or self.job_r >= self.job_w:
                cfg = self.job_w
        streaming = self.job_w < len(self.jobs) and self.configured == self.job_w
        job = self.jobs[self.job_w] if streaming else None
        if streaming and not self.w_on and self.wi < job.beats and self.rng.random() >= self.stall:
            self.w_on = True
        if streaming and not self.a_on and self.ai < job.beats and self.rng.random() >= self.stall:
            self.a_on = True
        w = (job.words[self.wi], bool(job.last[self.wi])) if self.w_on else None
        a = job.acts[self.ai] if self.a_on else None
        ready = self.rng.random() >= self.backpressure
        self._ready = ready
        return cfg, w, a, ready

    def update(self, cfg, w_fire: bool, a_fire: bool, result) -> None:
        """Record one cycle's handshakes (``cfg``: the job whose configuration beat was
        accepted, or ``None``; ``result``: the 4 lanes taken, or ``None``)."""
        last = self.w_on and bool(self.jobs[self.job_w].last[self.wi])
        can_take, valid = self.model.step(self.w_on, self.a_on, last, self._ready)
        want_fire = can_take and self.w_on and self.a_on
        if w_fire != want_fire or a_fire != want_fire:
            raise AssertionError(
                f"cycle {self.cycle}: weights/acts accepted {w_fire}/{a_fire} with offers "
                f"{self.w_on}/{self.a_on}, the flow model says the array "
                f"{'can' if can_take else 'cannot'} accept")
        if self._ready and (result is not None) != valid:
            raise AssertionError(f"cycle {self.cycle}: results.valid {result is not None}, "
                                 f"the flow model says {valid}")
        if cfg is not None:
            self.configured = cfg
            lut = tuple(int(x) for x in self.jobs[cfg].lut)
            if lut != self.lut:
                self.model.load(PEArray.LUT_LOAD_CYCLES)
                self.lut = lut
        if w_fire and a_fire and self.stats[self.job_w].first_beat < 0:
            self.stats[self.job_w].first_beat = self.cycle
        if w_fire:
            self.w_on = False
            self.wi += 1
        if a_fire:
            self.a_on = False
            self.ai += 1
        if self.job_w < len(self.jobs) and self.wi == self.ai == self.jobs[self.job_w].beats:
            self.job_w += 1
            self.wi = self.ai = 0
        if result is not None:
            if self.job_r >= len(self.jobs):
                raise AssertionError("the array produced a result nobody asked for")
            self.results[self.job_r].append(result)
            if len(self.results[self.job_r]) == self.jobs[self.job_r].expected.shape[0]:
                self.stats[self.job_r].last_result = self.cycle
                self.job_r += 1
        self.cycle += 1

    def result_arrays(self) -> list:
        return [np.array(r, dtype=np.uint32).reshape(-1, 4) for r in self.results]


def simulate_array(rows: int, cols: int, jobs: list[ArrayJob], *, stall: float = 0.2,
                   backpressure: float = 0.2, seed: int = 0, overlap: bool = True,
                   max_cycles: int | None = None, mul_stages: int = 0,
                   add_stages: int = 0) -> ArrayRun:
    """Run *jobs* (made for the same pipeline depth) on a fresh ``PEArray(rows, cols, ...)``
    in the Amaranth simulator."""
    from amaranth.sim import Simulator

    from hw.array import PEArray
    from hw.pe import PeMode

    depth = dict(mul_stages=mul_stages, add_stages=add_stages)
    dut = PEArray(rows, cols, **depth)
    p = rows * cols
    drv = ArrayDriver(jobs, stall=stall, backpressure=backpressure, seed=seed, overlap=overlap,
                      **depth)
    limit = max_cycles or 20 * sum(j.beats + j.expected.shape[0] for j in jobs) + 1000
    counters = {}

    async def testbench(ctx):
        while not drv.done:
            if drv.cycle >= limit:
                raise AssertionError(f"timeout after {limit} cycles")
            cfg, w, a, ready = drv.offer()
            ctx.set(dut.config.valid, cfg is not None)
            if cfg is not None:
                job = jobs[cfg]
                ctx.set(dut.config.payload.mode,
                        PeMode.DRAFT if job.mode == "draft" else PeMode.VERIFY)
                for d in range(8):
                    ctx.set(dut.config.payload.base[d], int(job.base[d]))
                    ctx.set(dut.config.payload.lut[d], int(job.lut[d]))
            ctx.set(dut.weights.valid, w is not None)
            if w is not None:
                for i in range(p):
                    ctx.set(dut.weights.payload.words[i], int(w[0][i]))
                ctx.set(dut.weights.payload.last, w[1])
            ctx.set(dut.acts.valid, a is not None)
            if a is not None:
                for j in range(4):
                    ctx.set(dut.acts.payload[j], int(a[j]))
            ctx.set(dut.results.ready, ready)
            w_fire = w is not None and ctx.get(dut.weights.ready)
            a_fire = a is not None and ctx.get(dut.acts.ready)
            c_fire = cfg is not None and ctx.get(dut.config.ready)
            result = None
            if ready and ctx.get(dut.results.valid):
                result = [ctx.get(dut.results.payload.data[j]) for j in range(4)]
            await ctx.tick()
            drv.update(cfg if c_fire else None, w_fire, a_fire, result)
        for name in ARRAY_COUNTERS + ("macs",):
            counters[name] = ctx.get(getattr(dut, name))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    start = time.perf_counter()
    sim.run()
    return ArrayRun(results=drv.result_arrays(), stats=drv.stats, cycles=drv.cycle,
                    seconds=time.perf_counter() - start, counters=counters,
                    model_counters=drv.model_counters)


def run_array_cocotb(simulator: str, rows: int, cols: int, jobs: list[ArrayJob],
                     build_dir: Path, *, seed: int, stall: float = 0.2,
                     backpressure: float = 0.2, overlap: bool = True,
                     flat: bool = False, optimize: bool = False, mul_stages: int = 0,
                     add_stages: int = 0, waves: bool | str | None = None) -> ArrayRun:
    """Run *jobs* on the generated Verilog of ``PEArray(rows, cols, ...)`` under cocotb.

    The Verilog is :func:`sim.netlist.convert` (one PE module instantiated
    ``rows * cols`` times), or with ``flat`` the plain conversion of ``PEArray``. The build
    folder is reused while the Verilog does not change. Verilator compiles the model with
    ``-O0`` unless ``optimize`` (its default ``-Os`` takes many minutes for a 4x4 array);
    use separate build folders for the two. ``waves``: see :func:`sim.runner.run_cocotb`.
    """

    from hw.array import PEArray
    from sim.netlist import convert
    from sim.runner import run_cocotb, simulator_missing

    reason = simulator_missing(simulator)
    if reason:
        raise RuntimeError(reason)
    top = f"pe_array_{rows}x{cols}"
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    v = build_dir / f"{top}.v"
    depth = dict(mul_stages=mul_stages, add_stages=add_stages)
    if flat:
        text = convert(PEArray(rows, cols, **depth), top)
    else:
        # Verilator would inline the PE module into the array and compile the PE's logic
        # rows * cols times; its metacomment keeps one PE class with rows * cols instances.
        text = convert(PEArray(rows, cols, pe_module=f"{top}_pe", **depth), top,
                       pe=array_pe(**depth))
        head = f"module {top}_pe("
        at = text.index(";", text.index(head)) + 1
        text = text[:at] + "\n  /*verilator no_inline_module*/" + text[at:]
    if not v.exists() or v.read_text() != text:
        v.write_text(text)
    jobs_path = build_dir / "jobs.npz"
    save_jobs(jobs_path, jobs)
    out_path = build_dir / "run.npz"
    if out_path.exists():
        out_path.unlink()
    makeflags = os.environ.get("MAKEFLAGS")
    if simulator == "verilator" and not optimize:
        os.environ["MAKEFLAGS"] = f"{makeflags or ''} OPT_FAST=-O0".strip()
    try:
        sim = run_cocotb(simulator=simulator, verilog_path=v, toplevel=top,
                         test_module="sim.tb_array", build_dir=build_dir, check=True, waves=waves,
                         extra_env={"ARRAY_PES": str(rows * cols), "ARRAY_JOBS": str(jobs_path),
                                    "ARRAY_OUT": str(out_path), "ARRAY_STALL": str(stall),
                                    "ARRAY_BACKPRESSURE": str(backpressure),
                                    "ARRAY_OVERLAP": str(int(overlap)), "SPEQMOE_SEED": str(seed),
                                    "ARRAY_MUL_STAGES": str(mul_stages),
                                    "ARRAY_ADD_STAGES": str(add_stages)})
    finally:
        if makeflags is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = makeflags
    with np.load(out_path) as f:
        info = json.loads(f["info"].tobytes().decode())
        results = [f[f"r{i}"] for i in range(len(jobs))]
    stats = [JobStats(**s) for s in info["stats"]]
    return ArrayRun(results=results, stats=stats, cycles=info["cycles"],
                    seconds=info["seconds"], counters=info["counters"],
                    model_counters=info["model_counters"], waves=sim.waves)
