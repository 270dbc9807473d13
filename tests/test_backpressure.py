"""Backpressure on a real broker: when outputs cannot be acknowledged fast enough the worker
pauses its input instead of buffering, so outputs in flight never exceed the cap.

(The broker-down case — input paused for the whole outage, in flight <= cap, RSS flat — is
tests/test_outage.py, slow.)
"""

from __future__ import annotations

import pytest

from stream.models.bundle import Bundle
from stream.pipeline import Pipeline
from stream.runtime import make_sink, make_source
from stream.worker import Worker

from .conftest import BrokerHandle
from .kafka_utils import create_topics, make_events, read_all, seed

pytestmark = pytest.mark.kafka


def _run(handle: BrokerHandle, bundle: Bundle, n: int, **overrides: object) -> Worker:
    settings = handle.settings(**overrides)
    create_topics(settings)
    seed(handle.bootstrap, settings.input_topic, make_events(n))
    worker = Worker(
        settings, make_source("kafka", settings), make_sink("kafka", settings), Pipeline(bundle)
    )
    stats = worker.run(stop_after=n, idle_timeout_s=60)
    assert stats.labeled == n
    out = read_all(handle.bootstrap, settings.output_topic, n)
    assert {o["id"] for o in out} == {f"e-{i}" for i in range(n)}
    return worker


def test_tiny_in_flight_cap_pauses_input_and_is_never_exceeded(noida: BrokerHandle, bundle: Bundle):
    worker = _run(noida, bundle, 40, max_in_flight=6, batch_max_events=8)
    assert worker.max_in_flight == 6
    assert worker.stats.pauses > 0, "the consumer was never paused"
    assert 0 < worker.stats.peak_in_flight <= 6


def test_producer_queue_smaller_than_the_cap_lowers_the_cap(noida: BrokerHandle, bundle: Bundle):
    """A tiny ``queue.buffering.max.messages`` would make produce() fail with a full queue;
    the worker takes it as its in-flight cap instead of blocking on BufferError."""
    worker = _run(noida, bundle, 60, kafka={"queue.buffering.max.messages": "10"})
    assert worker.max_in_flight == 10
    assert worker.stats.pauses > 0
    assert worker.stats.peak_in_flight <= 10
