"""Kafka sink: an idempotent confluent-kafka producer with delivery reports."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from stream.connectivity import BrokerLink
from stream.sinks.base import DeliveryCallback, Sink, SinkFull

__all__ = ["KafkaDeliveryError", "KafkaSink"]

log = logging.getLogger(__name__)


class KafkaDeliveryError(Exception):
    """A message could not be delivered (after librdkafka's own retries)."""


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
        self._producer = Producer(
            merged, logger=self._link.quiet(logging.getLogger(f"{__name__}.librdkafka"))
        )
        self.last_error: str | None = None

    def produce(
        self, topic: str, key: bytes | None, value: bytes, on_delivery: DeliveryCallback
    ) -> None:
        def report(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self.last_error = str(err)
                on_delivery(KafkaDeliveryError(str(err)))
            else:
                self._link.mark_up()
                on_delivery(None)

        try:
            self._producer.produce(topic, value=value, key=key, on_delivery=report)
        except BufferError as exc:
            raise SinkFull(str(exc)) from None

    def poll(self, timeout_s: float = 0.0) -> None:
        self._producer.poll(timeout_s)

    def flush(self, timeout_s: float = 30.0) -> int:
        return int(self._producer.flush(timeout_s))

    def __len__(self) -> int:
        return len(self._producer)

    def close(self) -> None:
        remaining = self.flush(10)
        if remaining:
            log.warning("%d outputs undelivered at close; their inputs stay uncommitted", remaining)
