"""Send chosen dead letters back to the input topic, as they came in.

Once the cause is fixed (a topic's size limit raised, a bug in a bundle), dead letters of that
kind can be labelled after all. Each is re-sent with its original value (decoded from the
envelope), key and headers, plus ``crisis.redrive.of`` naming the dead letter. The dead-letter
topic is read as a consumer group whose offsets are committed only after the re-sent records
are acknowledged, so a second run continues where the first stopped instead of sending the
same dead letters again; a crash in between re-sends at most the unacknowledged ones, which
carry their keys for consumers to drop. A truncated dead letter (its raw copy was cut or
refused) cannot be re-sent from the envelope and is counted, not sent.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer
from pydantic import ValidationError

from stream.errors import BrokerError
from stream.headers import PREFIX, normalise, original_headers
from stream.schemas import DeadLetter
from stream.sources.kafka import close_consumer

__all__ = ["RedriveReport", "redrive"]

log = logging.getLogger(__name__)


@dataclass
class RedriveReport:
    read: int = 0
    sent: int = 0
    other_kind: int = 0
    truncated: int = 0
    not_a_dead_letter: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class _Plan:
    to_topic: str
    kinds: Collection[str] | None


def _resend(msg: Message, plan: _Plan, producer: Producer | None, report: RedriveReport) -> None:
    report.read += 1
    try:
        dl = DeadLetter.model_validate_json(msg.value() or b"")
    except ValidationError:
        report.not_a_dead_letter += 1
        return
    if plan.kinds is not None and dl.error.kind not in plan.kinds:
        report.other_kind += 1
        return
    if dl.raw_truncated:
        report.truncated += 1
        return
    of = f"{msg.topic()}/{msg.partition()}/{msg.offset()}".encode()
    headers: list[tuple[str, str | bytes | None]] = [
        *original_headers(normalise(msg.headers())),
        (f"{PREFIX}redrive.of", of),
    ]
    report.sent += 1
    if producer is not None:
        value = base64.b64decode(dl.raw_b64)
        producer.produce(plan.to_topic, value=value, key=msg.key(), headers=headers)
        producer.poll(0)


def redrive(
    conf: dict[str, Any],
    dlq_topic: str,
    to_topic: str,
    kinds: Collection[str] | None,
    group: str = "crisis-stream-redrive",
    dry_run: bool = False,
    timeout_s: float = 30.0,
) -> RedriveReport:
    """Re-send the dead letters of ``dlq_topic`` (of ``kinds``, or all) not yet re-sent by
    ``group`` to ``to_topic``; with ``dry_run`` only count them."""
    consumer = Consumer(
        {
            **conf,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "log_level": 3,
        }
    )
    producer = None if dry_run else Producer({**conf, "enable.idempotence": True, "log_level": 3})
    plan, report = _Plan(to_topic, kinds), RedriveReport()
    try:
        _drain(consumer, dlq_topic, plan, producer, report, timeout_s)
        if producer is not None:
            left = producer.flush(timeout_s)
            if left:
                raise BrokerError(
                    f"{left} re-sent records were not acknowledged; nothing committed"
                )
            if report.read:
                consumer.commit(asynchronous=False)
    finally:
        close_consumer(consumer)
    return report


def _drain(
    consumer: Consumer,
    topic: str,
    plan: _Plan,
    producer: Producer | None,
    report: RedriveReport,
    timeout_s: float,
) -> None:
    """Read every partition of ``topic`` to its end (or until ``timeout_s`` of silence)."""
    md = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if md is None or md.error is not None:
        raise BrokerError(f"dead-letter topic {topic}: {md.error if md else 'not found'}")
    pending = set(md.partitions)
    consumer.subscribe([topic])
    quiet_since = time.monotonic()
    while pending and time.monotonic() - quiet_since < timeout_s:
        for msg in consumer.consume(500, 0.5):
            quiet_since = time.monotonic()
            err = msg.error()
            if err is None:
                _resend(msg, plan, producer, report)
            elif err.code() == KafkaError._PARTITION_EOF:
                pending.discard(msg.partition())
            else:
                raise BrokerError(f"reading {topic}: {err}")
    if pending:
        log.warning("partitions %s of %s not read to their end", sorted(pending), topic)
