"""Prometheus metrics of one worker, in its own registry (several workers can share a process
in tests without colliding). Names are prefixed ``crisis_``; the registry also carries the
process collector (``process_resident_memory_bytes``, ``process_open_fds``, CPU seconds)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

__all__ = ["WorkerMetrics"]

_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: event time to acknowledged output: sub-second when keeping up, minutes to hours when
#: catching up on a backlog (or when created_at is the post's own, older, time)
_END_TO_END = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.events_in = Counter("crisis_events_in", "input records read", registry=r)
        self.events_labeled = Counter(
            "crisis_events_labeled", "labelled events published", ["task", "label"], registry=r
        )
        self.events_review = Counter(
            "crisis_events_review", "events sent for human review", registry=r
        )
        self.events_dlq = Counter(
            "crisis_events_dlq", "records sent to the dead-letter topic", ["reason"], registry=r
        )
        self.redelivered = Counter(
            "crisis_outputs_redelivered", "outputs re-sent after a failed delivery", registry=r
        )
        self.batch_size = Histogram(
            "crisis_batch_size", "events per micro-batch", buckets=_BATCH_SIZES, registry=r
        )
        self.batch_latency = Histogram(
            "crisis_batch_latency_seconds", "labelling time per batch", buckets=_LATENCY, registry=r
        )
        self.encoder_seconds = Histogram(
            "crisis_encoder_seconds",
            "encoder time per batch",
            ["modality"],
            buckets=_LATENCY,
            registry=r,
        )
        self.end_to_end = Histogram(
            "crisis_end_to_end_seconds",
            "event time (the input record's timestamp, else the event's created_at) to its "
            "labelled output acknowledged by the broker",
            buckets=_END_TO_END,
            registry=r,
        )
        self.ready = Gauge(
            "crisis_worker_ready", "1 while /readyz answers 200 (read at scrape time)", registry=r
        )
        self.in_flight = Gauge(
            "crisis_outputs_in_flight", "outputs awaiting acknowledgement", registry=r
        )
        self.in_flight_bytes = Gauge(
            "crisis_outputs_in_flight_bytes",
            "bytes of outputs awaiting acknowledgement",
            registry=r,
        )
        self.pending_age = Gauge(
            "crisis_oldest_pending_seconds",
            "age of the oldest input record not yet committable, per partition (a stuck offset "
            "grows without bound)",
            ["topic", "partition"],
            registry=r,
        )
        self.paused = Gauge(
            "crisis_input_paused", "1 while input is paused (backpressure)", registry=r
        )
        self.lag = Gauge(
            "crisis_consumer_lag",
            "messages behind the high watermark",
            ["topic", "partition"],
            registry=r,
        )
        self.model = Gauge(
            "crisis_model_info",
            "the model bundle being served",
            ["bundle", "version", "sha256", "quantization"],
            registry=r,
        )
        self.reloads = Counter(
            "crisis_model_reloads", "bundle reload attempts", ["result"], registry=r
        )
        self._aged: set[tuple[str, int]] = set()  # partitions with a pending-age series

    def watch_readiness(self, ready: Callable[[], tuple[bool, str]]) -> None:
        """``crisis_worker_ready`` asks ``ready`` (what ``/readyz`` asks) at every scrape."""
        self.ready.set_function(lambda: float(ready()[0]))

    def set_model(self, info: dict[str, str]) -> None:
        self.model.clear()
        self.model.labels(**info).set(1)

    def on_kafka_stats(self, stats_json: str) -> None:
        """librdkafka statistics callback: per-partition consumer lag."""
        stats: dict[str, Any] = orjson.loads(stats_json)
        for topic, t in stats.get("topics", {}).items():
            for pid, p in t.get("partitions", {}).items():
                lag = p.get("consumer_lag", -1)
                if pid != "-1" and lag >= 0:
                    self.lag.labels(topic=topic, partition=pid).set(lag)

    def set_pending_age(self, ages: Mapping[tuple[str, int], float]) -> None:
        """Ages of the partitions with pending records; the others read 0."""
        for topic, partition in self._aged - set(ages):
            self.pending_age.labels(topic=topic, partition=str(partition)).set(0)
        for (topic, partition), age in ages.items():
            self.pending_age.labels(topic=topic, partition=str(partition)).set(round(age, 3))
        self._aged |= set(ages)

    def forget_partitions(self, keys: Iterable[tuple[str, int]]) -> None:
        """Remove the lag and age series of partitions this worker no longer owns (their new
        owner reports them; a stale series would be counted twice in a sum)."""
        for topic, partition in keys:
            for gauge in (self.lag, self.pending_age):
                with contextlib.suppress(KeyError):
                    gauge.remove(topic, str(partition))
            self._aged.discard((topic, partition))

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
