"""Every rule of golden.expert_cache, one test each (see the module docstring)."""

from __future__ import annotations

import pytest

from golden.expert_cache import (BadReleaseError, ExpertCacheModel, FILLING, INVALID, VALID,
                                 run_requests)


def demand(c, layer, expert):
    return c.access(layer, expert, "demand")


def prefetch(c, layer, expert):
    return c.access(layer, expert, "prefetch")


def fill(c, tags):
    """Demand each tag and release it at once; return the slots."""
    slots = []
    for t in tags:
        r = demand(c, *t)
        c.release(r.slot)
        slots.append(r.slot)
    return slots


# -- parameters and bad input ---------------------------------------------

@pytest.mark.parametrize("slots", [0, -1, 1.5, "4", True])
def test_slots_below_one_or_not_integer_is_rejected(slots):
    with pytest.raises(ValueError, match="slots"):
        ExpertCacheModel(slots)


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="policy"):
        ExpertCacheModel(4, policy="random")


@pytest.mark.parametrize("kw", [dict(queue_depth=-1), dict(expert_bytes=0), dict(max_pins=0),
                                dict(lfu_max=0), dict(n_layers=0), dict(n_experts=-2)])
def test_bad_parameters_are_rejected(kw):
    with pytest.raises(ValueError):
        ExpertCacheModel(4, **kw)


def test_bad_kind_and_out_of_range_requests_are_rejected():
    c = ExpertCacheModel(4, n_layers=2, n_experts=8)
    with pytest.raises(ValueError, match="kind"):
        c.access(0, 0, "load")
    with pytest.raises(ValueError, match="layer"):
        demand(c, 2, 0)
    with pytest.raises(ValueError, match="expert"):
        demand(c, 0, 8)
    with pytest.raises(ValueError):
        demand(c, -1, 0)
    with pytest.raises(ValueError):
        c.release(4)
    assert c.counters.demands == 0


def test_host_address_follows_design_formula():
    c = ExpertCacheModel(2, expert_bytes=3000, n_layers=4, n_experts=16)
    assert c.host_address(2, 5, base_addr=0x1234) == 0x1234 + (2 * 16 + 5) * 3000


# -- demand rules ----------------------------------------------------------

def test_demand_miss_takes_lowest_index_invalid_slot():
    c = ExpertCacheModel(4)
    r = demand(c, 0, 7)
    assert (r.hit, r.slot, r.victim, r.reason) == (False, 0, None, "miss")
    assert demand(c, 0, 8).slot == 1
    c.release(0)
    c.release(1)
    c.fail_next_fills(1)
    bad = demand(c, 1, 1)          # slot 2 filled, fails -> invalid again
    assert bad.error and bad.slot == 2 and c.slot_state(2).state == INVALID
    assert demand(c, 1, 2).slot == 2   # lowest invalid, not 3


def test_demand_miss_prefers_invalid_slot_over_eviction():
    c = ExpertCacheModel(3)
    fill(c, [(0, 0), (0, 1)])
    r = demand(c, 0, 2)
    assert r.slot == 2 and r.victim is None and c.counters.evictions == 0


def test_demand_hit_pins_and_responds_with_same_slot():
    c = ExpertCacheModel(2)
    first = demand(c, 0, 3)
    second = demand(c, 0, 3)
    assert second.hit and second.slot == first.slot and second.reason == "hit"
    assert c.slot_state(first.slot).pins == 2


def test_pins_are_counted_two_demands_need_two_releases():
    c = ExpertCacheModel(1)
    s = demand(c, 0, 0).slot
    demand(c, 0, 0)
    c.release(s)
    assert demand(c, 0, 1).waited          # still pinned once
    c.release(s)
    r = demand(c, 0, 1)
    assert r.slot == s and r.victim == (0, 0)


def test_demand_miss_never_evicts_pinned_slot():
    c = ExpertCacheModel(2)
    a = demand(c, 0, 0).slot          # pinned
    fill(c, [(0, 1)])
    r = demand(c, 0, 2)
    assert r.victim == (0, 1) and r.slot != a
    assert c.lookup(0, 0) == a


def test_demand_with_no_takeable_slot_would_wait_and_changes_nothing():
    c = ExpertCacheModel(2, policy="lfu")
    demand(c, 0, 0)
    demand(c, 0, 1)
    before = ([c.slot_state(i) for i in range(2)], c.recency_order(), c.fifo_order())
    counters = c.counters.as_dict()
    r = demand(c, 0, 2)
    assert r.waited and r.reason == "wait_no_slot" and r.slot is None and not r.hit
    assert ([c.slot_state(i) for i in range(2)], c.recency_order(), c.fifo_order()) == before
    after = c.counters.as_dict()
    assert after.pop("demand_waits") == counters.pop("demand_waits") + 1
    assert after.pop("demands") == counters.pop("demands") + 1
    assert after == counters
    c.check_invariants()


def test_demand_at_pin_limit_would_wait():
    c = ExpertCacheModel(2, max_pins=2)
    demand(c, 0, 0)
    demand(c, 0, 0)
    r = demand(c, 0, 0)
    assert r.waited and r.reason == "wait_pin_limit" and c.slot_state(0).pins == 2


def test_demand_hit_makes_slot_most_recently_used():
    c = ExpertCacheModel(3)
    fill(c, [(0, 0), (0, 1), (0, 2)])
    assert c.recency_order() == [0, 1, 2]
    c.release(demand(c, 0, 0).slot)
    assert c.recency_order() == [1, 2, 0]
    assert demand(c, 0, 9).victim == (0, 1)


def test_fill_makes_slot_most_recently_used():
    c = ExpertCacheModel(3)
    fill(c, [(0, 0), (0, 1), (0, 2)])
    c.release(demand(c, 0, 3).slot)     # evicts slot 0 and makes it MRU
    assert c.recency_order() == [1, 2, 0]
    prefetch(c, 0, 4)                   # evicts slot 1, fill makes it MRU
    assert c.recency_order() == [2, 0, 1]


def test_eviction_is_counted_and_reported():
    c = ExpertCacheModel(1, expert_bytes=100)
    fill(c, [(0, 0), (1, 0)])
    assert c.counters.evictions == 1 and c.counters.bytes_read == 200
    assert c.resident() == {(1, 0): 0}


# -- release rules ---------------------------------------------------------

def test_release_of_unpinned_slot_raises_counts_and_changes_nothing():
    c = ExpertCacheModel(2)
    fill(c, [(0, 0)])
    before = [c.slot_state(i) for i in range(2)], c.recency_order()
    with pytest.raises(BadReleaseError, match="not pinned"):
        c.release(0)
    with pytest.raises(BadReleaseError):
        c.release(1)                    # invalid slot
    assert c.counters.bad_releases == 2 and c.counters.releases == 1
    assert ([c.slot_state(i) for i in range(2)], c.recency_order()) == before
    assert isinstance(BadReleaseError("x"), ValueError)


# -- prefetch rules --------------------------------------------------------

def _snapshot(c):
    return ([c.slot_state(i) for i in range(c.slots)], c.recency_order(), c.fifo_order(),
            c.pending_prefetches())


def _assert_dropped_changes_nothing(c, layer, expert, reason):
    before = _snapshot(c)
    counters = c.counters.as_dict()
    r = prefetch(c, layer, expert)
    assert r.dropped and r.reason == reason and r.slot is None and r.victim is None
    assert _snapshot(c) == before
    after = c.counters.as_dict()
    assert after["prefetches_dropped"] == counters["prefetches_dropped"] + 1
    for key in ("hits", "misses", "evictions", "bytes_read", "prefetches_issued"):
        assert after[key] == counters[key]


def test_prefetch_of_resident_expert_is_dropped_and_changes_nothing_recency_included():
    c = ExpertCacheModel(3)
    fill(c, [(0, 0), (0, 1), (0, 2)])
    _assert_dropped_changes_nothing(c, 0, 0, "resident")
    assert demand(c, 0, 5).victim == (0, 0)   # (0, 0) is still the LRU


def test_prefetch_of_in_flight_expert_is_dropped():
    c = ExpertCacheModel(3, lockstep=False)
    prefetch(c, 0, 1)
    _assert_dropped_changes_nothing(c, 0, 1, "in_flight")


def test_prefetch_with_full_queue_is_dropped():
    c = ExpertCacheModel(4, queue_depth=2, lockstep=False)
    assert prefetch(c, 0, 0).reason == "issued"
    assert prefetch(c, 0, 1).reason == "issued"
    _assert_dropped_changes_nothing(c, 0, 2, "queue_full")
    c.complete_prefetches(1)
    assert prefetch(c, 0, 2).reason == "issued"


def test_prefetch_with_zero_queue_depth_is_always_dropped():
    c = ExpertCacheModel(2, queue_depth=0)
    _assert_dropped_changes_nothing(c, 0, 0, "queue_full")


def test_prefetch_with_no_evictable_slot_is_dropped():
    c = ExpertCacheModel(2)
    demand(c, 0, 0)
    demand(c, 0, 1)
    _assert_dropped_changes_nothing(c, 0, 2, "no_slot")


def test_prefetch_never_takes_in_flight_slot():
    c = ExpertCacheModel(2, lockstep=False)
    prefetch(c, 0, 0)
    prefetch(c, 0, 1)
    _assert_dropped_changes_nothing(c, 0, 2, "no_slot")
    assert demand(c, 0, 3).waited        # demand cannot take FILLING slots either


def test_prefetch_issued_takes_slot_like_a_miss_and_evicts():
    c = ExpertCacheModel(2, expert_bytes=10)
    fill(c, [(0, 0), (0, 1)])
    r = prefetch(c, 1, 1)
    assert (r.reason, r.slot, r.victim, r.hit, r.dropped) == ("issued", 0, (0, 0), False, False)
    assert c.counters.prefetches_issued == 1 and c.counters.evictions == 1
    assert c.counters.bytes_read == 30
    assert c.slot_state(0).state == VALID and c.slot_state(0).pins == 0


def test_prefetch_useful_when_demanded_before_eviction():
    c = ExpertCacheModel(2)
    prefetch(c, 0, 0)
    r = demand(c, 0, 0)
    assert r.hit and c.counters.prefetches_useful == 1
    c.release(r.slot)
    c.release(demand(c, 0, 0).slot)      # second demand is not counted again
    assert c.counters.prefetches_useful == 1


def test_prefetch_evicted_before_demand_is_not_useful():
    c = ExpertCacheModel(1)
    prefetch(c, 0, 0)
    fill(c, [(0, 1), (0, 0)])
    assert c.counters.prefetches_useful == 0 and c.counters.misses == 2


def test_lockstep_prefetch_completes_before_access_returns():
    c = ExpertCacheModel(2)
    prefetch(c, 0, 0)
    assert c.slot_state(0).state == VALID and c.pending_prefetches() == []


def test_nonlockstep_prefetch_stays_in_flight_until_completed():
    c = ExpertCacheModel(2, lockstep=False)
    prefetch(c, 0, 0)
    prefetch(c, 0, 1)
    assert c.slot_state(0).state == FILLING and c.pending_prefetches() == [0, 1]
    assert c.complete_prefetches(1) == [(0, True)]
    assert c.slot_state(0).state == VALID and c.slot_state(1).state == FILLING


def test_demand_on_in_flight_prefetch_completes_queue_in_order_and_hits():
    c = ExpertCacheModel(4, lockstep=False)
    for e in range(3):
        prefetch(c, 0, e)
    r = demand(c, 0, 1)
    assert r.hit and r.in_flight and r.reason == "hit_in_flight" and r.slot == 1
    assert c.pending_prefetches() == [2]
    assert c.slot_state(0).state == VALID and c.slot_state(1).pins == 1
    assert c.counters.hits_in_flight == 1 and c.counters.prefetches_useful == 1
    c.check_invariants()


# -- policies --------------------------------------------------------------

def test_lru_evicts_least_recently_touched():
    c = ExpertCacheModel(3, policy="lru")
    fill(c, [(0, 0), (0, 1), (0, 2), (0, 0), (0, 1)])
    assert demand(c, 0, 3).victim == (0, 2)


def test_fifo_evicts_oldest_fill_and_hits_do_not_reorder():
    c = ExpertCacheModel(3, policy="fifo")
    fill(c, [(0, 0), (0, 1), (0, 2), (0, 0), (0, 0)])
    assert c.fifo_order() == [0, 1, 2]
    assert demand(c, 0, 3).victim == (0, 0)


def test_lfu_evicts_least_used_ties_by_lru_order():
    c = ExpertCacheModel(3, policy="lfu")
    fill(c, [(0, 0), (0, 1), (0, 2), (0, 0), (0, 1), (0, 0)])
    # counts: (0,0)=3, (0,1)=2, (0,2)=1
    assert demand(c, 0, 3).victim == (0, 2)
    c2 = ExpertCacheModel(3, policy="lfu")
    fill(c2, [(0, 0), (0, 1), (0, 2), (0, 2), (0, 1)])
    # counts: (0,0)=1, (0,1)=2, (0,2)=2 -> (0,0); then tie (0,1) vs (0,2): (0,2) touched earlier
    assert fill(c2, [(0, 5)]) == [0]
    c2.release(demand(c2, 0, 5).slot)    # (0,5) count 2 now, most recent
    assert demand(c2, 0, 6).victim == (0, 2)


def test_lfu_prefetch_fill_counts_zero_uses():
    c = ExpertCacheModel(2, policy="lfu")
    fill(c, [(0, 0)])
    prefetch(c, 0, 1)                   # count 0, MRU
    assert demand(c, 0, 2).victim == (0, 1)


def test_lfu_count_saturates():
    c = ExpertCacheModel(2, policy="lfu", lfu_max=3)
    fill(c, [(0, 0)] * 10)
    assert c.slot_state(0).use_count == 3


def test_invalid_slots_are_taken_before_any_policy_victim():
    for policy in ("lru", "fifo", "lfu"):
        c = ExpertCacheModel(3, policy=policy)
        fill(c, [(0, 0), (0, 1), (0, 2)])
        c.inject_error(0, 3)
        assert demand(c, 0, 3).error
        slot = c.lookup(0, 3)
        assert slot is None
        r = demand(c, 0, 4)
        assert r.victim is None and c.counters.evictions == 1


# -- errors ----------------------------------------------------------------

def test_failed_demand_fill_reports_error_invalidates_and_pins_nothing():
    c = ExpertCacheModel(2, expert_bytes=8)
    c.inject_error(1, 1)
    r = demand(c, 1, 1)
    assert r.error and not r.hit and r.slot == 0
    st = c.slot_state(0)
    assert st.state == INVALID and st.tag is None and st.pins == 0
    assert c.counters.errors == 1 and c.counters.bytes_read == 8
    with pytest.raises(BadReleaseError):
        c.release(0)
    c.check_invariants()


def test_failed_prefetch_fill_leaves_nothing_stale_valid():
    c = ExpertCacheModel(2, lockstep=False)
    fill(c, [(0, 0), (0, 1)])
    c.fail_next_fills(1)
    r = prefetch(c, 0, 2)
    assert r.victim == (0, 0)
    assert c.complete_prefetches() == [(0, False)]
    assert c.lookup(0, 0) is None and c.lookup(0, 2) is None
    assert c.slot_state(0).state == INVALID and c.counters.errors == 1
    assert not demand(c, 0, 2).error          # a later fill succeeds
    c.check_invariants()


def test_demand_waiting_on_failed_prefetch_gets_error():
    c = ExpertCacheModel(2, lockstep=False)
    c.inject_error(0, 5)
    prefetch(c, 0, 5)
    r = demand(c, 0, 5)
    assert r.error and r.in_flight and c.slot_state(r.slot).state == INVALID
    c.clear_errors()
    r = demand(c, 0, 5)
    assert r.reason == "miss" and not r.error


# -- random traffic: invariants --------------------------------------------

@pytest.mark.parametrize("policy", ["lru", "fifo", "lfu"])
@pytest.mark.parametrize("lockstep", [True, False])
def test_random_traffic_keeps_invariants(rng, policy, lockstep):
    c = ExpertCacheModel(5, policy=policy, queue_depth=3, expert_bytes=64,
                         n_layers=3, n_experts=6, lockstep=lockstep)
    pinned: list[int] = []
    for _ in range(3000):
        op = rng.integers(0, 10)
        layer, expert = int(rng.integers(0, 3)), int(rng.integers(0, 6))
        if rng.random() < 0.03:
            c.fail_next_fills(1)
        if op < 4:
            r = demand(c, layer, expert)
            if not r.waited and not r.error:
                pinned.append(r.slot)
                assert c.slot_state(r.slot).tag == (layer, expert)
                assert c.slot_state(r.slot).state == VALID
        elif op < 7:
            r = prefetch(c, layer, expert)
            if r.victim is not None:
                assert r.victim not in [c.slot_state(s).tag for s in pinned]
        elif op < 9 and pinned:
            c.release(pinned.pop(int(rng.integers(0, len(pinned)))))
        else:
            c.complete_prefetches(int(rng.integers(0, 3)))
        c.check_invariants()
        for s in set(pinned):
            assert c.slot_state(s).pins == pinned.count(s)


def test_run_requests_releases_each_demand():
    c = ExpertCacheModel(2)
    rs = run_requests(c, [(0, 0, "demand"), (0, 1, "prefetch"), (0, 2, "demand"), (0, 0, "demand")])
    assert [r.reason for r in rs] == ["miss", "issued", "miss", "miss"]
    assert [r.victim for r in rs] == [None, None, (0, 0), (0, 1)]


def test_prefetch_drop_reasons_are_checked_in_stated_order():
    c = ExpertCacheModel(2, queue_depth=1, lockstep=False)
    demand(c, 0, 0)                       # pinned, resident
    prefetch(c, 0, 1)                     # in flight, queue now full, no slot left
    assert prefetch(c, 0, 0).reason == "resident"
    assert prefetch(c, 0, 1).reason == "in_flight"
    assert prefetch(c, 0, 2).reason == "queue_full"
    c.complete_prefetches()
    c2 = ExpertCacheModel(1, queue_depth=1)
    demand(c2, 0, 0)
    assert prefetch(c2, 0, 2).reason == "no_slot"


def test_numpy_integers_are_accepted_for_tags_and_slots():
    import numpy as np
    c = ExpertCacheModel(2)
    r = demand(c, np.int64(1), np.int32(3))
    c.release(np.int64(r.slot))
    assert c.lookup(1, 3) == r.slot and c.counters.releases == 1
    with pytest.raises(ValueError):
        demand(c, 1.5, 0)


# --- deferred mode: hit under miss -------------------------------------------------------

def test_deferred_hit_under_miss():
    from golden.expert_cache import ExpertCacheModel
    c = ExpertCacheModel(3, lockstep=False, deferred=True)
    a = c.access(0, 1)
    assert a.pending and not a.hit and c.waiting_demand() == a.slot
    assert c.complete_fill(a.slot) == a.__class__(**{**a.__dict__, "pending": False})
    c.release(a.slot)
    m = c.access(0, 2)                                 # a miss waits for its fill
    assert m.pending and c.slot_state(m.slot).state == "filling"
    assert c.demand_wait_reason(0, 1) is None          # a hit on a valid slot is served
    h = c.access(0, 1)
    assert h.hit and not h.pending and c.slot_state(h.slot).pins == 1
    c.release(h.slot)                                  # releases are served
    assert c.demand_wait_reason(0, 3) == "wait_demand"     # a second miss waits
    w = c.access(0, 3)
    assert w.waited and w.reason == "wait_demand"
    c.count_stall(5)
    r = c.complete_fill(m.slot)
    assert r.slot == m.slot and not r.error and c.slot_state(m.slot).pins == 1
    assert c.waiting_demand() is None and c.demand_wait_reason(0, 3) is None
    assert c.counters.demand_stall_cycles == 5 and c.counters.demand_waits == 1
    c.check_invariants()


def test_deferred_hit_in_flight_waits_for_the_prefetch_fill_and_errors():
    from golden.expert_cache import ExpertCacheModel
    c = ExpertCacheModel(3, lockstep=False, deferred=True, queue_depth=2)
    p = c.access(1, 1, "prefetch")
    q = c.access(1, 2, "prefetch")
    d = c.access(1, 2)
    assert d.hit and d.in_flight and d.pending and c.counters.hits_in_flight == 1
    with pytest.raises(ValueError):
        c.complete_fill(q.slot)                        # prefetch fills keep queue order
    assert c.complete_fill(p.slot) is None
    r = c.complete_fill(q.slot)
    assert r.hit and r.in_flight and c.slot_state(q.slot).pins == 1
    assert c.counters.prefetches_useful == 1
    c.inject_error(1, 3)
    e = c.access(1, 3)
    r = c.complete_fill(e.slot)
    assert r.error and c.slot_state(e.slot).state == "invalid" and c.counters.errors == 1
    c.check_invariants()
    with pytest.raises(ValueError):
        ExpertCacheModel(2, deferred=True)             # needs lockstep=False
