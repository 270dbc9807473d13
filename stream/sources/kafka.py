"""Kafka source on confluent-kafka: consumer group, manual offset store, pause/resume.

Offsets are stored only for records whose outputs are acknowledged (``store``); librdkafka
commits stored offsets in the background, the worker after each batch without waiting for the
answer, and we commit synchronously on revocation and close.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream.connectivity import BrokerLink
from stream.errors import BrokerError
from stream.headers import normalise
from stream.schemas import Origin
from stream.sources.base import Record, Source

__all__ = ["KafkaSource", "close_consumer"]

log = logging.getLogger(__name__)


def close_consumer(consumer: Consumer, settle_s: float = 2.0) -> None:
    """Leave the subscription, serve the rebalance events it raises, then close ``consumer``.

    librdkafka serves a pending assignment inside ``close()`` and deadlocks in the assign it
    makes there (confluentinc/librdkafka#4884) while holding the GIL, so nothing in the process
    runs again, not even a signal handler; it struck static members (``group.instance.id``).
    After ``unsubscribe()`` no assignment is coming, and polls serve any that came, until none
    is held for three polls in a row (at most ``settle_s``). Records those polls return are
    dropped unprocessed: callers never commit offsets they did not process (auto-commit off, or
    offsets stored by hand), so those records are read again.
    """
    try:
        consumer.unsubscribe()
    except RuntimeError:  # closed already: closing again is a no-op
        return
    except KafkaException as exc:  # a fatal consumer: nothing to serve, close it all the same
        log.debug("unsubscribe before close: %s", exc)
    try:
        deadline = time.monotonic() + settle_s
        quiet = 0
        while quiet < 3 and time.monotonic() < deadline:
            consumer.consume(num_messages=500, timeout=0.05)
            quiet = 0 if consumer.assignment() else quiet + 1
    except KafkaException as exc:
        log.debug("poll before close: %s", exc)
    finally:  # also when a rebalance callback raised
        consumer.close()


def _fatal(err: KafkaError) -> bool:
    """librdkafka reports a fatal consumer error as an event with code ``_FATAL`` (whose own
    ``fatal()`` is False) or through ``error_cb`` with ``fatal()`` set."""
    return bool(err.fatal()) or err.code() == KafkaError._FATAL


class KafkaSource(Source):
    """Subscribe to ``topics`` as member of ``conf['group.id']``."""

    def __init__(
        self,
        conf: dict[str, Any],
        topics: list[str],
        stats_cb: Callable[[str], None] | None = None,
    ) -> None:
        base: dict[str, Any] = {
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
            "auto.offset.reset": "earliest",
            "log_level": 3,
        }
        self._link = BrokerLink("consumer")
        self.link = self._link

        def on_stats(stats_json: str) -> None:
            self._link.on_stats(stats_json)
            if stats_cb is not None:
                stats_cb(stats_json)

        self._fatal: str | None = None

        def on_error(err: KafkaError) -> None:
            if _fatal(err):
                self._fatal = str(err)
            self._link.on_error(err)

        base["error_cb"] = on_error
        base["on_commit"] = self._on_commit
        base["stats_cb"] = on_stats
        merged = {**base, **conf}
        strategy = str(merged.get("partition.assignment.strategy", ""))
        self._cooperative = "cooperative" in strategy
        self._consumer = Consumer(
            merged, logger=self._link.quiet(logging.getLogger(f"{__name__}.librdkafka"))
        )
        self._assigned: set[tuple[str, int]] = set()
        #: per partition: the offset last stored, the last one the broker confirmed, and those
        #: of the commit sent without waiting and not yet answered
        self._stored: dict[tuple[str, int], int] = {}
        self._answered: dict[tuple[str, int], int] = {}
        self._unanswered: dict[tuple[str, int], int] = {}
        self._joined = False
        self._paused = False
        self._consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        self.last_error: str | None = None

    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        """Partitions assigned while the input is paused stay paused. Only assigned partitions
        can be paused, and the client assigns them after this callback (which would fetch
        them), so the assignment is applied here first."""
        self._assigned |= {(p.topic, p.partition) for p in parts}
        self._joined = True  # also with no partitions: an idle member is a healthy one
        log.info("assigned %s", sorted(self._assigned))
        if self._paused:
            if self._cooperative:
                consumer.incremental_assign(parts)
            else:
                consumer.assign(parts)
            consumer.pause(parts)

    def _on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        keys = [(p.topic, p.partition) for p in parts]
        log.info("revoked %s", keys)
        if self.on_revoke is not None:
            self.on_revoke(keys)
        self.commit()
        self._assigned -= set(keys)
        for key in keys:
            for offsets in (self._stored, self._answered, self._unanswered):
                offsets.pop(key, None)

    @property
    def assignment(self) -> set[tuple[str, int]]:
        return set(self._assigned)

    @property
    def ready(self) -> bool:
        """Joined the group once (with or without partitions): a replica left without a
        partition, or one in the middle of a rebalance, is not failing."""
        return self._joined

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Raises :class:`~stream.errors.BrokerError` on a fatal consumer error: a consumer
        fenced by another with the same ``group.instance.id`` never reads again, and a worker
        that went on answering health checks would be a zombie holding no partition.

        Records already fetched, up to ``max_records``, without waiting; only when there are
        none, wait up to ``timeout_s`` for the first one.

        ``Consumer.consume(n, timeout)`` returns only once it has ``n`` messages or the timeout
        expires (measured: a record that arrived 0.1 s into ``consume(500, 1.0)`` came back
        after 1.0 s), which held the first record of each batch for a whole poll timeout before
        the micro-batcher's clock even started. ``consume(1, timeout)`` returns on arrival.
        """
        out: list[Record] = []
        msgs = self._consumer.consume(max_records, 0)
        if not msgs and timeout_s > 0:
            msgs = self._consumer.consume(1, timeout_s)
        if self._fatal is not None:
            raise BrokerError(f"the consumer hit a fatal error and cannot go on: {self._fatal}")
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if _fatal(err):  # e.g. fenced by a newer member with the same instance id
                    self._fatal = str(err)
                    raise BrokerError(f"the consumer hit a fatal error and cannot go on: {err}")
                if err.code() == KafkaError._ALL_BROKERS_DOWN:
                    self._link.mark_down(str(err))
                elif err.code() != KafkaError._PARTITION_EOF:
                    self.last_error = str(err)
                    log.warning("consumer error: %s", err)
                continue
            self._link.mark_up()
            ts_type, ts = msg.timestamp()
            origin = Origin(
                topic=msg.topic(),
                partition=msg.partition(),
                offset=msg.offset(),
                timestamp=ts if ts_type else None,
            )
            out.append(Record(msg.value(), msg.key(), origin, normalise(msg.headers())))
        return out

    def store(self, offsets: dict[tuple[str, int], int]) -> None:
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items() if (t, p) in self._assigned]
        if tps:
            try:
                self._consumer.store_offsets(offsets=tps)
            except KafkaException as exc:  # partition lost between ack and store
                log.warning("store_offsets failed: %s", exc)
                return
            self._stored.update({(tp.topic, tp.partition): tp.offset for tp in tps})

    def commit(self, wait: bool = True) -> None:
        """``wait=False`` sends the offsets stored since the last answered commit and returns;
        librdkafka reports the answer to :meth:`_on_commit` during a later poll. Only one such
        commit is left unanswered at a time: while the last one is (or when sending fails),
        this commit waits, so a crash re-reads at most what was stored after the last answered
        commit (the batch committed last and the one after)."""
        if not self._assigned:
            return
        if not wait and not self._unanswered:
            news = {
                k: o
                for k, o in self._stored.items()
                if k in self._assigned and o > self._answered.get(k, -1)
            }
            if not news:
                return
            try:
                self._consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in news.items()],
                    asynchronous=True,
                )
            except KafkaException as exc:
                log.warning("commit failed, committing synchronously: %s", exc)
            else:
                self._unanswered = news
                return
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            # _NO_OFFSET: everything stored is committed already, which is fine
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit failed: %s", exc)
                return
        self._answered.update(self._stored)
        self._unanswered = {}

    @property
    def unanswered(self) -> dict[tuple[str, int], int]:
        """Offsets of the commit sent without waiting that the broker has not yet confirmed."""
        return dict(self._unanswered)

    def _on_commit(self, err: KafkaError | None, parts: list[TopicPartition]) -> None:
        """A commit's answer (ours or librdkafka's timer's): offsets the broker now holds are
        answered. A failed commit leaves ours unanswered, and the next commit waits; so does an
        answer of "nothing to commit", which may belong to another commit than ours."""
        if err is not None:
            if err.code() != KafkaError._NO_OFFSET:
                log.warning("commit failed: %s", err)
            return
        for tp in parts or ():
            key = (tp.topic, tp.partition)
            if tp.error is not None or tp.offset < 0 or key not in self._assigned:
                continue  # not committed by this request (librdkafka reports -1001), or revoked
            self._answered[key] = max(tp.offset, self._answered.get(key, -1))
            if key in self._unanswered and tp.offset >= self._unanswered[key]:
                del self._unanswered[key]

    def pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._consumer.pause([TopicPartition(t, p) for t, p in self._assigned])

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._consumer.resume([TopicPartition(t, p) for t, p in self._assigned])

    def committed(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        tps = self._consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=10)
        return {(tp.topic, tp.partition): tp.offset for tp in tps}

    def close(self) -> None:
        try:
            self.commit()
        finally:
            close_consumer(self._consumer)
