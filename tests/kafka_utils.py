"""Small helpers for tests that talk to a real broker."""

from __future__ import annotations

import time
import uuid

import orjson
from confluent_kafka import Consumer, Producer

from stream.ops.admin import ensure_topics
from stream.settings import Settings
from stream.sources.kafka import close_consumer


def create_topics(settings: Settings, input_partitions: int = 3) -> None:
    topics = {settings.input_topic: input_partitions}
    topics.update({t: 1 for t in settings.output_topics()})
    ensure_topics(settings.kafka_common(), topics)


def seed(bootstrap: str, topic: str, values: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 3})
    for i, v in enumerate(values):
        p.produce(topic, value=v, key=str(i).encode())
    assert p.flush(30) == 0


def make_events(n: int, prefix: str = "e") -> list[bytes]:
    words = [
        "flood",
        "bridge",
        "collapsed",
        "shelter",
        "donate",
        "water",
        "rescue",
        "power",
        "injured",
        "volunteers",
        "road",
        "closed",
        "fire",
        "homes",
        "lol",
        "movie",
    ]
    out = []
    for i in range(n):
        text = " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(6 + i % 9))
        out.append(orjson.dumps({"id": f"{prefix}-{i}", "text": f"{text} #{i}"}))
    return out


class TopicReader:
    """A consumer that keeps reading a topic from the beginning and accumulates records."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "log_level": 3,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1000,
            }
        )
        self._c.subscribe([topic])
        self.records: list[dict] = []

    def poll(self, timeout_s: float = 0.3) -> int:
        msgs = [m for m in self._c.consume(1000, timeout_s) if m.error() is None]
        self.records += [orjson.loads(m.value()) for m in msgs]
        return len(msgs)

    def until(self, min_count: int, timeout_s: float = 60.0, settle_s: float = 1.0) -> list[dict]:
        """Read until ``min_count`` records and ``settle_s`` of quiet, or the timeout."""
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if self.poll():
                quiet_since = time.monotonic()
                if settle_s == 0 and len(self.records) >= min_count:
                    break
            elif len(self.records) >= min_count and time.monotonic() - quiet_since >= settle_s:
                break
        return self.records

    def close(self) -> None:
        close_consumer(self._c)


def read_all(
    bootstrap: str, topic: str, min_count: int, timeout_s: float = 60.0, settle_s: float = 1.0
) -> list[dict]:
    """Read a topic from the beginning until ``min_count`` records and ``settle_s`` of quiet."""
    reader = TopicReader(bootstrap, topic)
    try:
        return reader.until(min_count, timeout_s, settle_s)
    finally:
        reader.close()
