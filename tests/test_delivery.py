"""Delivery accounting without a broker: how failed deliveries are logged."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import pytest

from stream.errors import InvalidEvent
from stream.schemas import Origin
from stream.sinks.base import DeliveryCallback, Sink, SinkUnavailable
from stream.tracking import OffsetTracker
from stream.worker import delivery as delivery_mod
from stream.worker.delivery import Delivery
from stream.worker.observer import WorkerObserver


class _DownSink(Sink):
    """Keeps every delivery callback for the test to answer."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, DeliveryCallback]] = []

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        on_delivery: DeliveryCallback,
        headers: object = None,
    ) -> None:
        self.pending.append((topic, on_delivery))


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _failure_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == delivery_mod.__name__ and r.levelno >= logging.WARNING
    ]


def test_a_broker_outage_logs_each_topic_once_then_a_count_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    clock = _Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    sink, tracker = _DownSink(), OffsetTracker()
    delivery = Delivery(sink, tracker, WorkerObserver(), "dlq")
    for offset in range(100):
        tracker.register("in", 0, offset)
        delivery.deliver(Origin(topic="in", partition=0, offset=offset), None, b"v", ["out", "rv"])
    caplog.set_level(logging.INFO, logger=delivery_mod.__name__)

    def fail_all(dt: float) -> None:
        """Every pending output fails, ``dt`` seconds apart, then is re-sent."""
        pending, sink.pending = sink.pending, []
        for _, cb in pending:
            clock.now += dt
            cb(RuntimeError("broker down"))
        delivery.resend_failed(clock.now + delivery_mod.RESEND_MAX_S)  # past any backoff

    fail_all(0.01)  # 200 failures in 2 s: the first of each topic
    lines = _failure_lines(caplog)
    assert len(lines) == 2
    assert any("delivery to out failed (broker down)" in m for m in lines)
    assert any("delivery to rv failed (broker down)" in m for m in lines)
    assert len(sink.pending) == 200  # every output was re-sent

    caplog.clear()
    for _ in range(5):  # 1000 more failures over 20 s: one count per topic per 10 s
        fail_all(0.02)
    lines = _failure_lines(caplog)
    assert len(lines) == 4, lines
    assert all("more deliveries to" in m and "failed in the last" in m for m in lines)
    counts = {t: 0 for t in ("out", "rv")}
    for m in lines:
        n, _, _, _, topic = m.split()[:5]
        counts[topic] += int(n)
    assert all(c > 0 for c in counts.values())

    caplog.clear()  # the broker is back: the failures not yet counted are reported once
    clock.now += 11
    pending, sink.pending = sink.pending, []
    for _, cb in pending:
        cb(None)
    lines = _failure_lines(caplog)
    assert len(lines) == 2, lines
    for m in lines:
        n, _, _, _, topic = m.split()[:5]
        counts[topic] += int(n)
    assert counts == {"out": 599, "rv": 599}  # 600 failures each, the first logged on its own
    assert delivery.idle and tracker.in_flight_outputs == 0


class _UnavailableSink(Sink):
    """Cannot take any output (a missing topic, a denied write); counts the attempts."""

    def __init__(self) -> None:
        self.attempts = 0

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        on_delivery: DeliveryCallback,
        headers: object = None,
    ) -> None:
        self.attempts += 1
        raise SinkUnavailable("Local: Unknown topic")


def test_outputs_the_sink_cannot_take_are_re_sent_with_backoff_not_in_a_busy_loop():
    clock = _Clock()
    sink, tracker = _UnavailableSink(), OffsetTracker()
    delivery = Delivery(sink, tracker, WorkerObserver(), "dlq", clock=clock)
    tracker.register("in", 0, 0)
    delivery.deliver(Origin(topic="in", partition=0, offset=0), None, b"v", ["out"])
    assert sink.attempts == 1 and len(delivery.retry) == 1
    assert "out: Local: Unknown topic" in (delivery.problem() or "")
    for _ in range(1000):  # a busy worker loop for 10 s
        clock.now += 0.01
        delivery.resend_failed()
    # backoff 0.1, 0.2, 0.4, ... capped at 5 s: a handful of attempts, not a thousand
    assert 4 <= sink.attempts <= 8, sink.attempts
    assert tracker.take_committable() == {}  # never committed while undelivered


def test_end_to_end_latency_is_observed_when_the_labelled_output_is_acknowledged():
    """Once per input, at the ack of its labelled output (the first topic): not for the review
    copy, not when the send failed (the re-sent output's ack counts, later), not for a late
    report of a revoked read, not for a dead letter."""
    sink, tracker = _DownSink(), OffsetTracker()
    observer = WorkerObserver(wall_clock=lambda: 1_700_000_010.0)
    delivery = Delivery(sink, tracker, observer, "dlq")

    def observed() -> tuple[float | None, float | None]:
        reg = observer.metrics.registry
        return (
            reg.get_sample_value("crisis_end_to_end_seconds_count"),
            reg.get_sample_value("crisis_end_to_end_seconds_sum"),
        )

    for offset in range(3):
        tracker.register("in", 0, offset)
    # the record's timestamp (ms) 4 s before the ack
    delivery.deliver(
        Origin(topic="in", partition=0, offset=0, timestamp=1_700_000_006_000),
        None,
        b"v",
        ["out", "rv"],
    )
    pending, sink.pending = sink.pending, []
    assert [t for t, _ in pending] == ["out", "rv"]
    pending[1][1](None)  # the review copy first: nothing observed
    assert observed() == (0, 0)
    pending[0][1](RuntimeError("broker down"))  # failed: re-sent, not observed
    assert observed() == (0, 0)
    delivery.resend_failed()
    sink.pending.pop()[1](None)
    assert observed() == (1, 4.0)

    # no record timestamp: the event's created_at (naive: UTC), 10 s before the ack
    created = datetime.fromtimestamp(1_700_000_000, UTC).replace(tzinfo=None)
    delivery.deliver(Origin(topic="in", partition=0, offset=1), None, b"v", ["out"], created)
    sink.pending.pop()[1](None)
    assert observed() == (2, 14.0)

    delivery.dead_letter(
        b"{", InvalidEvent("not_json", "x"), Origin(topic="in", partition=0, offset=2)
    )
    sink.pending.pop()[1](None)
    assert observed() == (2, 14.0)

    tracker.register("in", 0, 3)
    delivery.deliver(Origin(topic="in", partition=0, offset=3), None, b"v", ["out"], created)
    late = sink.pending.pop()[1]
    tracker.forget([("in", 0)])  # revoked before the report came: its new owner re-reads it
    late(None)
    assert observed() == (2, 14.0)
