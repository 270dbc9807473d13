"""One observer of what the worker does: every event updates :class:`WorkerStats` (returned by
``Worker.run``, logged at exit) and the Prometheus metrics together, so the two cannot drift
or count an event twice."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from stream.ops.prometheus import WorkerMetrics
from stream.pipeline import BatchTimings
from stream.schemas import Origin

__all__ = ["WorkerObserver", "WorkerStats", "event_time"]


def event_time(origin: Origin, created_at: datetime | None) -> float | None:
    """When an event happened, in seconds since the epoch: the input record's timestamp (Kafka
    CreateTime or LogAppendTime), else the event's ``created_at`` (UTC when it names no zone),
    else None."""
    if origin.timestamp is not None and origin.timestamp > 0:
        return origin.timestamp / 1000
    if created_at is None:
        return None
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    return created_at.timestamp()


@dataclass
class WorkerStats:
    """Counters since start; ``completed`` counts inputs no longer pending here (all outputs
    acknowledged, or handed to another worker on revocation)."""

    received: int = 0
    labeled: int = 0
    review: int = 0
    routed: int = 0
    dead_letters: int = 0
    completed: int = 0
    batches: int = 0
    redelivered: int = 0
    peak_in_flight: int = 0
    pauses: int = 0
    #: sizes of the latest batches (bounded: a worker runs for months)
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1000))


class WorkerObserver:
    """Counts worker events into ``stats`` and ``metrics``."""

    def __init__(
        self, metrics: WorkerMetrics | None = None, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.metrics = metrics or WorkerMetrics()
        self.stats = WorkerStats()
        self.wall_clock = wall_clock

    def model(self, info: dict[str, str]) -> None:
        self.metrics.set_model(info)

    def received(self) -> None:
        self.stats.received += 1
        self.metrics.events_in.inc()

    def batch(self, size: int, timings: BatchTimings) -> None:
        self.stats.batches += 1
        self.stats.batch_sizes.append(size)
        m = self.metrics
        m.batch_size.observe(size)
        m.batch_latency.observe(timings.total)
        m.encoder_seconds.labels(modality="text").observe(timings.encode_text)
        if timings.encode_image is not None:
            m.encoder_seconds.labels(modality="image").observe(timings.encode_image)

    def labeled(self, labels: Mapping[str, str]) -> None:
        """One labelled event published; ``labels`` maps each task to its label."""
        self.stats.labeled += 1
        for task, label in labels.items():
            self.metrics.events_labeled.labels(task=task, label=label).inc()

    def review(self) -> None:
        self.stats.review += 1
        self.metrics.events_review.inc()

    def routed(self) -> None:
        self.stats.routed += 1

    def dead_letter(self, reason: str) -> None:
        self.stats.dead_letters += 1
        self.metrics.events_dlq.labels(reason=reason).inc()

    def redelivered(self) -> None:
        self.stats.redelivered += 1
        self.metrics.redelivered.inc()

    def acknowledged(self, event_time: float) -> None:
        """A labelled output was acknowledged; its event happened at ``event_time`` (epoch s).
        A clock skewed ahead of this worker's counts as 0 s, not as a negative latency."""
        self.metrics.end_to_end.observe(max(0.0, self.wall_clock() - event_time))

    def output_expected(self, in_flight: int) -> None:
        """An output was registered; ``in_flight`` outputs now await acknowledgement."""
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, in_flight)

    def in_flight(self, outputs: int, nbytes: int = 0) -> None:
        self.metrics.in_flight.set(outputs)
        self.metrics.in_flight_bytes.set(nbytes)

    def pending_age(self, ages: Mapping[tuple[str, int], float]) -> None:
        """Per input partition, the age of the oldest record not yet committable."""
        self.metrics.set_pending_age(ages)

    def paused(self, paused: bool) -> None:
        if paused:
            self.stats.pauses += 1
        self.metrics.paused.set(int(paused))

    def completed(self, count: int) -> None:
        self.stats.completed = count
