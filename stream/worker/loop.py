"""The worker loop: consume -> decode -> micro-batch -> label -> produce -> store offsets.

Delivery promise (at-least-once): an input offset is stored only after every output it produced
(labelled, review, per-label route, dead letter) was acknowledged (:mod:`stream.worker.delivery`).
While too many outputs are in flight the source is paused, so memory stays bounded when the
output side is slow or down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from stream.batcher import MicroBatcher
from stream.decode import decode_event
from stream.errors import InvalidEvent
from stream.headers import output_headers
from stream.ops.faults import crash_point
from stream.ops.logs import record_context
from stream.ops.prometheus import WorkerMetrics
from stream.ops.reload import BundleReloader
from stream.pipeline import BatchResult, Pipeline
from stream.schemas import LabeledEvent, Origin
from stream.settings import Settings
from stream.sinks.base import Sink
from stream.sources.base import Record, Source
from stream.tracking import OffsetTracker
from stream.worker.delivery import Delivery
from stream.worker.guard import Guard
from stream.worker.labelling import Labeller, Queued
from stream.worker.observer import WorkerObserver, WorkerStats
from stream.worker.outputs import plan_outputs

__all__ = ["Worker", "WorkerStats"]

log = logging.getLogger(__name__)


class Worker:
    """Run one consumer's share of the stream through a :class:`Pipeline` into a sink."""

    def __init__(
        self,
        settings: Settings,
        source: Source,
        sink: Sink,
        pipeline: Pipeline,
        clock: Callable[[], float] = time.monotonic,
        on_batch: Callable[[list[LabeledEvent]], None] | None = None,
        metrics: WorkerMetrics | None = None,
        reloader: BundleReloader | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.sink = sink
        self.clock = clock
        self.on_batch = on_batch
        self.observer = WorkerObserver(metrics)
        self.metrics = self.observer.metrics
        self.stats = self.observer.stats
        self.observer.model(pipeline.bundle.info)
        self.reloader = reloader
        self.heartbeat = time.monotonic()
        self.batcher: MicroBatcher[Queued] = MicroBatcher(
            settings.batch_max_events, settings.batch_max_wait_ms / 1000, settings.batch_max_tokens
        )
        self.tracker = OffsetTracker()
        self.delivery = Delivery(
            sink, self.tracker, self.observer, settings.dlq_topic, self._on_sink_full, clock
        )
        #: faults of the system: labelling that fails for most events, missing output topics
        self.labeller = Labeller(pipeline, clock, self._beat)
        self.labelling = self.labeller.guard
        self.topics: Guard[None] = Guard(min_s=2.0)
        self._topics_checked = False
        self._stop = threading.Event()
        self._deadline: float | None = None  # set when shutdown starts
        self._paused = False
        self._paused_for_trouble = False
        #: outputs one input may produce: labelled (or dead letter), review, per-label routes
        self._per_record = (
            1
            + bool(settings.review_topic)
            + (len(settings.route_tasks) if settings.route_labels else 0)
        )
        cap = settings.max_in_flight
        if sink.capacity is not None and sink.capacity < cap:
            log.info("max_in_flight %d capped to the producer queue size %d", cap, sink.capacity)
            cap = sink.capacity
        self.max_in_flight = max(cap, self._per_record)
        source.on_revoke = self._on_revoke

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline serving now (swapped by hot reload between batches)."""
        return self.labeller.pipeline

    # -- control -----------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the loop to finish the in-flight work, commit and return (SIGTERM handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(
        self, stop_after: int | None = None, idle_timeout_s: float | None = None
    ) -> WorkerStats:
        """Loop until stopped, a bounded source is exhausted, ``stop_after`` inputs completed,
        or nothing arrived for ``idle_timeout_s``; then drain, flush and commit."""
        last_activity = self.clock()
        try:
            while not self._stop.is_set():
                if self.step():
                    last_activity = self.clock()
                if stop_after is not None and self.stats.completed >= stop_after:
                    break
                if self.source.exhausted and not len(self.batcher) and self._idle():
                    break
                if idle_timeout_s is not None and self.clock() - last_activity > idle_timeout_s:
                    break
        finally:
            self.shutdown()
        return self.stats

    def _idle(self) -> bool:
        return self.tracker.pending_records() == 0 and self.delivery.idle

    def readiness(self) -> tuple[bool, str]:
        """Ready = partitions assigned, a model loaded, and outputs being delivered."""
        if self._stop.is_set():
            return False, "shutting down"
        if not self.source.ready:
            return False, "joining the consumer group"
        for link in (self.source.link, self.sink.link):
            if link is not None and not link.up:
                return False, link.describe()
        problem = self._fault() or self.delivery.problem()
        if problem is not None:
            return False, problem
        info = self.pipeline.model_info
        n = len(self.source.assignment)
        if not n:
            return True, f"idle, no partition assigned (more workers than partitions) {info.bundle}"
        return True, f"serving {info.bundle} {info.version} on {n} partitions"

    def _fault(self) -> str | None:
        """The fault of the system that holds the stream, if any."""
        if self.topics.active:
            return f"output topics unusable: {self.topics.reason}"
        if self.labelling.active:
            n = len(self.labelling.held)
            return f"labelling fails ({self.labelling.reason}); {n} events held, retrying"
        return None

    def _beat(self) -> None:
        """Liveness (``/healthz``): the loop is turning, also inside a long batch."""
        self.heartbeat = time.monotonic()

    # -- one iteration -----------------------------------------------------------------------
    def step(self) -> bool:
        """One poll/process/ack round; returns True when records arrived."""
        self.heartbeat = time.monotonic()
        self._swap_bundle()
        self._check_topics()
        self._retry_labelling()
        self.delivery.resend_failed()
        self._apply_backpressure()
        timeout = self.settings.poll_timeout_ms / 1000
        deadline = self.batcher.deadline()
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - self.clock()))
        room = self._room()
        records = self.source.poll(max(1, min(self.settings.poll_max_records, room)), timeout)
        now = self.clock()
        for rec in records:
            if self._stop.is_set():  # SIGTERM: the rest is not registered, so it is re-read
                break
            self._ingest(rec, now)
        for batch in self.batcher.due(self.clock()):
            self._process(batch)
        self.sink.poll(0)
        self._store()
        self.observer.in_flight(self.tracker.in_flight_outputs, self.tracker.in_flight_bytes)
        self.observer.pending_age(self.tracker.oldest_pending_age())
        return bool(records)

    def _on_sink_full(self) -> bool:
        """While the producer queue is full: stay live; give up the wait when stopping."""
        self.heartbeat = time.monotonic()
        return self._stop.is_set()

    def _output_topics(self, pipeline: Pipeline) -> list[str]:
        return [*self.settings.output_topics(), *self.settings.route_topics(pipeline.bundle.labels)]

    def _check_topics(self) -> None:
        """At start, and while they fail, check that every output topic exists: a missing one
        (auto-creation off) or one this client may not see would fail every output."""
        now = self.clock()
        if self._topics_checked and not self.topics.due(now):
            return
        self._topics_checked = True
        problems = self.sink.check_topics(self._output_topics(self.pipeline))
        if not problems:
            if self.topics.active:
                log.info("output topics are usable again")
            self.topics.ok()
            return
        reason = "; ".join(f"{t}: {e}" for t, e in sorted(problems.items()))
        if self.topics.reason != reason:
            log.error("output topics unusable, input paused until they are: %s", reason)
        self.topics.fail(reason, now)

    def _swap_bundle(self) -> None:
        """Between batches only, so no event is labelled half by one model, half by another."""
        if self.reloader is None:
            return
        new = self.reloader.take()
        if new is not None:
            problems = self.sink.check_topics(self.settings.route_topics(new.bundle.labels))
            if problems:
                self.reloader.refuse(f"its route topics are unusable: {problems}")
                return
        if new is not None:
            log.info(
                "swapping bundle %s -> %s",
                self.pipeline.model_info.sha256[:12],
                new.model_info.sha256[:12],
            )
            self.labeller.pipeline = new
            self.observer.model(new.bundle.info)

    def _used(self) -> int:
        """Outputs in flight plus those the batcher's queued events will produce."""
        return self.tracker.in_flight_outputs + len(self.batcher) * self._per_record

    def _used_bytes(self) -> int:
        """Output bytes in flight plus an estimate for the queued events (each output carries
        about its input's size)."""
        return self.tracker.in_flight_bytes + self._queued_bytes * self._per_record

    def _room(self) -> int:
        """Inputs that may still be taken in without exceeding ``max_in_flight`` outputs or
        ``max_in_flight_bytes`` (by more than one poll of records: their size is known only
        once read)."""
        if self._used_bytes() >= self.settings.max_in_flight_bytes:
            return 0
        return max(0, (self.max_in_flight - self._used()) // self._per_record)

    def _apply_backpressure(self) -> None:
        """Pause at the cap (or while outputs cannot be delivered); resume only once half the
        cap is free: every pause makes librdkafka drop its prefetched records, so pausing and
        resuming around a single threshold would refetch for every batch."""
        sink_down = self.sink.link is not None and not self.sink.link.up
        trouble = bool(self.delivery.retry) or sink_down or self._fault() is not None
        if not self._paused and (trouble or self._room() == 0):
            log.log(
                logging.WARNING if trouble else logging.DEBUG,
                "pausing input: %d outputs in flight, %d to re-send, output broker %s",
                self.tracker.in_flight_outputs,
                len(self.delivery.retry),
                "down" if sink_down else "up",
            )
            self.source.pause()
            self._paused = True
            self._paused_for_trouble = trouble
            self.observer.paused(True)
        elif (
            self._paused
            and not trouble
            and self._used() <= self.max_in_flight // 2
            and self._used_bytes() <= self.settings.max_in_flight_bytes // 2
        ):
            log.log(logging.INFO if self._paused_for_trouble else logging.DEBUG, "resuming input")
            self.source.resume()
            self._paused = False
            self.observer.paused(False)

    def _ingest(self, rec: Record, now: float) -> None:
        o = rec.origin
        self.observer.received()
        self.tracker.register(o.topic, o.partition, o.offset)
        try:
            event = decode_event(
                rec.value, self.settings.max_record_bytes, self.settings.max_text_chars
            )
        except InvalidEvent as exc:
            self.delivery.dead_letter(rec.value, exc, o, rec.key, rec.headers)
            return
        cost = len(event.text) // 4 + 2
        queued = Queued(event, o, now, rec.value, rec.key, rec.headers)
        for batch in self.batcher.add(queued, now, cost):
            self._process(batch)

    @property
    def _queued_bytes(self) -> int:
        return sum(len(q.raw or b"") for q in self.batcher)

    def _process(self, batch: list[Queued]) -> None:
        outcome = self.labeller.label(batch)
        for part, result in outcome.labelled:
            self._publish_batch(part, result)
        for q, exc in outcome.bad:
            log.error(
                "labelling failed for event %s: %s",
                q.event.id,
                exc,
                extra=record_context(q.origin, q.event.id),
            )
            self.delivery.dead_letter(
                q.raw,
                InvalidEvent("processing_error", "labelling failed"),
                q.origin,
                q.key,
                q.headers,
            )

    def _retry_labelling(self) -> None:
        held = self.labeller.due()
        if held:
            self._process(held)

    def _publish_batch(self, batch: list[Queued], result: BatchResult) -> None:
        outs = result.events
        self.observer.batch(len(batch), result.timings)
        for i, (q, out) in enumerate(zip(batch, outs, strict=True)):
            if i == len(outs) // 2 and i:
                crash_point("mid_batch")
            self._publish(out, q)
        if self.on_batch is not None:
            self.on_batch(outs)
        if self.settings.commit_every_batch:
            self._commit_batch([q.origin for q in batch])

    def _commit_batch(self, origins: list[Origin]) -> None:
        """Wait (bounded) for this batch's outputs to be acknowledged, store and commit them
        without waiting for the broker's answer, unless the previous commit is still unanswered
        (:meth:`stream.sources.kafka.KafkaSource.commit`): a crash then duplicates at most the
        batch in progress and the one before it. An output broker
        that does not answer in ``commit_wait_s`` is left to the retry and backpressure path;
        outputs of earlier batches that never got a report do not hold this one. After SIGTERM
        it does not wait: :meth:`shutdown` delivers and commits within its own time limit."""
        if self._stop.is_set():
            return
        deadline = time.monotonic() + self.settings.commit_wait_s

        def waiting() -> bool:
            return not all(self.tracker.settled(o.topic, o.partition, o.offset) for o in origins)

        while waiting() and time.monotonic() < deadline and not self._stop.is_set():
            self.delivery.resend_failed()
            self.sink.flush(min(0.5, max(0.0, deadline - time.monotonic())))
            self.heartbeat = time.monotonic()
        self._store()
        crash_point("stored_not_committed")
        self.source.commit(wait=False)

    def _publish(self, out: LabeledEvent, q: Queued) -> None:
        """Emit the labelled output and its review and route copies, or a dead letter when it
        cannot be serialised or is too large (:func:`stream.worker.outputs.plan_outputs`)."""
        out.worker = self.settings.worker_id
        try:
            planned = plan_outputs(out, self.settings)
        except InvalidEvent as exc:
            self.delivery.dead_letter(q.raw, exc, out.origin, q.key, q.headers)
            return
        headers = output_headers(out.model, q.headers)
        self.delivery.deliver(
            out.origin, planned.key, planned.value, planned.topics, out.created_at, headers
        )
        self.observer.labeled({task: tl.label for task, tl in out.labels.items()})
        if planned.review:
            self.observer.review()
        for _ in range(planned.routed):
            self.observer.routed()

    def _store(self) -> None:
        done = self.tracker.take_committable()
        if done:
            crash_point("acked_not_stored")
            self.source.store(done)
        self.observer.completed(self.stats.received - self.tracker.pending_records())

    # -- rebalance and shutdown -------------------------------------------------------------
    def _on_revoke(self, keys: list[tuple[str, int]]) -> None:
        revoked = set(keys)
        dropped = self.batcher.discard(
            lambda q: (q.origin.topic, q.origin.partition) not in revoked
        )
        dropped += self.labelling.discard(
            lambda q: (q.origin.topic, q.origin.partition) not in revoked
        )
        if dropped:
            log.info("revocation: %d queued events left for the next owner", len(dropped))
        self.sink.flush(self._time_left(10.0))
        self._store()
        self.delivery.forget(revoked)
        self.tracker.forget(keys)
        if self.metrics is not None:
            self.metrics.forget_partitions(keys)

    def _time_left(self, wanted_s: float) -> float:
        """``wanted_s``, or less once shutdown has started: what its time limit leaves."""
        if self._deadline is None:
            return wanted_s
        return max(0.0, min(wanted_s, self._deadline - time.monotonic()))

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Label what is queued, wait for deliveries, store and commit, close: all within
        ``timeout_s`` (default ``shutdown_timeout_s``), so an orchestrator's grace period after
        SIGTERM covers it even when the output broker is slow or gone; what is not delivered by
        then stays uncommitted and is re-read by the next owner."""
        timeout_s = self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
        deadline = self._deadline = time.monotonic() + timeout_s
        try:
            for batch in self.batcher.drain():
                self._process(batch)
            while time.monotonic() < deadline:
                self.delivery.resend_failed()
                self.sink.flush(min(1.0, max(0.0, deadline - time.monotonic())))
                self._store()
                if self._idle():
                    break
            if self.labelling.held:
                log.warning(
                    "%d events held by a labelling fault stay uncommitted",
                    len(self.labelling.held),
                )
            if not self._idle():
                log.warning(
                    "%d inputs not fully delivered at shutdown; they stay uncommitted",
                    self.tracker.pending_records(),
                )
            self.source.commit()
        finally:
            self.source.close()
            self.sink.close(max(0.1, deadline - time.monotonic()))
