"""Gold-labelled input events for backtests: CrisisMMD splits or JSONL files of InputEvents.

CrisisMMD TSVs carry no tweet time, so ``created_at`` is spread deterministically (a fixed base
plus one second per row, in file order): loading a split twice gives identical events. The Kafka
record timestamp stays the time of loading: a 2017 record timestamp would be older than any
topic's retention and the broker would delete the records straight away (noida-db does).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from pydantic import ValidationError

from stream.errors import BrokerError, ConfigError
from stream.ops.admin import ensure_topics
from stream.schemas import InputEvent

__all__ = [
    "BASE_TIME",
    "corpus_events",
    "crisismmd_events",
    "produce_events",
    "read_events",
    "write_jsonl",
]

#: created_at of the first row of a loaded split (CrisisMMD's events are from 2017)
BASE_TIME = datetime(2017, 9, 1, tzinfo=UTC)


def crisismmd_events(
    split: Path,
    task: str,
    base_time: datetime = BASE_TIME,
    spacing_s: float = 1.0,
    limit: int | None = None,
) -> list[InputEvent]:
    """One InputEvent per tweet of a CrisisMMD split TSV, with ``gold={task: label}``."""
    from stream.data.crisismmd import read_rows

    if not split.is_file():
        raise ConfigError(f"CrisisMMD split not found: {split}")
    rows = read_rows(split)[:limit]
    return [
        InputEvent(
            id=row.tweet_id,
            text=row.text,
            lang="en",
            created_at=base_time + timedelta(seconds=i * spacing_s),
            source="twitter",
            event=row.event,
            meta={"dataset": "crisismmd", "split": split.name},
            gold={task: row.label},
        )
        for i, row in enumerate(rows)
    ]


def read_events(path: Path, task: str, limit: int | None = None) -> list[InputEvent]:
    """Events from a CrisisMMD ``.tsv`` (gold = its label for ``task``) or a JSONL file of
    InputEvents (gold as written)."""
    if path.suffix.lower() == ".tsv":
        return crisismmd_events(path, task, limit=limit)
    events: list[InputEvent] = []
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                events.append(InputEvent.model_validate(orjson.loads(line)))
            except (orjson.JSONDecodeError, ValidationError) as exc:
                raise ConfigError(f"{path}:{n}: not an InputEvent: {exc}") from exc
            if limit is not None and len(events) >= limit:
                break
    return events


def write_jsonl(events: Sequence[InputEvent], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for ev in events:
            fh.write(orjson.dumps(ev.model_dump(mode="json", exclude_none=True)) + b"\n")


def produce_events(
    conf: dict[str, Any], topic: str, events: Sequence[InputEvent], partitions: int = 3
) -> None:
    """Produce events keyed by id (the topic is created with ``partitions`` when missing)."""
    ensure_topics(conf, {topic: partitions})
    producer = Producer({**conf, "enable.idempotence": True, "linger.ms": 20, "log_level": 3})
    for ev in events:
        value = orjson.dumps(ev.model_dump(mode="json", exclude_none=True))
        while True:
            try:
                producer.produce(topic, value=value, key=ev.id.encode())
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(60)
    if left:
        raise BrokerError(f"{left} events could not be delivered to {topic}")


def corpus_events(
    root: Path, sources: Sequence[str], base_time: datetime = BASE_TIME, limit: int | None = None
) -> list[InputEvent]:
    """One InputEvent per de-duplicated message of ``sources`` under the datasets ``root``
    (:mod:`stream.data.corpus`), with every label it has as ``gold`` and its event; ``lang`` is
    left unset (the pipeline detects it), ids are ``<source>:<id>``."""
    from stream.data.corpus import load_corpus

    try:
        corpus = load_corpus(root, sources)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from exc
    return [
        InputEvent(
            id=m.uid,
            text=m.text,
            created_at=base_time + timedelta(seconds=i),
            source="twitter" if m.source != "figure8" else "figure8",
            event=m.event,
            meta={"dataset": m.source},
            gold=dict(m.labels),
        )
        for i, m in enumerate(corpus.messages[:limit])
    ]
