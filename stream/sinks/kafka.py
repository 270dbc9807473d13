"""Kafka sink: an idempotent confluent-kafka producer with delivery reports."""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from stream.connectivity import BrokerLink
from stream.headers import Headers
from stream.sinks.base import DeliveryCallback, Sink, SinkFull, SinkRejected, SinkUnavailable

__all__ = ["KafkaDeliveryError", "KafkaSink"]

log = logging.getLogger(__name__)


class KafkaDeliveryError(Exception):
    """A message could not be delivered (after librdkafka's own retries)."""


#: errors that no re-send can fix: the message itself is refused (size, format)
_REJECTED = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
}


def _rejected(err: object) -> bool:
    return isinstance(err, KafkaError) and err.code() in _REJECTED


def _fatal(exc: KafkaException) -> bool:
    """Whether librdkafka declared the producer unusable (it raises that from produce, poll
    and flush alike)."""
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and (err.fatal() or err.code() == KafkaError._FATAL)


class KafkaSink(Sink):
    def __init__(self, conf: dict[str, Any]) -> None:
        base = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 100_000,
            "message.timeout.ms": 60_000,
            "log_level": 3,
        }
        self._link = BrokerLink("producer")
        self.link = self._link
        merged = {**base, "error_cb": self._link.on_error, "stats_cb": self._link.on_stats, **conf}
        self.capacity = int(merged["queue.buffering.max.messages"])
        #: librdkafka refuses (BufferError) an output bigger than its whole queue, for ever
        self.queue_bytes = int(merged.get("queue.buffering.max.kbytes", 1_048_576)) * 1024
        self._conf = merged
        self._producer = self._new_producer()
        self.last_error: str | None = None
        #: callbacks handed to librdkafka and not yet reported, by ticket, with the producer
        #: that holds them: a renewal fails those the replaced producer never reports
        self._outstanding: dict[int, tuple[Producer, DeliveryCallback]] = {}
        self._tickets = itertools.count()
        self.renew_wait_s = 10.0
        self.check_timeout_s = 10.0

    def _new_producer(self) -> Producer:
        return Producer(
            self._conf, logger=self._link.quiet(logging.getLogger(f"{__name__}.librdkafka"))
        )

    def renew(self, reason: str) -> None:
        """Replace the producer after a fatal error (an idempotent producer whose sequence
        numbers the broker no longer accepts, e.g. after a broker restart lost its state: seen
        as OUT_OF_ORDER_SEQUENCE_NUMBER on noida-db). librdkafka refuses every later produce on
        a fatal producer, so without this the worker would die. Everything the old producer
        still held is purged and its delivery reports served, so each output is reported as
        failed (and re-sent by the worker) or delivered: duplicates are possible, loss is not.
        Outputs it never reports are failed here after a bounded wait.
        """
        old, self._producer = self._producer, self._new_producer()
        log.warning(
            "producer hit a fatal error (%s); replaced it, undelivered outputs re-sent", reason
        )
        with contextlib.suppress(KafkaException):
            old.purge(in_queue=True, in_flight=True, blocking=False)
        deadline = time.monotonic() + self.renew_wait_s
        while len(old) and time.monotonic() < deadline:
            try:  # serves the purged outputs' reports; a fatal producer re-raises on each poll
                old.poll(0.1)
            except KafkaException:
                continue
        self._fail_unreported(old)

    def _fail_unreported(self, old: Producer) -> None:
        """Report every output ``old`` was given and never reported as failed (the worker
        re-sends it): a report that never comes would hold its input, and every later commit
        of the batch mode, for ever."""
        lost = [t for t, (owner, _cb) in self._outstanding.items() if owner is old]
        if lost:
            log.error("%d outputs of the replaced producer got no delivery report", len(lost))
        for ticket in lost:
            _owner, callback = self._outstanding.pop(ticket)
            callback(KafkaDeliveryError("the replaced producer never reported this output"))

    def _recover(self, exc: KafkaException) -> None:
        """Re-raise ``exc`` as :class:`SinkUnavailable` unless the producer is fatal; then
        replace the producer."""
        if not _fatal(exc):
            raise SinkUnavailable(str(exc.args[0] if exc.args else exc)) from None
        self.renew(str(exc))

    def _report(self, on_delivery: DeliveryCallback) -> Any:
        """A delivery report for librdkafka that fires ``on_delivery`` at most once (a renewal
        may have failed it already)."""
        ticket = next(self._tickets)
        self._outstanding[ticket] = (self._producer, on_delivery)

        def report(err: KafkaError | None, _msg: Message) -> None:
            if self._outstanding.pop(ticket, None) is None:
                return
            if err is not None:
                self.last_error = str(err)
                kind = SinkRejected if _rejected(err) else KafkaDeliveryError
                on_delivery(kind(str(err)))
            else:
                self._link.mark_up()
                on_delivery(None)

        return ticket, report

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        on_delivery: DeliveryCallback,
        headers: Headers | None = None,
    ) -> None:
        if len(value) + len(key or b"") > self.queue_bytes:
            raise SinkRejected(f"{len(value)} bytes do not fit the producer queue")
        for attempt in range(2):
            ticket, report = self._report(on_delivery)
            try:
                self._producer.produce(
                    topic, value=value, key=key, on_delivery=report, headers=list(headers or [])
                )
                return
            except BufferError as exc:
                self._outstanding.pop(ticket, None)
                raise SinkFull(str(exc)) from None
            except KafkaException as exc:
                self._outstanding.pop(ticket, None)
                if exc.args and _rejected(exc.args[0]):
                    raise SinkRejected(str(exc.args[0])) from None
                if attempt:
                    raise SinkUnavailable(str(exc.args[0] if exc.args else exc)) from None
                self._recover(exc)

    def check_topics(self, topics: list[str]) -> dict[str, str]:
        """Ask the cluster for each topic's metadata: a missing topic (auto-creation off) or
        one this client may not see (ACL) is named with the broker's error."""
        problems: dict[str, str] = {}
        for topic in dict.fromkeys(topics):
            try:
                md = self._producer.list_topics(topic=topic, timeout=self.check_timeout_s)
            except KafkaException as exc:
                problems[topic] = str(exc.args[0] if exc.args else exc)
                continue
            meta = md.topics.get(topic)
            if meta is None or meta.error is not None:
                problems[topic] = str(meta.error if meta is not None else "not in metadata")
        return problems

    def poll(self, timeout_s: float = 0.0) -> None:
        try:
            self._producer.poll(timeout_s)
        except KafkaException as exc:
            self._recover(exc)

    def flush(self, timeout_s: float = 30.0) -> int:
        try:
            return int(self._producer.flush(timeout_s))
        except KafkaException as exc:
            self._recover(exc)  # the old producer's outputs come back as failed: re-sent
            return len(self._producer)

    def __len__(self) -> int:
        return len(self._producer)

    def close(self, timeout_s: float = 10.0) -> None:
        remaining = self.flush(timeout_s)
        if remaining:
            log.warning("%d outputs undelivered at close; their inputs stay uncommitted", remaining)
