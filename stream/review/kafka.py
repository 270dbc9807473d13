"""The page's two Kafka clients: a follower that reads topics from the beginning, and the
producer of answers.

The follower assigns partitions itself (no group membership, auto-commit off, never commits):
the page is a view that rebuilds its state from the topics at every start, so it owns no
offsets, joins no group and can run as many instances as wanted without a rebalance between
them. It looks for the topics (and partitions added later) every ``refresh_s``, so it can start
before the worker has created the review topic.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)
from confluent_kafka import TopicPartition as Partition

from stream.errors import BrokerError

__all__ = ["FeedbackProducer", "TopicFollower"]

log = logging.getLogger(__name__)

Handler = Callable[[Message], None]


class TopicFollower:
    """Feeds every record of ``handlers``' topics, from their beginning, to the topic's
    handler, on its own thread until :meth:`stop`."""

    def __init__(
        self, conf: Mapping[str, Any], handlers: Mapping[str, Handler], refresh_s: float = 10.0
    ) -> None:
        self._conf: dict[str, Any] = {
            **conf,
            "group.id": f"crisis-review-{uuid.uuid4().hex[:12]}",  # never joined nor committed
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            "log_level": 3,
        }
        self._handlers = dict(handlers)
        self._refresh_s = refresh_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="review-follower", daemon=True)
        self._assigned: set[tuple[str, int]] = set()
        self._missing: set[str] = set()  # topics reported absent (once each)
        self.failed: BaseException | None = None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def partitions(self) -> int:
        return len(self._assigned)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        consumer = Consumer(self._conf, logger=log)
        try:
            next_refresh = 0.0
            while not self._stop.is_set():
                if time.monotonic() >= next_refresh:
                    self._assign_new(consumer)
                    next_refresh = time.monotonic() + self._refresh_s
                for msg in consumer.consume(500, 0.2):
                    self._handle(msg)
        except BaseException as exc:
            self.failed = exc
            log.exception("the review page's consumer stopped")
        finally:
            consumer.close()

    def _handle(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("review consumer error: %s", err)
            return
        self._handlers[str(msg.topic())](msg)

    def _assign_new(self, consumer: Consumer) -> None:
        """Assign, from the beginning, each partition of the topics not assigned yet."""
        new = []
        for topic in self._handlers:
            try:
                md = consumer.list_topics(topic, timeout=5.0).topics.get(topic)
            except Exception as exc:  # a broker away: keep reading, look again later
                log.warning("cannot list topic %s: %s", topic, exc)
                continue
            if md is None or md.error is not None:
                if topic not in self._missing:
                    self._missing.add(topic)
                    log.warning(
                        "topic %s not found yet; looking again every %s s", topic, self._refresh_s
                    )
                continue
            for p in sorted(md.partitions):
                if (topic, p) not in self._assigned:
                    new.append(Partition(topic, p, OFFSET_BEGINNING))
                    self._assigned.add((topic, p))
        if new:
            consumer.incremental_assign(new)
            log.info("reading %s", [f"{tp.topic}[{tp.partition}]" for tp in new])


class FeedbackProducer:
    """Produces one answer at a time and returns only once the broker acknowledged it, so an
    analyst never sees "saved" for an answer that was lost. Answers come at human pace: one
    lock keeps each delivery report with its own request."""

    def __init__(self, conf: Mapping[str, Any], topic: str, timeout_s: float = 10.0) -> None:
        self.topic = topic
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._producer = Producer(
            {**conf, "enable.idempotence": True, "acks": "all", "linger.ms": 0, "log_level": 3},
            logger=log,
        )

    def send(self, key: str, value: bytes) -> None:
        """Produce and wait for the delivery report; :class:`BrokerError` when it failed."""
        errors: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err)

        with self._lock:
            try:
                self._producer.produce(self.topic, value=value, key=key, on_delivery=delivered)
            except (BufferError, KafkaException) as exc:
                raise BrokerError(f"cannot produce to {self.topic}: {exc}") from exc
            if self._producer.flush(self._timeout_s) > 0:
                raise BrokerError(f"no acknowledgement from {self.topic} in {self._timeout_s} s")
        if errors:
            raise BrokerError(f"{self.topic} refused the answer: {errors[0].str()}")

    def close(self) -> None:
        self._producer.flush(self._timeout_s)
