"""Delivery of outputs, at least once: every output is expected against its input's offset
before it is sent, acknowledged when the sink confirms it, re-sent when delivery fails, and
an input is sealed only after all its outputs were sent, in :meth:`Delivery.deliver`, the one
place that sends an input's outputs, so no path can forget to seal.

An output the broker refuses for good (too large, invalid) turns its input into a dead letter
instead of being re-sent forever. An output the sink cannot take now (a missing topic, a denied
write) is a fault of the system: it is re-sent with backoff while the worker pauses. Failed
deliveries are logged per topic without flooding the log during a broker outage
(:class:`FailureLog`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from stream.decode import dead_letter
from stream.errors import InvalidEvent
from stream.headers import Headers, dead_letter_headers
from stream.ops.logs import record_context
from stream.schemas import Origin
from stream.sinks.base import Sink, SinkFull, SinkRejected, SinkUnavailable
from stream.tracking import Entry, OffsetTracker
from stream.worker.observer import WorkerObserver, event_time

__all__ = ["Delivery", "FailureLog", "Output"]

log = logging.getLogger(__name__)

#: bounds of the backoff between waves of re-sends
RESEND_MIN_S = 0.1
RESEND_MAX_S = 5.0


@dataclass(frozen=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes
    origin: Origin
    entry: Entry  # the tracker's record of this read: its delivery report counts there
    #: a dead letter's stand-in without its raw copy, sent if the dead-letter topic refuses it
    slim: bytes | None = None
    event_time: float | None = None  # on the labelled output only: its ack ends the latency
    headers: Headers = ()


@dataclass
class _TopicFailures:
    logged_at: float
    unlogged: int = 0
    latest: str = ""


class FailureLog:
    """Logs failed deliveries per topic: the first one at once, then at most one line every
    ``interval_s`` with how many failed since the last line. A count still unlogged when
    deliveries to the topic succeed again is logged with the next success past the interval."""

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] | None = None) -> None:
        self.interval_s = interval_s
        self._clock = clock or time.monotonic
        self._topics: dict[str, _TopicFailures] = {}
        self._unlogged = 0  # over all topics: a successful delivery checks only this

    def failed(self, topic: str, err: object) -> None:
        now = self._clock()
        t = self._topics.get(topic)
        if t is None:
            self._topics[topic] = _TopicFailures(now)
            log.warning("delivery to %s failed (%s); will re-send", topic, err)
            return
        t.unlogged += 1
        t.latest = str(err)
        self._unlogged += 1
        self._summarize(topic, t, now)

    def succeeded(self, topic: str) -> None:
        if self._unlogged:
            t = self._topics.get(topic)
            if t is not None and t.unlogged:
                self._summarize(topic, t, self._clock())

    def _summarize(self, topic: str, t: _TopicFailures, now: float) -> None:
        if now - t.logged_at < self.interval_s:
            return
        log.warning(
            "%d more deliveries to %s failed in the last %.0f s (latest: %s); will re-send",
            t.unlogged,
            topic,
            now - t.logged_at,
            t.latest,
        )
        self._unlogged -= t.unlogged
        t.logged_at, t.unlogged = now, 0


class Delivery:
    """Sends outputs through ``sink`` and accounts for them in ``tracker``.

    ``on_wait`` is called while the sink's queue is full: it keeps the worker's heartbeat fresh
    and returns True once the worker is stopping (the output then waits in :attr:`retry`)."""

    def __init__(
        self,
        sink: Sink,
        tracker: OffsetTracker,
        observer: WorkerObserver,
        dlq_topic: str,
        on_wait: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.tracker = tracker
        self.observer = observer
        self.dlq_topic = dlq_topic
        self.on_wait = on_wait
        self.clock = clock
        self.retry: deque[Output] = deque()
        self.rejected: deque[tuple[Output, str]] = deque()
        self.failures = FailureLog()
        #: the latest failed delivery (topic, error) while outputs wait to be re-sent
        self.latest_failure: tuple[str, str] | None = None
        self._delay = RESEND_MIN_S
        self._next_resend = 0.0

    @property
    def idle(self) -> bool:
        """Nothing waits to be re-sent or dead-lettered."""
        return not self.retry and not self.rejected

    def problem(self) -> str | None:
        """Why outputs wait to be re-sent (for readiness), or None."""
        if not self.retry:
            return None
        where = ""
        if self.latest_failure is not None:
            where = " ({}: {})".format(*self.latest_failure)
        return f"{len(self.retry)} outputs failed delivery and wait to be re-sent{where}"

    def deliver(
        self,
        origin: Origin,
        key: bytes | None,
        value: bytes,
        topics: Iterable[str],
        created_at: datetime | None = None,
        headers: Headers = (),
    ) -> None:
        """Send one input's outputs (``value`` to each of ``topics``, the labelled topic
        first), then seal the input: its offset becomes committable once they are all
        acknowledged. The labelled output's ack observes the end-to-end latency."""
        when = event_time(origin, created_at)
        for i, topic in enumerate(topics):
            self._emit(topic, key, value, origin, when if i == 0 else None, headers=headers)
        self.tracker.seal(origin.topic, origin.partition, origin.offset)

    def dead_letter(
        self,
        raw: bytes | None,
        exc: InvalidEvent,
        origin: Origin,
        key: bytes | None = None,
        headers: Headers = (),
    ) -> None:
        """The input's only output is a dead letter carrying ``raw``, under the record's own
        key (else the event id) with its headers and the error's (:mod:`stream.headers`)."""
        self._emit_dead_letter(raw, exc, origin, key, headers)
        self.tracker.seal(origin.topic, origin.partition, origin.offset)

    def resend_failed(self, now: float | None = None) -> None:
        """Dead-letter the inputs of refused outputs; re-send failed outputs, at most once
        per backoff delay (doubling while deliveries keep failing, reset by a success), so a
        missing topic or a denied write is not retried in a busy loop."""
        for _ in range(len(self.rejected)):
            self._reject(*self.rejected.popleft())
        now = self.clock() if now is None else now
        if not self.retry or now < self._next_resend:
            return
        self._next_resend = now + self._delay
        self._delay = min(self._delay * 2, RESEND_MAX_S)
        for _ in range(len(self.retry)):
            out = self.retry.popleft()
            if not out.entry.live:
                continue
            self.observer.redelivered()
            self._send(out)
        if not self.retry:
            self.latest_failure = None

    def forget(self, revoked: set[tuple[str, int]]) -> None:
        """Drop what waits for partitions now owned by another worker."""

        def kept(o: Output) -> bool:
            return (o.origin.topic, o.origin.partition) not in revoked

        self.retry = deque(o for o in self.retry if kept(o))
        self.rejected = deque(r for r in self.rejected if kept(r[0]))

    def _emit_dead_letter(
        self,
        raw: bytes | None,
        exc: InvalidEvent,
        origin: Origin,
        key: bytes | None = None,
        headers: Headers = (),
    ) -> None:
        dl = dead_letter(raw, exc, origin)
        self.observer.dead_letter(exc.kind)
        if key is None and dl.id:
            key = dl.id.encode()
        slim = None
        if dl.raw_b64:
            slim = dead_letter(raw, exc, origin, keep=0).model_dump_json().encode()
        value = dl.model_dump_json().encode()
        hdrs = dead_letter_headers(headers, exc.kind, exc.message, origin)
        self._emit(self.dlq_topic, key, value, origin, slim=slim, headers=hdrs)

    def _emit(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        origin: Origin,
        when: float | None = None,
        slim: bytes | None = None,
        headers: Headers = (),
    ) -> None:
        entry = self.tracker.expect(origin.topic, origin.partition, origin.offset, 1, len(value))
        self.observer.output_expected(self.tracker.in_flight_outputs)
        self._send(Output(topic, key, value, origin, entry, slim, when, headers))

    def _acked(self, out: Output) -> bool:
        o = out.origin
        return self.tracker.ack(o.topic, o.partition, o.offset, out.entry, len(out.value))

    def _failed(self, out: Output, err: object) -> None:
        """A delivery failed (or the sink could not take it): re-send it later."""
        self.failures.failed(out.topic, err)
        self.latest_failure = (out.topic, str(err)[:200])
        self.retry.append(out)

    def _delivered(self, out: Output, err: Exception | None) -> None:
        """The sink's delivery report of ``out``."""
        o = out.origin
        if err is None:
            self._delay = RESEND_MIN_S
            if self._acked(out) and out.event_time is not None:  # a stale one observes nothing
                self.observer.acknowledged(out.event_time)
            self.failures.succeeded(out.topic)
        elif not out.entry.live:  # revoked meanwhile, uncommitted: its owner re-reads it
            log.info("dropping a late failure for revoked %s[%d]", o.topic, o.partition)
        elif isinstance(err, SinkRejected):
            self.rejected.append((out, str(err)))
        else:
            self._failed(out, err)

    def _send(self, out: Output) -> None:
        delivered = functools.partial(self._delivered, out)
        while True:
            try:
                self.sink.produce(out.topic, out.key, out.value, delivered, out.headers)
                return
            except SinkFull:
                self.sink.poll(0.1)
                if self.on_wait():
                    self.retry.append(out)
                    return
            except SinkRejected as exc:
                self._reject(out, str(exc))
                return
            except SinkUnavailable as exc:
                self._failed(out, exc)
                return

    def _reject(self, out: Output, reason: str) -> None:
        """The broker refuses ``out`` for good: dead-letter its input (carrying the output's
        bytes), then release the refused output. In that order, so the input cannot become
        committable in between."""
        if not out.entry.live:
            return
        if out.topic == self.dlq_topic:
            self._dead_letter_refused(out, reason)
            return
        if not out.entry.rejected:  # one dead letter per input, however many outputs are refused
            out.entry.rejected = True
            log.error(
                "output to %s refused (%s); dead-lettering its input",
                out.topic,
                reason,
                extra=record_context(out.origin),
            )
            msg = f"output to {out.topic} refused: {reason}"[:300]
            self._emit_dead_letter(
                out.value, InvalidEvent("output_rejected", msg), out.origin, None, out.headers
            )
        self._acked(out)

    def _dead_letter_refused(self, out: Output, reason: str) -> None:
        """The dead-letter topic refuses a dead letter (its ``max.message.bytes`` below the
        copy it carries): send it without the copy. Refused even then, the fault is the
        topic's: the dead letter waits to be re-sent, which pauses the input and fails
        readiness, until the topic is fixed. Never a crash, never a lost event."""
        if out.slim is None:
            log.error(
                "the dead-letter topic %s refuses a dead letter: %s",
                out.topic,
                reason,
                extra=record_context(out.origin),
            )
            self._failed(out, f"dead letter refused: {reason}")
            return
        log.error(
            "the dead-letter topic refused a dead letter (%s); re-sent without its raw copy", reason
        )
        self._emit(out.topic, out.key, out.slim, out.origin, headers=out.headers)
        self._acked(out)
