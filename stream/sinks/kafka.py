"""Kafka sink: an idempotent confluent-kafka producer with delivery reports."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from stream.connectivity import BrokerLink
from stream.sinks.base import DeliveryCallback, Sink, SinkFull, SinkRejected

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
        self._conf = merged
        self._producer = self._new_producer()
        self.last_error: str | None = None

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
        """
        old, self._producer = self._producer, self._new_producer()
        log.warning(
            "producer hit a fatal error (%s); replaced it, undelivered outputs re-sent", reason
        )
        with contextlib.suppress(KafkaException):
            old.purge(in_queue=True, in_flight=True, blocking=False)
        deadline = time.monotonic() + 10
        while len(old) and time.monotonic() < deadline:
            try:  # serves the purged outputs' reports; a fatal producer re-raises on each poll
                old.poll(0.1)
            except KafkaException:
                continue
        if len(old):  # stay unacknowledged: their inputs are never committed, so re-read
            log.error("%d outputs of the replaced producer got no delivery report", len(old))

    def _recover(self, exc: KafkaException) -> None:
        """Re-raise ``exc`` unless the producer is fatal; then replace the producer."""
        if not _fatal(exc):
            raise exc
        self.renew(str(exc))

    def produce(
        self, topic: str, key: bytes | None, value: bytes, on_delivery: DeliveryCallback
    ) -> None:
        def report(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self.last_error = str(err)
                kind = SinkRejected if _rejected(err) else KafkaDeliveryError
                on_delivery(kind(str(err)))
            else:
                self._link.mark_up()
                on_delivery(None)

        for attempt in range(2):
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=report)
                return
            except BufferError as exc:
                raise SinkFull(str(exc)) from None
            except KafkaException as exc:
                if exc.args and _rejected(exc.args[0]):
                    raise SinkRejected(str(exc.args[0])) from None
                if attempt:
                    raise
                self._recover(exc)

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

    def close(self) -> None:
        remaining = self.flush(10)
        if remaining:
            log.warning("%d outputs undelivered at close; their inputs stay uncommitted", remaining)
