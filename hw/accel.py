"""The accelerator top: one command-driven block an SoC instantiates (docs/accel.md).

:class:`Accelerator` joins the PE array (:class:`hw.array.PEArray`), the weight streamer
(:class:`hw.streamer.WeightStreamer`, which merges the draft and residual planes into BSFP
words in hardware), the activation buffer (:class:`hw.actbuf.ActBuffer`), the result writer
(:class:`hw.results.ResultWriter`) and the expert cache
(:class:`hw.expert_cache.ExpertCacheController`, whose slot memory the streamer reads) behind
one AXI4 master (reads through :class:`hw.axi.AxiReadArbiter`: demand fills, then weights,
then activations, then prefetch fills) and one AXI4-Lite slave (:class:`hw.csr.AxiLiteCsr`:
control, status, the command queue and every counter; :func:`register_map`).

Commands (8 words each, :data:`OPCODES`) run one at a time, in order. A command that fails
records its index and a cause (:data:`CAUSES`) in the error registers, and the next command
runs normally. The command encoding is shared with :mod:`golden.accel`, which models every
command at transaction level.
"""

from amaranth import *
from amaranth.lib import data, enum, fifo, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from hw import refusing
from hw.actbuf import ActBuffer
from hw.array import PEArray
from hw.axi import AxiLiteSignature, AxiReadArbiter, AxiSignature
from hw.csr import AxiLiteCsr, Field, Register, RegisterMap
from hw.expert_cache import COUNTERS as CACHE_COUNTERS, POLICIES, ExpertCacheController
from hw.pe import PeMode, depth_problem
from hw.results import ResultWriter
from hw.streamer import WeightStreamer

__all__ = ["OPCODES", "CAUSES", "ACCEL_COUNTERS", "CMD_WORDS", "Accelerator", "register_map",
           "register_doc"]

CMD_WORDS = 8
ACCEL_COUNTERS = {
    "busy_cycles": "cycles in which a command was executing",
    "mem_stall_cycles": "MATMUL cycles in which the array could take a beat but weights or "
                        "activations were not there",
    "wb_stall_cycles": "MATMUL cycles in which the array could not take a beat because results "
                       "were not written back yet",
    "bytes_dense": "weight bytes read from host memory (dense MATMULs)",
    "bytes_slot": "weight bytes read from the on-chip expert slots",
    "bytes_fill": "bytes read from host memory by expert-cache fills",
    "bytes_acts": "activation bytes read from host memory",
    "bytes_written": "result bytes written to host memory",
    "macs_lo": "MACs done by the array (padding included), bits 31..0",
    "macs_hi": "MACs, bits 63..32",
}
ID_MAGIC = 0x5350514D      # "SPQM"


class Op(enum.Enum, shape=4):
    LOAD_ACTS = 1
    SET_TABLES = 2
    MATMUL = 3
    DEMAND = 4
    PREFETCH = 5
    RELEASE = 6
    FENCE = 7


class Cause(enum.Enum, shape=4):
    NONE = 0
    OPCODE = 1
    DIMS = 2
    ALIGN = 3
    TABLES = 4
    READ = 5
    SLOT = 6
    FILL = 7
    RELEASE = 8
    ACTS = 9
    WRITE = 10
    OVERFLOW = 11
    EXPERT = 12
    FULL = 13


OPCODES = {o.name: o.value for o in Op}
CAUSES = {c.name: c.value for c in Cause if c.value}


class Command(data.Struct):
    """The 8 command words as fields (docs/accel.md); which fields count depends on the opcode."""
    op: 4
    draft: 1
    slot_src: 1
    fp16: 1
    _w0a: 1
    slot: 8          # MATMUL and RELEASE slot; LOAD_ACTS tokens in bits 2..0
    _w0b: 16
    n: 16            # MATMUL N; DEMAND/PREFETCH layer
    k: 16            # MATMUL/LOAD_ACTS K; DEMAND/PREFETCH expert
    addr_a: 32       # draft region / activation address
    addr_b: 32       # residual region / activation token stride
    out_addr: 32
    out_stride: 32
    w6: 32           # SET_TABLES lut[6], lut[7]
    w7: 32


class Tables(data.Struct):
    """SET_TABLES words 1..6: windows and the FP16 lut."""
    base: data.ArrayLayout(5, 8)
    size_m1: data.ArrayLayout(2, 8)
    _pad: 8
    lut: data.ArrayLayout(16, 8)


def register_map(*, cmd_words: int = CMD_WORDS) -> RegisterMap:
    """The accelerator's AXI4-Lite registers (docs/registers.md is generated from this)."""
    regs = [
        Register("ID", 0x000, "ro", f"constant 0x{ID_MAGIC:08X} (\"SPQM\")"),
        Register("CONFIG", 0x004, "ro", "build parameters", (
            Field("rows", 0, 8, "array rows"), Field("cols", 8, 8, "array columns"),
            Field("slots", 16, 8, "expert slots"), Field("log2_line", 24, 8,
                                                         "log2 of the bus width in bytes"))),
        Register("LIMITS", 0x008, "ro", "largest K and N", (
            Field("k_max", 0, 16, "largest K"), Field("n_max", 16, 16, "largest N"))),
        Register("EXPERT_BYTES", 0x00C, "ro", "bytes per expert slot"),
        Register("STATUS", 0x010, "ro", "state of the command queue", (
            Field("busy", 0, 1, "a command is executing or queued"),
            Field("error", 1, 1, "ERR_FIRST holds an error"),
            Field("queued", 8, 8, "commands waiting in the queue"),
            Field("free", 16, 8, "free queue entries"))),
        Register("CMD_PUSHED", 0x014, "ro", "commands pushed since reset (the next index)"),
        Register("CMD_DONE", 0x018, "ro", "commands finished since reset (failed ones included)"),
        Register("EXPERT_BASE", 0x01C, "rw", "host address of expert (0, 0); a multiple of the "
                 "bus width"),
        Register("ERR_FIRST", 0x020, "ro", "first error since ERR_CLEAR (sticky)", (
            Field("cause", 0, 4, "cause code (docs/accel.md)"), Field("valid", 31, 1, "set"))),
        Register("ERR_FIRST_INDEX", 0x024, "ro", "index of the command of ERR_FIRST"),
        Register("ERR_LAST", 0x028, "ro", "most recent error", (
            Field("cause", 0, 4, "cause code"), Field("valid", 31, 1, "set"))),
        Register("ERR_LAST_INDEX", 0x02C, "ro", "index of the command of ERR_LAST"),
        Register("ERR_COUNT", 0x030, "ro", "failed commands since ERR_CLEAR"),
        Register("ERR_CLEAR", 0x034, "wo", "any write clears ERR_FIRST, ERR_LAST and ERR_COUNT"),
        Register("RESP", 0x038, "ro", "response of the last DEMAND the cache answered", (
            Field("slot", 0, 8, "slot"), Field("hit", 8, 1, "hit"),
            Field("error", 9, 1, "the fill failed"), Field("valid", 31, 1, "set"))),
        Register("RESP_INDEX", 0x03C, "ro", "index of the DEMAND of RESP"),
    ]
    regs += [Register(f"CMD{i}", 0x040 + 4 * i, "rw", f"command word {i}")
             for i in range(cmd_words)]
    regs.append(Register("CMD_PUSH", 0x040 + 4 * cmd_words, "wo",
                         "any write queues CMD0..CMD7 as one command (dropped with an OVERFLOW "
                         "error when the queue is full)"))
    offset = 0x100
    for name, doc in ACCEL_COUNTERS.items():
        regs.append(Register(name.upper(), offset, "ro", doc))
        offset += 4
    offset = 0x180
    for name in CACHE_COUNTERS:
        regs.append(Register(f"CACHE_{name.upper()}", offset, "ro", f"expert cache: {name}"))
        offset += 4
    return RegisterMap(regs)


def register_doc() -> str:
    """docs/registers.md: the register map as Markdown (tests check the file is current)."""
    head = ("# Accelerator registers\n\n"
            "Generated from `hw.accel.register_map()` (`python -m speqmoe verilog` writes it "
            "beside the Verilog too); `tests/test_accel.py` checks that this file is current. "
            "AXI4-Lite, 32-bit registers, byte addresses; reads of write-only registers return 0, "
            "unmapped addresses answer SLVERR. Counters are 32 bits and wrap. The command "
            "encoding and the error causes are in `docs/accel.md`.\n\n")
    return head + register_map().markdown("Register map")


def _check_int(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, not {value!r}")


def _wire_read(m, master, slave):
    """Connect an AXI4 read master port to a slave port whose id is at least as wide."""
    for name in ("araddr", "arlen", "arsize", "arburst", "arvalid", "arid"):
        m.d.comb += getattr(slave, name).eq(getattr(master, name))
    for name in ("rdata", "rresp", "rlast", "rvalid", "arready"):
        m.d.comb += getattr(master, name).eq(getattr(slave, name))
    m.d.comb += [master.rid.eq(slave.rid), slave.rready.eq(master.rready)]


class Accelerator(wiring.Component):
    """The speqmoe accelerator: PE array, weight streamer, activation buffer, result writer and
    expert cache behind one AXI4 master and one AXI4-Lite slave.

    Parameters
    ----------
    rows, cols : int
        PE array shape; ``rows * cols`` must be a power of two, at least 4.
    bus_bits : int
        AXI data width: ``16 * rows * cols`` (the array takes one line per beat).
    slots : int
        Expert slots, 1..64.
    expert_bytes : int
        Bytes per expert slot, a multiple of the bus width.
    n_layers, n_experts : int
        MoE layers and experts per layer (the cache's tag space).
    policy : str
        Cache replacement: ``"lru"``, ``"fifo"`` or ``"lfu"``.
    k_max, n_max : int
        Largest K (a multiple of 4, at most 65532) and N (at most 65535) of a MATMUL.
    queue_depth : int
        Prefetch fills in flight at most.
    cmd_depth : int
        Command queue entries.
    addr_width : int
        AXI address width.
    max_burst : int
        Longest AXI burst in beats.
    fifo_lines : int
        Weight-stream FIFO depth per stream, in lines.
    pe_module : str, optional
        Instantiate the PEs as this external Verilog module (see :func:`hw.array.PEArray`).
    mul_stages, add_stages : int
        The PEs' pipeline depth (:class:`hw.pe.ReconfigurablePE`): ``mul_stages`` 0..4,
        ``add_stages`` 0, 1 or 3. The array then interleaves ``G = add_stages + 1`` tiles;
        matrices must be laid out for that ``G`` (``golden.accel.tensor_layout``), whose
        groups of ``G`` verify tiles must divide the 4 of a draft tile, hence no
        ``add_stages = 2``.

    Attributes
    ----------
    m_axi : Out(AxiSignature(addr_width, bus_bits, id_width=4))
        Host memory: reads by the arbiter (``arid[3:2]`` the source: 0 cache, 1 weights,
        2 activations), writes by the result writer.
    s_axil : In(AxiLiteSignature(addr_width=12))
        Registers, :func:`register_map`.
    irq : Out(1)
        High while the queue is empty and no command executes (``STATUS.busy`` low).

    Throughput: a MATMUL keeps the array at one beat per cycle when host memory delivers one
    line per cycle; a draft pass reads a quarter of the bytes of a verify pass.
    """

    @refusing
    def __init__(self, rows: int, cols: int, *, bus_bits: int | None = None, slots: int = 4,
                 expert_bytes: int = 4096, n_layers: int = 4, n_experts: int = 16,
                 policy: str = "lru", k_max: int = 1024, n_max: int = 1024,
                 queue_depth: int = 2, cmd_depth: int = 8, addr_width: int = 32,
                 max_burst: int = 16, fifo_lines: int = 64, pe_module: str | None = None,
                 mul_stages: int = 0, add_stages: int = 0):
        _check_int("rows", rows, 1)
        _check_int("cols", cols, 1)
        pes = rows * cols
        if pes < 4 or pes & (pes - 1):
            raise ValueError(f"rows * cols must be a power of two >= 4 (the bus width is 2 bytes "
                             f"per PE), not {pes}")
        if bus_bits is None:
            bus_bits = 16 * pes
        _check_int("bus_bits", bus_bits, 1)
        if bus_bits != 16 * pes:
            raise ValueError(f"bus_bits must be 16 * rows * cols = {16 * pes} (one line per beat "
                             f"of the array), not {bus_bits}")
        if bus_bits not in (64, 128, 256):
            raise ValueError(f"the expert cache's DMA supports 64, 128 or 256-bit buses; "
                             f"{rows}x{cols} needs {bus_bits}")
        _check_int("slots", slots, 1, 64)
        _check_int("expert_bytes", expert_bytes, bus_bits // 8)
        if expert_bytes % (bus_bits // 8):
            raise ValueError(f"expert_bytes must be a multiple of the bus width "
                             f"({bus_bits // 8} bytes), not {expert_bytes}")
        _check_int("n_layers", n_layers, 1, 1 << 16)
        _check_int("n_experts", n_experts, 1, 1 << 16)
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        _check_int("k_max", k_max, 4, 65532)
        if k_max % 4:
            raise ValueError(f"k_max must be a multiple of 4, not {k_max}")
        _check_int("n_max", n_max, 1, 65535)
        _check_int("queue_depth", queue_depth, 0)
        _check_int("cmd_depth", cmd_depth, 1, 255)
        _check_int("addr_width", addr_width, 13, 64)
        _check_int("max_burst", max_burst, 1, 256)
        _check_int("fifo_lines", fifo_lines, 2 * max_burst)
        _check_int("mul_stages", mul_stages, 0)
        _check_int("add_stages", add_stages, 0)
        problem = depth_problem(mul_stages, add_stages)
        if problem:
            raise ValueError(problem)
        if add_stages not in (0, 1, 3):
            raise ValueError(f"add_stages must be 0, 1 or 3 (the interleave add_stages + 1 must "
                             f"divide the 4 verify tiles of a draft tile), not {add_stages}")
        self._rows, self._cols = rows, cols
        self._bus_bits = bus_bits
        self._slots = slots
        self._expert_bytes = expert_bytes
        self._n_layers, self._n_experts = n_layers, n_experts
        self._policy = policy
        self._k_max, self._n_max = k_max, n_max
        self._queue_depth = queue_depth
        self._cmd_depth = cmd_depth
        self._addr_width = addr_width
        self._max_burst = max_burst
        self._fifo_lines = fifo_lines
        self._pe_module = pe_module
        self._mul_stages, self._add_stages = mul_stages, add_stages
        self._regmap = register_map()
        super().__init__({
            "m_axi": Out(AxiSignature(addr_width=addr_width, data_width=bus_bits, id_width=4)),
            "s_axil": In(AxiLiteSignature(addr_width=12)),
            "irq": Out(1),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    pes = property(lambda self: self._rows * self._cols)
    bus_bits = property(lambda self: self._bus_bits)
    line_bytes = property(lambda self: self._bus_bits // 8)
    slots = property(lambda self: self._slots)
    expert_bytes = property(lambda self: self._expert_bytes)
    n_layers = property(lambda self: self._n_layers)
    n_experts = property(lambda self: self._n_experts)
    policy = property(lambda self: self._policy)
    k_max = property(lambda self: self._k_max)
    n_max = property(lambda self: self._n_max)
    queue_depth = property(lambda self: self._queue_depth)
    cmd_depth = property(lambda self: self._cmd_depth)
    addr_width = property(lambda self: self._addr_width)
    regmap = property(lambda self: self._regmap)
    mul_stages = property(lambda self: self._mul_stages)
    add_stages = property(lambda self: self._add_stages)
    interleave = property(lambda self: self._add_stages + 1)

    def elaborate(self, platform):
        m = Module()
        P = self.pes
        W = self.line_bytes
        lg_w = exact_log2(W)
        lg_p = exact_log2(P)
        aw = self._addr_width

        # -- blocks ------------------------------------------------------------------------
        m.submodules.csr = csr = AxiLiteCsr(self._regmap, addr_width=12)
        wiring.connect(m, wiring.flipped(self.s_axil), csr.s_axil)
        m.submodules.cache = cache = ExpertCacheController(
            slots=self._slots, expert_bytes=self._expert_bytes, n_layers=self._n_layers,
            n_experts=self._n_experts, data_width=self._bus_bits, addr_width=aw,
            max_burst=self._max_burst, policy=self._policy, queue_depth=self._queue_depth,
            id_width=1)
        m.submodules.streamer = streamer = WeightStreamer(
            rows=self._rows, cols=self._cols, addr_width=aw, max_burst=self._max_burst,
            fifo_lines=self._fifo_lines, k_max=self._k_max, n_max=self._n_max,
            slot_addr_width=ceil_log2(cache.mem_depth), interleave=self.interleave)
        m.submodules.actbuf = actbuf = ActBuffer(
            rows=self._rows, cols=self._cols, k_max=self._k_max, addr_width=aw,
            max_burst=self._max_burst, interleave=self.interleave)
        m.submodules.array = array = PEArray(self._rows, self._cols, pe_module=self._pe_module,
                                             mul_stages=self._mul_stages,
                                             add_stages=self._add_stages)
        m.submodules.writer = writer = ResultWriter(
            rows=self._rows, cols=self._cols, n_max=self._n_max, addr_width=aw,
            max_burst=self._max_burst, interleave=self.interleave)
        m.submodules.arbiter = arb = AxiReadArbiter(
            sources=3, addr_width=aw, data_width=self._bus_bits, id_width=2)

        _wire_read(m, cache.m_axi, arb.s0)
        _wire_read(m, streamer.m_axi, arb.s1)
        _wire_read(m, actbuf.m_axi, arb.s2)
        m.d.comb += arb.low.eq(Cat(cache.fill_prefetch, 0, 0))
        axi = self.m_axi
        for name in ("arid", "araddr", "arlen", "arsize", "arburst", "arvalid", "rready"):
            m.d.comb += getattr(axi, name).eq(getattr(arb.m, name))
        for name in ("arready", "rid", "rdata", "rresp", "rlast", "rvalid"):
            m.d.comb += getattr(arb.m, name).eq(getattr(axi, name))
        wr = writer.m_axi
        for name in ("awid", "awaddr", "awlen", "awsize", "awburst", "awvalid", "wdata", "wstrb",
                     "wlast", "wvalid", "bready"):
            m.d.comb += getattr(axi, name).eq(getattr(wr, name))
        for name in ("awready", "wready", "bid", "bresp", "bvalid"):
            m.d.comb += getattr(wr, name).eq(getattr(axi, name))
        m.d.comb += [cache.mem.addr.eq(streamer.mem.addr), cache.mem.en.eq(streamer.mem.en),
                     streamer.mem.data.eq(cache.mem.data)]
        wiring.connect(m, streamer.beats, array.weights)
        wiring.connect(m, actbuf.acts, array.acts)
        wiring.connect(m, array.results, writer.results)

        # -- command queue -----------------------------------------------------------------
        cmd_w = data.Layout.cast(Command).size
        m.submodules.queue = queue = fifo.SyncFIFOBuffered(width=cmd_w + 32,
                                                           depth=self._cmd_depth)
        pushed = Signal(32)
        push = csr.CMD_PUSH.stb
        m.d.comb += [queue.w_data.eq(Cat(*[getattr(csr, f"CMD{i}") for i in range(CMD_WORDS)],
                                         pushed)),
                     queue.w_en.eq(push)]
        overflow = Signal()
        with m.If(push):
            m.d.sync += pushed.eq(pushed + 1)
            m.d.comb += overflow.eq(~queue.w_rdy)

        cmd = Signal(Command)
        index = Signal(32)
        cause = Signal(Cause)
        tables = Signal(Tables)
        m.d.comb += tables.as_value().eq(Cat(cmd.n, cmd.k, cmd.addr_a, cmd.addr_b, cmd.out_addr,
                                             cmd.out_stride, cmd.w6))

        # -- state -------------------------------------------------------------------------
        tab_valid = Signal()
        tab_base = Signal(data.ArrayLayout(5, 8))
        tab_lut = Signal(data.ArrayLayout(15, 8))
        acts_valid = Signal()
        acts_k = Signal(16)
        acts_tokens = Signal(3)
        done = Signal(32)
        err_first = Signal(Cause)
        err_first_index = Signal(32)
        err_last = Signal(Cause)
        err_last_index = Signal(32)
        err_count = Signal(32)
        resp_valid = Signal()
        resp = Signal(data.StructLayout({"slot": 8, "hit": 1, "error": 1}))
        resp_index = Signal(32)
        cnt = {name: Signal(32, name=f"cnt_{name}") for name in ACCEL_COUNTERS
               if not name.startswith("macs")}

        # -- checks of the latched command -------------------------------------------------
        tiles = Signal(16)          # verify tiles T = ceil(N / P)
        d_lines = Signal(32)        # draft region lines T * K / 4
        m.d.comb += tiles.eq((cmd.n + P - 1) >> lg_p)
        draft_tiles = Signal(16)
        m.d.comb += draft_tiles.eq((tiles + 3) >> 2)
        # The tiles the array runs: padded to a multiple of the interleave G.
        lg_g = exact_log2(self.interleave)
        run_tiles = Signal(16)
        m.d.comb += run_tiles.eq(
            ((Mux(cmd.draft, draft_tiles, tiles) + self.interleave - 1) >> lg_g) << lg_g)
        d_bytes = Signal(aw + 2)
        r_bytes = Signal(aw + 2)
        # x3 as a shift and an add: a multiplier here was the top's critical path.
        m.d.comb += [d_bytes.eq(d_lines << lg_w),
                     r_bytes.eq((d_lines + (d_lines << 1)) << lg_w)]
        low_bits = lambda v: v[:lg_w].any()     # noqa: E731
        tokens = cmd.slot[:3]
        bad_dims_mm = ((cmd.n == 0) | (cmd.n > self._n_max) | (cmd.k < 4)
                       | (cmd.k > self._k_max) | cmd.k[:2].any())
        bad_align_mm = (low_bits(cmd.addr_a) | low_bits(cmd.addr_b) | low_bits(cmd.out_addr)
                        | low_bits(cmd.out_stride))
        pinned = Signal(self._slots)
        m.d.comb += pinned.eq(cache.pinned)
        slot_pinned = Signal()
        m.d.comb += slot_pinned.eq((pinned >> cmd.slot[:ceil_log2(self._slots + 1)])[0])
        bad_slot = cmd.slot_src & ((cmd.slot >= self._slots) | ~slot_pinned
                                   | (cmd.addr_a + d_bytes > self._expert_bytes)
                                   | (cmd.addr_b + r_bytes > self._expert_bytes))
        bad_acts = ~acts_valid | (acts_k != cmd.k)
        bad_dims_load = (tokens == 0) | (tokens > 4) | (cmd.k == 0) | (cmd.k > self._k_max)
        bad_align_load = low_bits(cmd.addr_a) | low_bits(cmd.addr_b)
        bad_expert = (cmd.n >= self._n_layers) | (cmd.k >= self._n_experts)
        bad_tables = Signal()
        tbl_hi = [Signal(6, name=f"tbl_hi{d}") for d in range(8)]
        for d in range(8):
            m.d.comb += tbl_hi[d].eq(tables.base[d] + tables.size_m1[d])
        conds = []
        for d in range(8):
            conds.append(tbl_hi[d] > 31)
            conds.append(tables.lut[d][15])
            conds.append(tables.lut[d][10:15] == 31)
            for e in range(d + 1, 8):
                conds.append((tables.base[d] <= tbl_hi[e]) & (tables.base[e] <= tbl_hi[d]))
        # The window checks (28 overlap compares) depend on the command alone: registered
        # every cycle, they are computed in DECODE and read in CHECK, off the FSM's paths.
        m.d.sync += bad_tables.eq(Cat(*conds).any())

        # -- sequencer ---------------------------------------------------------------------
        sent = Signal(4)            # MATMUL: streamer, activations, writer, array config accepted
        in_compute = Signal()
        beats_left = Signal(32)

        def offer_request(kind):
            m.d.comb += [cache.req.valid.eq(1), cache.req.payload.layer.eq(cmd.n),
                         cache.req.payload.expert.eq(cmd.k), cache.req.payload.kind.eq(kind),
                         cache.req.payload.id.eq(0)]

        def finish(c=None):
            if c is not None:
                m.d.sync += cause.eq(c)
            m.next = "DONE"

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += queue.r_en.eq(1)
                with m.If(queue.r_rdy):
                    m.d.sync += [cmd.as_value().eq(queue.r_data[:cmd_w]),
                                 index.eq(queue.r_data[cmd_w:]), cause.eq(Cause.NONE)]
                    m.next = "DECODE"
            with m.State("DECODE"):
                # One cycle for the region size T * K / 4 (a multiply) before the checks.
                m.d.sync += d_lines.eq(tiles * cmd.k[2:])
                m.next = "CHECK"
            with m.State("CHECK"):
                with m.Switch(cmd.op):
                    with m.Case(Op.LOAD_ACTS):
                        with m.If(bad_dims_load):
                            finish(Cause.DIMS)
                        with m.Elif(bad_align_load):
                            finish(Cause.ALIGN)
                        with m.Else():
                            m.next = "LOAD"
                    with m.Case(Op.SET_TABLES):
                        with m.If(bad_tables):
                            m.d.sync += tab_valid.eq(0)
                            finish(Cause.TABLES)
                        with m.Else():
                            m.d.sync += tab_valid.eq(1)
                            for d in range(8):
                                m.d.sync += [tab_base[d].eq(tables.base[d]),
                                             tab_lut[d].eq(tables.lut[d][:15])]
                            finish()
                    with m.Case(Op.MATMUL):
                        with m.If(bad_dims_mm):
                            finish(Cause.DIMS)
                        with m.Elif(bad_align_mm):
                            finish(Cause.ALIGN)
                        with m.Elif(bad_slot):
                            finish(Cause.SLOT)
                        with m.Elif(~tab_valid):
                            finish(Cause.TABLES)
                        with m.Elif(bad_acts):
                            finish(Cause.ACTS)
                        with m.Else():
                            m.d.sync += [sent.eq(0), in_compute.eq(1),
                                         beats_left.eq(run_tiles * cmd.k)]
                            m.next = "MM_START"
                    with m.Case(Op.DEMAND):
                        with m.If(bad_expert):
                            finish(Cause.EXPERT)
                        with m.Else():
                            m.next = "DEMAND"
                    with m.Case(Op.PREFETCH):
                        with m.If(bad_expert):
                            finish(Cause.EXPERT)
                        with m.Else():
                            m.next = "PREFETCH"
                    with m.Case(Op.RELEASE):
                        with m.If(cmd.slot >= self._slots):
                            finish(Cause.SLOT)
                        with m.Else():
                            m.next = "RELEASE"
                    with m.Case(Op.FENCE):
                        m.next = "FENCE"
                    with m.Default():
                        finish(Cause.OPCODE)

            with m.State("LOAD"):
                m.d.comb += [actbuf.load.valid.eq(1),
                             actbuf.load.payload.tokens.eq(tokens),
                             actbuf.load.payload.k.eq(cmd.k),
                             actbuf.load.payload.addr.eq(cmd.addr_a),
                             actbuf.load.payload.stride.eq(cmd.addr_b)]
                with m.If(actbuf.load.ready):
                    m.next = "LOAD_WAIT"
            with m.State("LOAD_WAIT"):
                m.d.comb += actbuf.load_done.ready.eq(1)
                with m.If(actbuf.load_done.valid):
                    with m.If(actbuf.load_done.payload.error):
                        m.d.sync += acts_valid.eq(0)
                        finish(Cause.READ)
                    with m.Else():
                        m.d.sync += [acts_valid.eq(1), acts_k.eq(cmd.k),
                                     acts_tokens.eq(tokens)]
                        finish()

            with m.State("MM_START"):
                m.d.comb += [
                    streamer.cmd.valid.eq(~sent[0]),
                    streamer.cmd.payload.draft.eq(cmd.draft),
                    streamer.cmd.payload.slot_src.eq(cmd.slot_src),
                    streamer.cmd.payload.tiles.eq(tiles),
                    streamer.cmd.payload.k.eq(cmd.k),
                    streamer.cmd.payload.draft_addr.eq(
                        Mux(cmd.slot_src, cmd.slot * self._expert_bytes + cmd.addr_a, cmd.addr_a)),
                    streamer.cmd.payload.resid_addr.eq(
                        Mux(cmd.slot_src, cmd.slot * self._expert_bytes + cmd.addr_b, cmd.addr_b)),
                    actbuf.read.valid.eq(~sent[1]),
                    actbuf.read.payload.k.eq(cmd.k),
                    actbuf.read.payload.tiles.eq(run_tiles),
                    writer.cmd.valid.eq(~sent[2]),
                    writer.cmd.payload.draft.eq(cmd.draft),
                    writer.cmd.payload.fp16.eq(cmd.fp16),
                    writer.cmd.payload.n.eq(cmd.n),
                    writer.cmd.payload.tokens.eq(Mux(cmd.draft, 1, acts_tokens)),
                    writer.cmd.payload.out_addr.eq(cmd.out_addr),
                    writer.cmd.payload.out_stride.eq(cmd.out_stride),
                    array.config.valid.eq(~sent[3]),
                    array.config.payload.mode.eq(Mux(cmd.draft, PeMode.DRAFT, PeMode.VERIFY)),
                    array.config.payload.base.eq(tab_base),
                    array.config.payload.lut.eq(tab_lut),
                ]
                now = Cat(streamer.cmd.ready, actbuf.read.ready, writer.cmd.ready,
                          array.config.ready) | sent
                m.d.sync += sent.eq(now)
                with m.If(now.all()):
                    m.next = "MM_RUN"
            with m.State("MM_RUN"):
                m.d.comb += writer.done.ready.eq(1)
                with m.If(writer.done.valid):
                    with m.If(streamer.error):
                        finish(Cause.READ)
                    with m.Elif(writer.done.payload.error):
                        finish(Cause.WRITE)
                    with m.Else():
                        finish()

            with m.State("DEMAND"):
                offer_request(kind=0)
                with m.If(cache.req.ready):
                    m.next = "DEMAND_WAIT"
                with m.Elif(cache.blocked):
                    finish(Cause.FULL)
            with m.State("DEMAND_WAIT"):
                m.d.comb += cache.resp.ready.eq(1)
                with m.If(cache.resp.valid):
                    m.d.sync += [resp_valid.eq(1), resp_index.eq(index),
                                 resp.slot.eq(cache.resp.payload.slot),
                                 resp.hit.eq(cache.resp.payload.hit),
                                 resp.error.eq(cache.resp.payload.error)]
                    with m.If(cache.resp.payload.error):
                        finish(Cause.FILL)
                    with m.Else():
                        finish()
            with m.State("PREFETCH"):
                offer_request(kind=1)
                with m.If(cache.req.ready):
                    finish()
            with m.State("RELEASE"):
                m.d.comb += [cache.release.valid.eq(1), cache.release.payload.slot.eq(cmd.slot)]
                with m.If(cache.release.ready):
                    with m.If(cache.release_error):
                        finish(Cause.RELEASE)
                    with m.Else():
                        finish()
            with m.State("FENCE"):
                with m.If(cache.idle):
                    finish()
            with m.State("DONE"):
                m.d.sync += [done.eq(done + 1), in_compute.eq(0)]
                m.next = "IDLE"

        # -- errors ------------------------------------------------------------------------
        seq_err = fsm.ongoing("DONE") & (cause != Cause.NONE)
        with m.If(csr.ERR_CLEAR.stb):
            m.d.sync += [err_first.eq(Cause.NONE), err_last.eq(Cause.NONE), err_count.eq(0)]
        with m.Else():
            m.d.sync += err_count.eq(err_count + seq_err + overflow)
            with m.If(err_first == Cause.NONE):
                with m.If(seq_err):
                    m.d.sync += [err_first.eq(cause), err_first_index.eq(index)]
                with m.Elif(overflow):
                    m.d.sync += [err_first.eq(Cause.OVERFLOW), err_first_index.eq(pushed)]
            with m.If(overflow):
                m.d.sync += [err_last.eq(Cause.OVERFLOW), err_last_index.eq(pushed)]
            with m.Elif(seq_err):
                m.d.sync += [err_last.eq(cause), err_last_index.eq(index)]

        # -- counters ----------------------------------------------------------------------
        def add(name, amount):
            m.d.sync += cnt[name].eq(cnt[name] + amount)

        busy = ~fsm.ongoing("IDLE")
        with m.If(busy):
            add("busy_cycles", 1)
        fire = array.weights.valid & array.weights.ready
        with m.If(fire):
            m.d.sync += beats_left.eq(beats_left - 1)
        compute = in_compute & (beats_left != 0)
        with m.If(compute & array.stall_in):
            add("mem_stall_cycles", 1)
        with m.If(compute & array.stall_out):
            add("wb_stall_cycles", 1)
        r_fire = axi.rvalid & axi.rready
        src = axi.rid[2:4]
        with m.If(r_fire & (src == 1)):
            add("bytes_dense", W)
        with m.If(r_fire & (src == 0)):
            add("bytes_fill", W)
        with m.If(r_fire & (src == 2)):
            add("bytes_acts", W)
        with m.If(streamer.mem.en):
            add("bytes_slot", W)
        with m.If(axi.wvalid & axi.wready):
            add("bytes_written", sum(axi.wstrb[i] for i in range(W)))

        # -- registers ---------------------------------------------------------------------
        m.d.comb += [
            csr.ID.eq(ID_MAGIC),
            csr.CONFIG.eq(Cat(C(self._rows, 8), C(self._cols, 8), C(self._slots, 8),
                              C(lg_w, 8))),
            csr.LIMITS.eq(Cat(C(self._k_max, 16), C(self._n_max, 16))),
            csr.EXPERT_BYTES.eq(self._expert_bytes),
            csr.STATUS.eq(Cat(busy | queue.r_rdy, err_first != Cause.NONE, C(0, 6),
                              queue.level[:8], C(0, 8 - min(8, len(queue.level))),
                              (self._cmd_depth - queue.level)[:8])),
            csr.CMD_PUSHED.eq(pushed),
            csr.CMD_DONE.eq(done),
            cache.base_addr.eq(csr.EXPERT_BASE),
            csr.ERR_FIRST.eq(Cat(err_first, C(0, 27), err_first != Cause.NONE)),
            csr.ERR_FIRST_INDEX.eq(err_first_index),
            csr.ERR_LAST.eq(Cat(err_last, C(0, 27), err_last != Cause.NONE)),
            csr.ERR_LAST_INDEX.eq(err_last_index),
            csr.ERR_COUNT.eq(err_count),
            csr.RESP.eq(Cat(resp.slot, resp.hit, resp.error, C(0, 21), resp_valid)),
            csr.RESP_INDEX.eq(resp_index),
            csr.MACS_LO.eq(array.macs[:32]),
            csr.MACS_HI.eq(array.macs[32:]),
            self.irq.eq(~busy & ~queue.r_rdy),
        ]
        for name, sig in cnt.items():
            m.d.comb += getattr(csr, name.upper()).eq(sig)
        for name in CACHE_COUNTERS:
            m.d.comb += getattr(csr, f"CACHE_{name.upper()}").eq(getattr(cache.counters, name))
        return m
