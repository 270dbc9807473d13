"""The one-command demo: a local broker, sample crisis events, the worker, readable output."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import click
import orjson
from confluent_kafka import Consumer, KafkaError, Producer

from stream.errors import BrokerError
from stream.local.broker import BrokerKind, LocalBroker
from stream.local.console import render_event
from stream.ops.admin import ensure_topics
from stream.runtime import build_pipeline, make_sink, make_source
from stream.schemas import DeadLetter, LabeledEvent
from stream.settings import Settings
from stream.sources.kafka import close_consumer
from stream.worker import Worker

__all__ = ["BAD_RECORDS", "image_events", "read_topic", "run_demo", "sample_events"]

#: records that must end in the dead-letter topic, shown in the demo
BAD_RECORDS = [b"this is not json", b'{"id": "bad-1", "text": ""}', b'{"text": "no id here"}']


def sample_events() -> list[bytes]:
    data = resources.files("stream").joinpath("samples/events.jsonl").read_bytes()
    return [line for line in data.splitlines() if line.strip()]


def _truncated_jpeg() -> str:
    """A real JPEG cut in half, base64: shows that a broken image never drops its event."""
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (90, 120, 160)).save(buf, "JPEG")
    return base64.b64encode(buf.getvalue()[: buf.tell() // 2]).decode("ascii")


def image_events(data_dir: Path | None) -> tuple[list[bytes], Path | None]:
    """Mixed text/image events: real CrisisMMD tweets with their images (read in place under
    ``data_dir/images``, never copied) when the dataset is present, one image-only event, and
    one event whose image is broken. Returns the records and the image root to allow."""
    out: list[dict[str, object]] = [
        {
            "id": "sample-img-broken",
            "text": "Photos of the flooded main road in Kelani, water up to the shop roofs",
            "image": {"b64": _truncated_jpeg()},
            "event": "srilanka_floods",
        }
    ]
    if data_dir is None:
        return [orjson.dumps(e) for e in out], None
    from stream.data.image_rows import read_image_rows

    rows = [r for r in read_image_rows(data_dir) if r.task == "humanitarian" and r.split == "test"]
    wanted = ["infrastructure_and_utility_damage", "rescue_volunteering_or_donation_effort"]
    picked = [
        next(r for r in rows if r.label == lab)
        for lab in wanted
        if any(r.label == lab for r in rows)
    ]
    root = data_dir / "images"
    for r in picked:
        rel = str(r.image.relative_to(root))
        out.append(
            {
                "id": f"sample-img-{r.tweet_id}",
                "text": r.text,
                "image": {"path": rel},
                "event": "srilanka_floods",
                "source": "twitter",
            }
        )
    if picked:
        rel = str(picked[0].image.relative_to(root))
        out.append(
            {
                "id": "sample-img-only",
                "text": "",
                "image": {"path": rel},
                "event": "srilanka_floods",
            }
        )
    return [orjson.dumps(e) for e in out], root


def _conf(kafka: str | Mapping[str, Any]) -> dict[str, Any]:
    """librdkafka properties from a bootstrap string or a whole conf (``kafka_common()``)."""
    return {"bootstrap.servers": kafka} if isinstance(kafka, str) else dict(kafka)


def seed(
    kafka: str | Mapping[str, Any], topic: str, values: list[bytes], timeout_s: float = 30.0
) -> None:
    """Produce ``values`` keyed by their ``id``; :class:`BrokerError` unless every one is
    acknowledged within ``timeout_s``."""
    conf = _conf(kafka)
    failed: list[str] = []
    broker_errors: list[str] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failed.append(err.str())

    p = Producer(
        {
            **conf,
            "enable.idempotence": True,
            "message.timeout.ms": int(timeout_s * 1000),
            "error_cb": lambda err: broker_errors.append(err.str()),  # named in the error
            "log_level": 0,
        }
    )

    for v in values:
        key = None
        try:
            doc = orjson.loads(v)
            key = str(doc.get("id", "")).encode() if isinstance(doc, dict) else None
        except orjson.JSONDecodeError:
            pass
        p.produce(topic, value=v, key=key, on_delivery=delivered)
    lost = p.flush(timeout_s + 5) + len(failed)
    if lost:
        why = f": {(broker_errors or failed or ['still queued'])[-1]}"
        raise BrokerError(
            f"{lost} of {len(values)} records not delivered to {topic} at "
            f"{conf.get('bootstrap.servers')} within {timeout_s:g}s{why}"
        )


def read_topic(
    kafka: str | Mapping[str, Any], topic: str, n: int, timeout_s: float = 30.0
) -> list[bytes]:
    """Read ``n`` records from the start of ``topic`` with a throwaway group."""
    c = Consumer(
        {
            **_conf(kafka),
            "group.id": f"reader-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    c.subscribe([topic])
    out: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < n and time.monotonic() < deadline:
            out += [m.value() or b"" for m in c.consume(500, 0.5) if m.error() is None]
    finally:
        close_consumer(c)
    return out


def run_demo(bundle: Path, broker_kind: BrokerKind = "noida") -> int:
    """Run the whole demo; returns the number of events that came out labelled."""
    from stream.data.crisismmd import find_dataset

    pictures, image_root = image_events(find_dataset())
    events = sample_events() + pictures
    click.secho(f"starting a local {broker_kind} Kafka-protocol broker…", fg="cyan")
    with LocalBroker(broker_kind) as broker:
        settings = Settings(
            bootstrap_servers=broker.bootstrap,
            bundle=bundle,
            group_id="crisis-demo",
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            image_root=image_root,
        )
        ensure_topics(
            settings.kafka_common(),
            {
                settings.input_topic: 3,
                settings.output_topic: 3,
                settings.review_topic or "": 1,
                settings.dlq_topic: 1,
            },
        )
        kafka = settings.kafka_common()
        seed(kafka, settings.input_topic, events + BAD_RECORDS)
        total = len(events) + len(BAD_RECORDS)
        click.secho(
            f"seeded {total} records into {settings.input_topic} at {broker.bootstrap} "
            f"({len(BAD_RECORDS)} of them malformed on purpose)",
            fg="cyan",
        )
        pipeline = build_pipeline(settings)
        worker = Worker(
            settings, make_source("kafka", settings), make_sink("kafka", settings), pipeline
        )
        t0 = time.perf_counter()
        stats = worker.run(stop_after=total, idle_timeout_s=60)
        elapsed = time.perf_counter() - t0
        labeled = [
            LabeledEvent.model_validate_json(v)
            for v in read_topic(kafka, settings.output_topic, stats.labeled)
        ]
        dlq = [
            DeadLetter.model_validate_json(v)
            for v in read_topic(kafka, settings.dlq_topic, stats.dead_letters)
        ]
    labeled.sort(key=lambda e: e.id)
    click.echo()
    for ev in labeled:
        click.echo(render_event(ev))
    click.echo()
    for dl in dlq:
        click.secho(
            f"DLQ {dl.origin.topic}/{dl.origin.partition}@{dl.origin.offset} "
            f"{dl.error.kind}: {dl.error.message}",
            fg="red",
        )
    if image_root is None:
        click.secho("(no ../shared CrisisMMD images here: only the broken-image event)", dim=True)
    counts = Counter(ev.labels["informative"].label for ev in labeled if "informative" in ev.labels)
    click.echo()
    click.secho("summary", bold=True)
    click.echo(
        f"  model      {pipeline.bundle.manifest.name} {pipeline.bundle.manifest.version} "
        f"({pipeline.bundle.precision})"
    )
    click.echo(f"  in         {stats.received} records")
    click.echo(f"  labelled   {len(labeled)}  {dict(counts)}")
    click.echo(f"  review     {stats.review} (low confidence)")
    click.echo(f"  dead       {len(dlq)}")
    click.echo(f"  batches    {stats.batches}  sizes {list(stats.batch_sizes)}")
    click.echo(f"  time       {elapsed:.2f}s")
    return len(labeled)
