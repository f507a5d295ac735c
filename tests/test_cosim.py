"""End-to-end co-simulation: the decoder on the golden accelerator model and on the RTL."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from golden import mobile as gmobile
from golden import speq
from golden.accel import Matmul
from golden.mobile import MobileConfig
from golden.model import MoeLM
from sim.cosim import (MODES, CosimError, Decoder, GoldenBackend, MemoryMap, accel_params,
                       first_difference, golden_decode, golden_model)
from sim.runner import simulator_missing
from tests.conftest import SMALL

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "tests"
PROMPT = b"Hello, wor"


def _tau(model) -> float:
    """A MoBiLE threshold that sends about half the tokens of ``PROMPT`` to the big pass."""
    r = gmobile.generate(model, PROMPT, 6, MobileConfig(tau=0.0), linear=speq.hw_arith_linear)
    return float(np.median([s.confidence for s in r.steps]))


def _decode(model, mode, pes=4, tokens=6, backend_cls=GoldenBackend, **kw):
    mmap = MemoryMap.build(model, pes)
    params = accel_params(model, mmap, 2, pes // 2, slots=4)
    backend = backend_cls(golden_model(params, mmap), mmap.line)
    dec = Decoder(model, mmap, backend, mode, record=True, **kw)
    return asyncio.run(dec.generate(PROMPT, tokens)), dec


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pes", [4, 8])
def test_decoder_on_the_golden_accelerator_equals_golden_hw_arith_decoding(small, mode, pes):
    kw = {"mobile": MobileConfig(tau=_tau(small))} if mode == "mobile" else {}
    res, _ = _decode(small, mode, pes, **kw)
    want, outputs = golden_decode(small, PROMPT, 6, mode, record=True, **kw)
    assert res.bytes == want
    assert first_difference(res.outputs, outputs) is None
    kinds = {p.kind for p in res.passes}
    assert kinds == {"plain": {"plain"}, "speq": {"verify", "draft"},
                     "mobile": {"little", "big"}}[mode], kinds
    c = res.counters
    assert c["errors"] == 0 and c["cache_demands"] == c["cache_releases"] > 0
    assert c["cache_hits"] + c["cache_misses"] == c["cache_demands"]


class CorruptBackend(GoldenBackend):
    """Flips the sign of one output row of one MATMUL (the third ``layers.1.attn.wv``)."""

    count = 0

    async def run(self, commands):
        resp = await super().run(commands)
        for cmd, label in commands:
            if isinstance(cmd, Matmul) and label.endswith("layers.1.attn.wv"):
                type(self).count += 1
                if type(self).count == 3:
                    self.model.mem[cmd.out_addr + 3] ^= 0x80
        return resp


def test_a_wrong_result_is_named_by_position_and_matrix(small):
    CorruptBackend.count = 0
    res, _ = _decode(small, "plain", backend_cls=CorruptBackend)
    _, outputs = golden_decode(small, PROMPT, 6, "plain", record=True)
    where = first_difference(res.outputs, outputs)
    assert where is not None and where.startswith("position 8, layers.1.attn.wv: output row 0")


def test_bad_decoder_arguments_are_refused(small):
    mmap = MemoryMap.build(small, 4)
    params = accel_params(small, mmap, 2, 2)
    backend = GoldenBackend(golden_model(params, mmap), mmap.line)
    with pytest.raises(ValueError, match="gamma"):
        Decoder(small, mmap, backend, "speq", gamma=4)
    with pytest.raises(ValueError, match="mode"):
        Decoder(small, mmap, backend, "greedy")
    with pytest.raises(ValueError, match="next-layer"):
        Decoder(small, mmap, backend, "mobile", mobile=MobileConfig(next_layer=True))
    bad = MoeLM.init_random(dataclasses.replace(SMALL, d_expert=18), 1)
    with pytest.raises(ValueError, match="multiple of 4"):
        MemoryMap.build(bad, 4)


def test_a_failing_command_names_the_pass_layer_and_matrix(small):
    mmap = MemoryMap.build(small, 4)
    params = dataclasses.replace(accel_params(small, mmap, 2, 2), k_max=16)   # K=32 too big
    backend = GoldenBackend(golden_model(params, mmap), mmap.line)
    with pytest.raises(CosimError, match=r"plain pass at position 0, layer 0: activations.*DIMS"):
        asyncio.run(Decoder(small, mmap, backend, "plain").generate(PROMPT, 2))


# ------------------------------------------------------------------------------------------
# RTL


@pytest.mark.slow
def test_cosim_on_verilator_every_mode_and_both_memories(small, tmp_path, seed):
    """Every mode on the RTL host memory, and SPEQ (draft and verify passes, expert demands)
    also on cocotbext-axi's AxiRam with AXI pauses, each command checked against the golden
    accelerator model, the bytes against the golden decoding; both memories give the same
    bytes and counters. (AxiRam costs Python per bus beat: the plain and MoBiLE runs on it
    took about 100 of this test's 175 s. The accelerator's own tests run random programs,
    prefetches included, on AxiRam with pauses.)"""
    from sim.cosim_flow import RunSpec, prepare, run_cosim

    reason = simulator_missing("verilator")
    if reason:
        pytest.skip(reason)
    weights = tmp_path / "small.npz"
    small.save(weights)
    mmap, params, memory = prepare(small, rows=2, cols=2, slots=4, latency=12)
    tau = _tau(small)
    runs = [RunSpec(prompt=PROMPT.hex(), tokens=3, mode=mode, tau=tau, seed=seed) for mode in MODES]
    runs.append(RunSpec(prompt=PROMPT.hex(), tokens=3, mode="speq", tau=tau, memory="axiram",
                        pauses=0.2, seed=seed))
    failed, out = run_cosim(params, memory, weights, runs, BUILD / "cosim_2x2")
    assert failed == 0 and all(r is not None for r in out)
    assert all(r["identical"] for r in out) and [r["memory"] for r in out] == ["rtl"] * 3 + ["axiram"]
    rtl, ram = out[list(MODES).index("speq")], out[-1]
    assert rtl["bytes_hex"] == ram["bytes_hex"]
    skip = ("busy_cycles", "mem_stall_cycles", "wb_stall_cycles", "cache_demand_stall_cycles")
    assert {k: v for k, v in rtl["counters"].items() if k not in skip} == \
        {k: v for k, v in ram["counters"].items() if k not in skip}
    kinds = {r["mode"]: {p["kind"] for p in r["passes"]} for r in out}
    assert kinds["mobile"] == {"little", "big"} and kinds["speq"] == {"draft", "verify"}

    # the command line on the same build: plain decoding, one JSON object
    config = tmp_path / "cosim.toml"
    config.write_text("[cosim]\nrows = 2\ncols = 2\nslots = 4\nlatency = 12\n")
    import contextlib
    import io
    import json

    from speqmoe.cli import main

    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        status = main(["cosim", "--prompt", PROMPT.decode(), "--tokens", "2", "--mode", "plain",
                       "--weights", str(weights), "--config", str(config), "--build",
                       str(BUILD / "cosim_2x2"), "--json"])
    assert status == 0, err.getvalue()
    got = json.loads(buf.getvalue())
    # greedy decoding: the command's 2 bytes are the first 2 of the 3-token plain run above
    assert len(got["bytes_hex"]) == 4 and out[0]["bytes_hex"].startswith(got["bytes_hex"])
    assert got["identical_to_golden"]
    assert got["cycles_per_token"] > 0 and got["cycles"] > 0
    assert PROMPT.decode() in err.getvalue()          # progress went to stderr


@pytest.mark.parametrize("args, message", [
    (["--gamma", "4", "--mode", "speq"], "--gamma must be 1..3"),
    (["--mode", "speq+mobile"], "SPEQ x MoBiLE"),
    (["--pauses", "0.2"], "--pauses needs --memory axiram"),
    (["--tokens", "0"], "--tokens must be positive"),
])
def test_cosim_command_refuses_bad_arguments_in_one_line(args, message, capsys):
    from speqmoe.cli import main

    assert main(["cosim", "--prompt", "Hi", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
