"""A sink that stops answering: memory stays bounded by bytes, later batches do not wait for
earlier stuck outputs, and a full producer queue neither hangs a stop nor starves liveness."""

from __future__ import annotations

import threading
import time

import orjson

from stream.models.bundle import Bundle
from stream.pipeline import Pipeline
from stream.settings import Settings
from stream.sinks.base import DeliveryCallback, Sink, SinkFull
from stream.sources import MemorySource
from stream.worker import Worker

from .conftest import BUNDLE


def _settings(**kw: object) -> Settings:
    return Settings(**{"bundle": BUNDLE, **kw})  # type: ignore[arg-type]


class _StalledSink(Sink):
    """Takes outputs and acknowledges only those the test lets through."""

    def __init__(self, answer: bool = False) -> None:
        self.pending: list[DeliveryCallback] = []
        self.answer = answer
        self.taken = 0

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        on_delivery: DeliveryCallback,
        headers: object = None,
    ) -> None:
        self.taken += 1
        if self.answer:
            on_delivery(None)
        else:
            self.pending.append(on_delivery)


def _big_events(n: int, size: int) -> list[bytes]:
    pad = "x" * size
    return [
        orjson.dumps({"id": f"big-{i}", "text": "bridge down", "meta": {"pad": pad}})
        for i in range(n)
    ]


def test_large_events_pause_input_by_bytes_not_only_by_count(bundle: Bundle):
    """1,200 in-flight outputs of 850 kB grew the worker by 1 GB before any pause."""
    size, budget = 850_000, 8_000_000
    sink = _StalledSink()
    source = MemorySource(_big_events(60, size), topic="in")
    settings = _settings(
        max_in_flight_bytes=budget,
        max_record_bytes=2_000_000,
        review_topic=None,
        poll_max_records=4,
    )
    worker = Worker(settings, source, sink, Pipeline(bundle))
    peak = 0
    for _ in range(40):
        worker.step()
        peak = max(peak, worker.tracker.in_flight_bytes)
    assert worker._paused and worker.stats.pauses >= 1
    assert peak <= budget + settings.poll_max_records * (size + 1000) * 2, peak
    assert worker.stats.received < 60  # it stopped taking input


def test_a_batch_commit_does_not_wait_for_an_earlier_stuck_output(bundle: Bundle):
    """After a producer renewal one output never got a report: every later batch waited the
    whole commit_wait_s (320 events: 38 s instead of 0)."""
    sink = _StalledSink()
    values = [orjson.dumps({"id": f"e{i}", "text": f"flood road {i}"}) for i in range(24)]
    settings = _settings(commit_every_batch=True, commit_wait_s=5.0, batch_max_events=8)
    worker = Worker(settings, MemorySource(values, topic="in"), sink, Pipeline(bundle))
    worker.step()  # the first batch: its outputs stay unacknowledged (stuck)
    assert sink.pending
    sink.answer = True
    t0 = time.monotonic()
    for _ in range(4):
        worker.step()
    assert time.monotonic() - t0 < 3.0  # one wait of 5 s would fail this
    ages = worker.tracker.oldest_pending_age()
    assert ages.get(("in", 0), 0) > 0  # the stuck offset shows in the metric's source


class _FullSink(Sink):
    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        on_delivery: DeliveryCallback,
        headers: object = None,
    ) -> None:
        raise SinkFull("queue full")


def test_a_full_producer_queue_keeps_liveness_and_honours_stop(bundle: Bundle):
    """The full-queue loop used to spin with a stale heartbeat and ignore SIGTERM."""
    values = [orjson.dumps({"id": f"e{i}", "text": "shelter open"}) for i in range(8)]
    worker = Worker(
        _settings(batch_max_events=8),
        MemorySource(values, topic="in"),
        _FullSink(),
        Pipeline(bundle),
    )
    beats: list[float] = []
    thread = threading.Thread(target=worker.step)
    thread.start()
    for _ in range(20):
        time.sleep(0.1)
        beats.append(time.monotonic() - worker.heartbeat)
    assert thread.is_alive() and max(beats[5:]) < 1.0  # stuck on the queue, but live
    worker.request_stop()
    thread.join(5)
    assert not thread.is_alive(), "the full-queue wait ignored the stop"
    assert worker.delivery.retry  # the output waits to be re-sent; nothing was acknowledged
