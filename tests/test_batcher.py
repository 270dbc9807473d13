"""Property tests of the micro-batcher: nothing lost, arrival order kept, bounds respected."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.batcher import MicroBatcher

arrivals = st.lists(st.tuples(st.integers(1, 60), st.floats(0, 0.5, allow_nan=False)), max_size=200)


@given(
    arrivals, st.integers(1, 40), st.floats(0.001, 1.0), st.one_of(st.none(), st.integers(1, 300))
)
def test_nothing_lost_order_kept_bounds_hold(events, max_events, max_wait, max_cost):
    b: MicroBatcher[int] = MicroBatcher(max_events, max_wait, max_cost)
    now = 0.0
    batches: list[list[int]] = []
    costs = {}
    for i, (cost, gap) in enumerate(events):
        now += gap
        batches += b.due(now)
        costs[i] = cost
        batches += b.add(i, now, cost)
    batches += b.drain()
    flat = [i for batch in batches for i in batch]
    assert flat == list(range(len(events)))  # nothing lost, nothing duplicated, order kept
    for batch in batches:
        assert 1 <= len(batch) <= max_events
        if max_cost is not None and len(batch) > 1:
            assert sum(costs[i] for i in batch) <= max_cost + max(costs[i] for i in batch)
    assert len(b) == 0


@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=50), st.floats(0.01, 2))
def test_deadline_is_oldest_item_plus_wait(times, wait):
    times = sorted(times)
    b: MicroBatcher[int] = MicroBatcher(10_000, wait)
    for i, t in enumerate(times):
        b.add(i, t)
    assert b.deadline() == times[0] + wait
    assert b.due(times[0] + wait * 0.5) == [] or times[0] + wait <= times[0] + wait * 0.5
    assert b.due(times[0] + wait) == [list(range(len(times)))]


def test_oversized_item_is_its_own_batch():
    b: MicroBatcher[str] = MicroBatcher(10, 1.0, max_cost=5)
    assert b.add("a", 0, 2) == []
    assert b.add("big", 0, 50) == [["a"], ["big"]]


def test_discard_keeps_the_rest_in_order():
    b: MicroBatcher[int] = MicroBatcher(100, 1.0)
    for i in range(10):
        b.add(i, 0.0)
    assert b.discard(lambda i: i % 2 == 0) == [1, 3, 5, 7, 9]
    assert b.drain() == [[0, 2, 4, 6, 8]]
