"""The expert request trace format: round trip, strict reader, lockstep replay."""

from __future__ import annotations

import pytest

from golden.expert_cache import ExpertCacheModel
from golden.trace import (Trace, TraceBuilder, TraceRecord, format_trace, parse_trace,
                          read_trace, replay, write_trace)

GOOD = """speqmoe-expert-trace 1
# a comment
meta n_layers 2
meta n_experts 4
meta source unit test, two words
D 0 0 1 0
P 0 0 2
X 0 0 1
R 0 0

D 1 1 3 1
D 1 1 2 2
X 1 1 2
R 1 2
R 1 1
"""


def test_good_trace_parses_and_round_trips(tmp_path):
    t = parse_trace(GOOD)
    assert t.n_layers == 2 and t.n_experts == 4 and t.meta["source"] == "unit test, two words"
    assert t.records[0] == TraceRecord("D", 0, 0, 1, id=0)
    assert t.records[1] == TraceRecord("P", 0, 0, 2)
    assert t.records[2] == TraceRecord("X", 0, 0, n=1)
    assert t.records[3] == TraceRecord("R", 0, id=0)
    assert [t.count(op) for op in "DPXR"] == [3, 1, 2, 3]
    path = tmp_path / "t.trace"
    write_trace(path, t)
    assert read_trace(path) == t
    assert parse_trace(format_trace(t)) == t


def test_builder_assigns_increasing_ids():
    b = TraceBuilder(2, 4, source="x")
    a = b.demand(0, 0, 1)
    b.compute(0, 0, 1)
    b.release(0, a)
    c = b.demand(1, 1, 1)
    assert (a, c) == (0, 1)
    assert parse_trace(format_trace(b.trace)) == b.trace


BAD = [
    ("", 1, "empty"),
    ("speqmoe-expert-trace 3\n", 1, "version"),
    ("expert-trace 1\n", 1, "not an expert trace"),
    ("speqmoe-expert-trace 1\nD 0 0 0 0\n", 2, "required"),
    ("speqmoe-expert-trace 1\nmeta n_layers 2\nmeta n_layers 3\n", 3, "duplicate"),
    ("speqmoe-expert-trace 1\nmeta n_layers 0\n", 2, "positive"),
    ("speqmoe-expert-trace 1\nmeta Bad x\n", 2, "key"),
    ("speqmoe-expert-trace 1\nmeta n_layers 2\nmeta n_experts 4\nQ 0 0\n", 4, "unknown record"),
    ("speqmoe-expert-trace 1\nmeta n_layers 2\nmeta n_experts 4\nD 0 0 0\n", 4, "4 fields"),
    ("speqmoe-expert-trace 1\nmeta n_layers 2\nmeta n_experts 4\nD 0 2 0 0\n", 4, "layer 2"),
    ("speqmoe-expert-trace 1\nmeta n_layers 2\nmeta n_experts 4\nP 0 0 4\n", 4, "expert 4"),
    ("speqmoe-expert-trace 1\nmeta n_layers 2\nmeta n_experts 4\nP 0 0 -1\n", 4, "non-negative"),
    ("speqmoe-expert-trace 1\nmeta n_layers 2\nmeta n_experts 4\nP 0 0 01\n", 4, "decimal"),
    ("speqmoe-expert-trace 1\nmeta n_layers 2\nmeta n_experts 4\nP 1 0 1\nP 0 0 1\n", 5, "step"),
    ("speqmoe-expert-trace 1\nmeta n_layers 2\nmeta n_experts 4\nD 0 0 1 5\nD 0 0 2 5\n", 5, "id"),
    ("speqmoe-expert-trace 1\nmeta n_layers 2\nmeta n_experts 4\nR 0 0\n", 4, "not been requested"),
    ("speqmoe-expert-trace 1\nmeta n_layers 2\nmeta n_experts 4\nD 0 0 1 0\nR 0 0\nR 0 0\n", 6,
     "twice"),
    ("speqmoe-expert-trace 1\nmeta n_layers 2\nmeta n_experts 4\nP 0 0 1\nmeta x y\n", 5, "before"),
    ("speqmoe-expert-trace 1\nmeta n_layers 2\nmeta n_experts 4\nP  0 0 1\n", 4, "single spaces"),
    ("speqmoe-expert-trace 1\nmeta n_layers 2\n", 2, "required"),
]


@pytest.mark.parametrize("text,line,words", BAD)
def test_malformed_trace_is_value_error_with_line_number(text, line, words):
    with pytest.raises(ValueError) as info:
        parse_trace(text, name="t.trace")
    message = str(info.value)
    assert message.startswith(f"t.trace:{line}: "), message
    assert words in message, message


def test_writer_refuses_invalid_trace():
    t = Trace({"n_layers": "1", "n_experts": "2"}, [TraceRecord("R", 0, id=3)])
    with pytest.raises(ValueError, match="not been requested"):
        format_trace(t)


def test_read_trace_rejects_binary(tmp_path):
    path = tmp_path / "bin.trace"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="UTF-8"):
        read_trace(path)


def test_replay_matches_direct_cache_use():
    t = parse_trace(GOOD)
    c = ExpertCacheModel(2, n_layers=2, n_experts=4)
    results = replay(t, c)
    assert [r.reason for r in results] == ["miss", "issued", "miss", "miss"]
    assert [r.victim for r in results] == [None, None, (0, 1), (0, 2)]
    assert c.counters.releases == 3 and c.counters.bad_releases == 0
    c.check_invariants()


def test_replay_raises_when_trace_holds_more_pins_than_slots():
    b = TraceBuilder(1, 4)
    for e in range(3):
        b.demand(0, 0, e)
    with pytest.raises(ValueError, match="would wait forever"):
        replay(b.trace, ExpertCacheModel(2))


def test_replay_skips_release_of_failed_demand():
    b = TraceBuilder(1, 4)
    rid = b.demand(0, 0, 1)
    b.release(0, rid)
    c = ExpertCacheModel(2)
    c.inject_error(0, 1)
    results = replay(b.trace, c)
    assert results[0].error and c.counters.bad_releases == 0


@pytest.mark.parametrize("policy", ["lru", "fifo", "lfu"])
def test_recorded_mobile_trace_replays_through_every_policy(policy, seed):
    from golden.mobile import MobileConfig, MobileDecoder, build_trace
    from golden.model import ModelConfig, MoeLM
    import numpy as np

    cfg = ModelConfig(d_model=16, n_layers=2, n_heads=1, n_experts=8, top_k=4, d_expert=16,
                      max_seq=32)
    model = MoeLM.init_random(cfg, seed % 1000)
    toks = np.random.default_rng(seed).integers(0, 256, size=24)
    run = MobileDecoder(model, MobileConfig(tau=0.0075, next_layer=True)).run(toks)
    trace = parse_trace(format_trace(build_trace(run.steps, 2, 8, source="test")))
    cache = ExpertCacheModel(6, policy, n_layers=2, n_experts=8, expert_bytes=4096)
    cache.inject_error(1, 3)
    results = replay(trace, cache)
    cache.check_invariants()
    c = cache.counters
    assert c.demands == trace.count("D") and c.prefetches == trace.count("P")
    assert c.hits + c.misses == c.demands and c.demand_waits == 0
    assert c.releases + sum(r.error for r in results if r.kind == "demand") == trace.count("R")
    assert all(cache.slot_state(s).pins == 0 for s in range(6))
    # the same trace replays to the same results (the model is deterministic)
    again = ExpertCacheModel(6, policy, n_layers=2, n_experts=8, expert_bytes=4096)
    again.inject_error(1, 3)
    assert replay(trace, again) == results
