"""The worker loop: consume -> decode -> micro-batch -> label -> produce -> store offsets.

Delivery promise (at-least-once): an input offset is stored only after every output it produced
(labelled, review, per-label route, dead letter) was acknowledged. Failed deliveries are
re-sent, never dropped; an output the broker refuses for good (too large, invalid) turns its
input into a dead letter instead of being re-sent forever; while too many outputs are in flight
the source is paused, so memory stays bounded when the output side is slow or down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from stream.batcher import MicroBatcher
from stream.decode import dead_letter, decode_event
from stream.errors import InvalidEvent
from stream.ops.faults import crash_point
from stream.ops.prometheus import WorkerMetrics
from stream.ops.reload import BundleReloader
from stream.pipeline import Pipeline
from stream.schemas import InputEvent, LabeledEvent, Origin
from stream.settings import Settings
from stream.sinks.base import Sink, SinkFull, SinkRejected
from stream.sources.base import Record, Source
from stream.tracking import Entry, OffsetTracker

__all__ = ["Worker", "WorkerStats"]

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class _Queued:
    event: InputEvent
    origin: Origin
    received: float
    raw: bytes | None  # the record as read: what a dead letter of this event carries


@dataclass(frozen=True)
class _Output:
    topic: str
    key: bytes | None
    value: bytes
    origin: Origin
    entry: Entry  # the tracker's record of this read: its delivery report counts there


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
        self.pipeline = pipeline
        self.clock = clock
        self.on_batch = on_batch
        self.metrics = metrics or WorkerMetrics()
        self.metrics.set_model(pipeline.bundle.info)
        self.reloader = reloader
        self.heartbeat = time.monotonic()
        self.batcher: MicroBatcher[_Queued] = MicroBatcher(
            settings.batch_max_events, settings.batch_max_wait_ms / 1000, settings.batch_max_tokens
        )
        self.tracker = OffsetTracker()
        self.stats = WorkerStats()
        self._retry: deque[_Output] = deque()
        self._rejected: deque[tuple[_Output, str]] = deque()
        self._stop = threading.Event()
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
        return self.tracker.pending_records() == 0 and not self._retry and not self._rejected

    def readiness(self) -> tuple[bool, str]:
        """Ready = partitions assigned, a model loaded, and outputs being delivered."""
        if self._stop.is_set():
            return False, "shutting down"
        if not self.source.ready:
            return False, "no partitions assigned"
        for link in (self.source.link, self.sink.link):
            if link is not None and not link.up:
                return False, link.describe()
        if self._retry:
            return False, f"{len(self._retry)} outputs failed delivery and wait to be re-sent"
        return True, f"serving {self.pipeline.model_info.bundle} {self.pipeline.model_info.version}"

    # -- one iteration -----------------------------------------------------------------------
    def step(self) -> bool:
        """One poll/process/ack round; returns True when records arrived."""
        self.heartbeat = time.monotonic()
        self._swap_bundle()
        self._resend_failed()
        self._apply_backpressure()
        timeout = self.settings.poll_timeout_ms / 1000
        deadline = self.batcher.deadline()
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - self.clock()))
        room = self._room()
        records = self.source.poll(max(1, min(self.settings.poll_max_records, room)), timeout)
        now = self.clock()
        for rec in records:
            self._ingest(rec, now)
        for batch in self.batcher.due(self.clock()):
            self._process(batch)
        self.sink.poll(0)
        self._store()
        self.metrics.in_flight.set(self.tracker.in_flight_outputs)
        return bool(records)

    def _swap_bundle(self) -> None:
        """Between batches only, so no event is labelled half by one model, half by another."""
        if self.reloader is None:
            return
        new = self.reloader.take()
        if new is not None:
            log.info(
                "swapping bundle %s -> %s",
                self.pipeline.model_info.sha256[:12],
                new.model_info.sha256[:12],
            )
            self.pipeline = new
            self.metrics.set_model(new.bundle.info)

    def _used(self) -> int:
        """Outputs in flight plus those the batcher's queued events will produce."""
        return self.tracker.in_flight_outputs + len(self.batcher) * self._per_record

    def _room(self) -> int:
        """Inputs that may still be taken in without ever exceeding ``max_in_flight``."""
        return max(0, (self.max_in_flight - self._used()) // self._per_record)

    def _apply_backpressure(self) -> None:
        """Pause at the cap (or while outputs cannot be delivered); resume only once half the
        cap is free: every pause makes librdkafka drop its prefetched records, so pausing and
        resuming around a single threshold would refetch for every batch."""
        sink_down = self.sink.link is not None and not self.sink.link.up
        trouble = bool(self._retry) or sink_down
        if not self._paused and (trouble or self._room() == 0):
            log.log(
                logging.WARNING if trouble else logging.DEBUG,
                "pausing input: %d outputs in flight, %d to re-send, output broker %s",
                self.tracker.in_flight_outputs,
                len(self._retry),
                "down" if sink_down else "up",
            )
            self.source.pause()
            self._paused = True
            self._paused_for_trouble = trouble
            self.stats.pauses += 1
            self.metrics.paused.set(1)
        elif self._paused and not trouble and self._used() <= self.max_in_flight // 2:
            log.log(logging.INFO if self._paused_for_trouble else logging.DEBUG, "resuming input")
            self.source.resume()
            self._paused = False
            self.metrics.paused.set(0)

    def _ingest(self, rec: Record, now: float) -> None:
        o = rec.origin
        self.stats.received += 1
        self.metrics.events_in.inc()
        self.tracker.register(o.topic, o.partition, o.offset)
        try:
            event = decode_event(
                rec.value, self.settings.max_record_bytes, self.settings.max_text_chars
            )
        except InvalidEvent as exc:
            self._dead_letter(rec.value, exc, o)
            return
        cost = len(event.text) // 4 + 2
        for batch in self.batcher.add(_Queued(event, o, now, rec.value), now, cost):
            self._process(batch)

    def _dead_letter(self, raw: bytes | None, exc: InvalidEvent, origin: Origin) -> None:
        self._emit_dead_letter(raw, exc, origin)
        self._seal(origin)

    def _emit_dead_letter(self, raw: bytes | None, exc: InvalidEvent, origin: Origin) -> None:
        dl = dead_letter(raw, exc, origin)
        self.stats.dead_letters += 1
        self.metrics.events_dlq.labels(reason=exc.kind).inc()
        key = dl.id.encode() if dl.id else None
        self._emit(self.settings.dlq_topic, key, dl.model_dump_json().encode(), origin)

    def _process(self, batch: list[_Queued]) -> None:
        try:
            outs = self.pipeline.label(
                [q.event for q in batch], [q.origin for q in batch], [q.received for q in batch]
            )
        except Exception:
            if len(batch) == 1:  # this one event breaks the model: dead-letter it
                log.exception("labelling failed for event %s", batch[0].event.id)
                self._dead_letter(
                    batch[0].raw,
                    InvalidEvent("processing_error", "labelling failed"),
                    batch[0].origin,
                )
                return
            log.exception("batch of %d failed; retrying one by one", len(batch))
            for q in batch:
                self._process([q])
            return
        self.stats.batches += 1
        self.stats.batch_sizes.append(len(batch))
        self.metrics.batch_size.observe(len(batch))
        if outs:
            self.metrics.batch_latency.observe(outs[0].timing_ms.get("batch", 0.0) / 1000)
            for modality in ("encode", "encode_image"):
                if modality in outs[0].timing_ms:
                    name = "text" if modality == "encode" else "image"
                    self.metrics.encoder_seconds.labels(modality=name).observe(
                        outs[0].timing_ms[modality] / 1000
                    )
        for i, (q, out) in enumerate(zip(batch, outs, strict=True)):
            if i == len(outs) // 2 and i:
                crash_point("mid_batch")
            self._publish(out, q.raw)
        if self.on_batch is not None:
            self.on_batch(outs)
        if self.settings.commit_every_batch:
            self._commit_batch()

    def _commit_batch(self) -> None:
        """Wait (bounded) for the batch's outputs to be acknowledged, store and commit them
        synchronously: a crash then duplicates at most the batch in progress. An output broker
        that does not answer in ``commit_wait_s`` is left to the retry and backpressure path."""
        deadline = time.monotonic() + self.settings.commit_wait_s
        while self.tracker.in_flight_outputs and time.monotonic() < deadline:
            self._resend_failed()
            self.sink.flush(min(0.5, max(0.0, deadline - time.monotonic())))
            self.heartbeat = time.monotonic()
        self._store()
        crash_point("stored_not_committed")
        self.source.commit()

    def _publish(self, out: LabeledEvent, raw: bytes | None) -> None:
        """Emit the labelled output (and its review and route copies), or a dead letter when it
        cannot be serialised or is larger than ``max_output_bytes``: a producer would refuse
        it, and a crash here would re-read and re-crash on the same record forever."""
        s = self.settings
        out.worker = s.worker_id
        try:
            value = orjson.dumps(out.model_dump(mode="json"))
        except (TypeError, ValueError) as exc:  # e.g. nesting orjson or pydantic refuse
            msg = f"labelled output could not be serialised: {exc}"[:300]
            self._dead_letter(raw, InvalidEvent("processing_error", msg), out.origin)
            return
        if len(value) > s.max_output_bytes:
            msg = f"labelled output is {len(value)} bytes, limit {s.max_output_bytes}"
            self._dead_letter(raw, InvalidEvent("too_large", msg), out.origin)
            return
        key = out.id.encode()
        self._emit(s.output_topic, key, value, out.origin)
        self.stats.labeled += 1
        for task, tl in out.labels.items():
            self.metrics.events_labeled.labels(task=task, label=tl.label).inc()
        if out.needs_review and s.review_topic:
            self._emit(s.review_topic, key, value, out.origin)
            self.stats.review += 1
            self.metrics.events_review.inc()
        if s.route_labels:
            for task in s.route_tasks:
                if task in out.labels:
                    topic = f"{s.output_topic}.{task}.{out.labels[task].label}"
                    self._emit(topic, key, value, out.origin)
                    self.stats.routed += 1
        self._seal(out.origin)

    # -- delivery ----------------------------------------------------------------------------
    def _emit(self, topic: str, key: bytes | None, value: bytes, origin: Origin) -> None:
        entry = self.tracker.expect(origin.topic, origin.partition, origin.offset)
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.tracker.in_flight_outputs)
        self._send(_Output(topic, key, value, origin, entry))

    def _send(self, out: _Output) -> None:
        def delivered(err: Exception | None) -> None:
            o = out.origin
            if err is None:
                self.tracker.ack(o.topic, o.partition, o.offset, out.entry)
            elif not out.entry.live:  # revoked meanwhile, uncommitted: its owner re-reads it
                log.info("dropping a late failure for revoked %s[%d]", o.topic, o.partition)
            elif isinstance(err, SinkRejected):
                self._rejected.append((out, str(err)))
            else:
                log.warning("delivery to %s failed (%s); will re-send", out.topic, err)
                self._retry.append(out)

        while True:
            try:
                self.sink.produce(out.topic, out.key, out.value, delivered)
                return
            except SinkFull:
                self.sink.poll(0.1)
            except SinkRejected as exc:
                self._reject(out, str(exc))
                return

    def _reject(self, out: _Output, reason: str) -> None:
        """The broker refuses ``out`` for good: dead-letter its input (carrying the output's
        bytes), then release the refused output. In that order, so the input cannot become
        committable in between."""
        if out.topic == self.settings.dlq_topic:
            raise RuntimeError(f"the dead-letter topic refuses a dead letter: {reason}")
        if not out.entry.live:
            return
        log.error("output to %s refused (%s); dead-lettering its input", out.topic, reason)
        msg = f"output to {out.topic} refused: {reason}"[:300]
        self._emit_dead_letter(out.value, InvalidEvent("output_rejected", msg), out.origin)
        o = out.origin
        self.tracker.ack(o.topic, o.partition, o.offset, out.entry)

    def _resend_failed(self) -> None:
        for _ in range(len(self._rejected)):
            self._reject(*self._rejected.popleft())
        for _ in range(len(self._retry)):
            out = self._retry.popleft()
            if not out.entry.live:
                continue
            self.stats.redelivered += 1
            self.metrics.redelivered.inc()
            self._send(out)

    def _seal(self, origin: Origin) -> None:
        self.tracker.seal(origin.topic, origin.partition, origin.offset)

    def _store(self) -> None:
        done = self.tracker.take_committable()
        if done:
            crash_point("acked_not_stored")
            self.source.store(done)
        self.stats.completed = self.stats.received - self.tracker.pending_records()

    # -- rebalance and shutdown -------------------------------------------------------------
    def _on_revoke(self, keys: list[tuple[str, int]]) -> None:
        revoked = set(keys)
        dropped = self.batcher.discard(
            lambda q: (q.origin.topic, q.origin.partition) not in revoked
        )
        if dropped:
            log.info("revocation: %d queued events left for the next owner", len(dropped))
        self.sink.flush(10)
        self._store()
        self._retry = deque(
            o for o in self._retry if (o.origin.topic, o.origin.partition) not in revoked
        )
        self._rejected = deque(
            r for r in self._rejected if (r[0].origin.topic, r[0].origin.partition) not in revoked
        )
        self.tracker.forget(keys)

    def shutdown(self, flush_timeout_s: float = 30.0) -> None:
        """Label what is queued, wait for deliveries, store and commit, close."""
        try:
            for batch in self.batcher.drain():
                self._process(batch)
            deadline = time.monotonic() + flush_timeout_s
            while time.monotonic() < deadline:
                self._resend_failed()
                self.sink.flush(min(5.0, flush_timeout_s))
                self._store()
                if self._idle():
                    break
            if not self._idle():
                log.warning(
                    "%d inputs not fully delivered at shutdown; they stay uncommitted",
                    self.tracker.pending_records(),
                )
            self.source.commit()
        finally:
            self.source.close()
            self.sink.close()
