"""Offset tracker invariants: a committed offset never passes an unacknowledged output."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.tracking import OffsetTracker


@given(st.data())
def test_commit_never_passes_a_gap(data):
    n = data.draw(st.integers(1, 60))
    outputs = data.draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    t = OffsetTracker()
    acks = []
    for off, k in enumerate(outputs):
        t.register("in", 0, off)
        t.expect("in", 0, off, k)
        t.seal("in", 0, off)
        acks += [off] * k
    order = data.draw(st.permutations(acks))
    remaining = {off: k for off, k in enumerate(outputs)}
    last = 0
    for off in order:
        t.ack("in", 0, off)
        remaining[off] -= 1
        got = t.take_committable().get(("in", 0))
        expected = next((o for o in range(n) if remaining[o] > 0), n)
        if got is not None:
            assert got == expected
            assert got >= last
            last = got
    assert t.committable()[("in", 0)] == n
    assert t.in_flight_outputs == 0
    assert t.pending_records() == 0


def test_unsealed_record_blocks_commit():
    t = OffsetTracker()
    t.register("in", 0, 0)
    t.expect("in", 0, 0)
    t.ack("in", 0, 0)
    assert t.take_committable() == {}
    t.seal("in", 0, 0)
    assert t.take_committable() == {("in", 0): 1}


def test_partitions_are_independent_and_forget_drops_state():
    t = OffsetTracker()
    for p in (0, 1):
        t.register("in", p, 5)
        t.expect("in", p, 5)
        t.seal("in", p, 5)
    t.ack("in", 1, 5)
    assert t.take_committable() == {("in", 1): 6}
    t.forget([("in", 0)])
    assert t.in_flight_outputs == 0
    assert t.pending_records() == 0
    t.ack("in", 0, 5)  # late ack of a revoked partition is ignored
    assert t.take_committable() == {}


def test_a_late_report_for_a_revoked_read_never_counts_for_the_re_read():
    """Revoked with outputs in flight, assigned back, the offset re-read: the old read's late
    acks must neither complete the new read (an offset committed before its outputs are
    acknowledged) nor drive its count negative (a partition that never commits again)."""
    t = OffsetTracker()
    t.register("in", 0, 0)
    old = t.expect("in", 0, 0, 2)
    t.seal("in", 0, 0)
    t.forget([("in", 0)])
    assert not old.live and t.in_flight_outputs == 0
    t.register("in", 0, 0)  # same partition handed back, offset 0 read again
    new = t.expect("in", 0, 0, 2)
    t.seal("in", 0, 0)
    assert not t.ack("in", 0, 0, old) and not t.ack("in", 0, 0, old)
    assert new.pending == 2 and t.in_flight_outputs == 2 and t.take_committable() == {}
    assert t.ack("in", 0, 0, new)
    assert t.take_committable() == {}  # one output of the new read is still in flight
    assert t.ack("in", 0, 0, new)
    assert t.take_committable() == {("in", 0): 1} and t.in_flight_outputs == 0
