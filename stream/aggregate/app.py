"""The faust-streaming aggregator: windowed counts of labelled events for analysts.

Two agents. ``route`` reads the labelled topic, drops records that are not valid
``LabeledEvent`` JSON (counted in a metric), and forwards the rest, keyed by event name, to the
internal ``<app_id>-by-event`` topic. ``count`` reads that topic and updates three tumbling-window
tables in event time (``created_at``; see :func:`stream.aggregate.records.event_time`; an
event time more than ``max_skew_s`` from the record timestamp falls back to the record
timestamp, counted in ``crisis_aggregate_event_time_fallbacks``):

* ``counts``: events per (event name, task, label) per window;
* ``words``: per (event name, task, label, word), in how many events the word was a positive
  rationale;
* ``seen``: the event ids already counted, so a redelivered event counts once.

Why the repartition: faust keeps one changelog partition per input partition and rebuilds a
table from it on restart, so a table key must always be updated from the same partition; every
key here starts with the event name. Why ``seen``: delivery is at-least-once end to end (the
worker republishes after a crash; faust-streaming re-reads after a restart), and the topics are
keyed by event id precisely so that consumers de-duplicate.

Table updates happen during ``async for`` iteration (faust does not allow them inside
``stream.take()`` batches), so faust acknowledges a record's offset only after its updates, and
commits offsets after flushing the changelogs and the forwarded records.

Known limits. One instance serves complete views (with several, faust splits the partitions and
each serves its share; the labelled volume does not need more). faust expires windows on the
*wall clock*: windows older than ``expires_s`` before now are dropped at the next cleanup, so
raise ``expires_s`` to replay old data. faust-streaming 0.15 can skip a record that arrives
while it is recovering its tables at startup (upstream issues 596 and 606, offsets with gaps):
restart the aggregator when the labelled topic is quiet, or accept that a restart under load
may miss a few events.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import faust
from faust import web
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.tables.wrappers import WindowWrapper
from faust.types import EventT, StreamT, TopicT
from faust.types.tables import WindowWrapperT
from prometheus_client import CollectorRegistry, Counter, Gauge

from stream.aggregate.config import DEFAULT_WEB_PORT, AggregatorConfig, resolve_partitions
from stream.aggregate.page import render_page
from stream.aggregate.records import (
    LabeledEventCodec,
    Rejected,
    count_keys,
    encode_key,
    event_name,
    window_time,
    word_keys,
)
from stream.aggregate.security import broker_credentials, broker_urls
from stream.aggregate.views import counts_payload, words_payload
from stream.schemas import LabeledEvent

__all__ = ["build_app", "run_aggregator"]

log = logging.getLogger(__name__)


def _query_int(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw)  # ValueError -> 400 below
    if value < 0:
        raise ValueError(f"{name} must be >= 0")
    return value


@dataclass(frozen=True)
class _Metrics:
    rejected: Counter
    counted: Counter
    duplicates: Counter
    fallbacks: Counter
    last_event: Gauge


@dataclass(frozen=True)
class _Tables:
    counts: WindowWrapperT
    words: WindowWrapperT
    seen: WindowWrapperT


@dataclass
class _Progress:
    """What the count agent has seen since this process started."""

    newest: float = 0.0
    fallbacks: int = 0


def _new_app(config: AggregatorConfig, partitions: int, data_dir: Path) -> faust.App:
    return faust.App(
        config.app_id,
        broker=broker_urls(config.kafka),
        broker_credentials=broker_credentials(config.kafka),
        store="memory://",
        datadir=str(data_dir),
        topic_partitions=partitions,
        topic_replication_factor=config.replication,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=config.group_instance_id,
        web_port=config.web_port,
        web_bind=config.web_bind,
        web_stats_enabled=False,
        web_graph_enabled=False,
    )


def _metrics(app: faust.App) -> _Metrics:
    """The app's Prometheus sensors and the aggregator's own metrics, in one registry."""
    registry = CollectorRegistry()
    setup_prometheus_sensors(app, registry=registry, name_prefix="crisis_aggregate")
    return _Metrics(
        rejected=Counter(
            "crisis_aggregate_rejected",
            "labelled records that failed validation",
            ["kind"],
            registry=registry,
        ),
        counted=Counter("crisis_aggregate_events", "labelled events counted", registry=registry),
        duplicates=Counter(
            "crisis_aggregate_duplicates",
            "redelivered events skipped (same id)",
            registry=registry,
        ),
        fallbacks=Counter(
            "crisis_aggregate_event_time_fallbacks",
            "events whose created_at was further than max_skew_s from the record timestamp "
            "(counted at the record timestamp instead)",
            registry=registry,
        ),
        last_event=Gauge(
            "crisis_aggregate_last_event_time_seconds",
            "event time of the newest counted event",
            registry=registry,
        ),
    )


def _event_clock(max_skew_s: float) -> Callable[[EventT[Any] | None], float]:
    """The windows' clock: a labelled event's time (see ``window_time``), else the record's."""

    def timestamp(event: EventT[Any] | None) -> float:
        if event is None:
            raise RuntimeError("table access outside stream iteration")
        value = event.value
        if isinstance(value, LabeledEvent):
            return window_time(value, event.message.timestamp, max_skew_s)[0]
        return float(event.message.timestamp)

    return timestamp


def _tables(
    app: faust.App,
    config: AggregatorConfig,
    partitions: int,
    timestamp: Callable[[EventT[Any] | None], float],
) -> _Tables:
    window = timedelta(seconds=config.window_s)
    expires = timedelta(seconds=config.expires_s)

    def windowed(name: str, doc: str) -> WindowWrapperT:
        table = app.Table(name, default=int, partitions=partitions, help=doc)
        return cast(WindowWrapper, table.tumbling(window, expires=expires)).relative_to(timestamp)

    return _Tables(
        counts=windowed("counts", "events per (event, task, label) per window"),
        words=windowed("words", "events per (event, task, label, rationale word) per window"),
        seen=windowed("seen", "event ids counted per window (de-duplication)"),
    )


def _add_router(app: faust.App, source: TopicT, by_event: TopicT, metrics: _Metrics) -> None:
    """The ``route`` agent: drops invalid records, forwards the rest keyed by event name."""

    @app.agent(source, name="route")
    async def route(stream: StreamT[LabeledEvent | Rejected]) -> None:
        async for event in stream.events():
            value, msg = event.value, event.message
            if isinstance(value, Rejected):
                log.warning(
                    "skipping invalid labelled record %s@%d: %s",
                    msg.tp.partition,
                    msg.offset,
                    value.detail,
                )
                metrics.rejected.labels(kind=value.kind).inc()
                continue
            # forward() re-sends the original bytes; faust publishes it before it commits
            # this record's offset (at-least-once).
            await event.forward(by_event, key=event_name(value).encode(), timestamp=msg.timestamp)


def _add_counter(
    app: faust.App,
    by_event: TopicT,
    config: AggregatorConfig,
    tables: _Tables,
    metrics: _Metrics,
    progress: _Progress,
    timestamp: Callable[[EventT[Any] | None], float],
) -> None:
    """The ``count`` agent: updates the tables once per event id."""
    counts, words, seen = tables.counts, tables.words, tables.seen

    @app.agent(by_event, name="count")
    async def count(stream: StreamT[LabeledEvent]) -> None:
        async for value in stream:
            # Updates happen during iteration (never in stream.take() batches), so faust ties
            # them to this record's offset.
            seen_key = encode_key(event_name(value), value.id)
            if seen_key in seen:
                # A redelivery: the worker republished it (at-least-once) or faust re-read it
                # after a restart. Each event id counts once per window.
                metrics.duplicates.inc()
                continue
            seen[seen_key] = 1
            for key in count_keys(value):
                counts[key] += 1
            for key in word_keys(value):
                words[key] += 1
            metrics.counted.inc()
            current = stream.current_event
            record_ts = current.message.timestamp if current is not None else None
            if window_time(value, record_ts, config.max_skew_s)[1]:
                metrics.fallbacks.inc()
                progress.fallbacks += 1
            ts = timestamp(stream.current_event)
            if ts > progress.newest:
                progress.newest = ts
                metrics.last_event.set(ts)


def _add_views(
    app: faust.App, config: AggregatorConfig, tables: _Tables, progress: _Progress
) -> None:
    """The web views: ``/counts/``, ``/words/``, the analysts' page and ``/healthz``."""

    def counts_now(limit: int) -> dict[str, Any]:
        payload = counts_payload(
            tables.counts.table.data.items(), config.window_s, config.expires_s, time.time(), limit
        )
        payload["max_skew_s"] = config.max_skew_s
        payload["event_time_fallbacks"] = progress.fallbacks  # since this process started
        return payload

    def words_now(windows: int | None, event: str | None = None) -> dict[str, Any]:
        return words_payload(tables.words.table.data.items(), windows, config.top_words, event)

    @app.page("/counts/")
    async def counts_view(self: web.View, request: web.Request) -> web.Response:
        """Counts per window, newest first (``?limit=N`` windows, default 48)."""
        try:
            limit = _query_int(request, "limit", 48)
        except ValueError as exc:
            return self.error(400, str(exc))
        return self.json(counts_now(limit or 0))

    @app.page("/words/")
    async def words_view(self: web.View, request: web.Request) -> web.Response:
        """Top rationale words per label over the newest ``?windows=N`` windows (default all),
        for all events or one (``?event=NAME``)."""
        try:
            n = _query_int(request, "windows", None)
        except ValueError as exc:
            return self.error(400, str(exc))
        return self.json(words_now(n, request.query.get("event") or None))

    @app.page("/")
    async def index_view(self: web.View, request: web.Request) -> web.Response:
        """The analysts' page (server-rendered HTML, no scripts)."""
        page = render_page(counts_now(config.page_windows), words_now(None), "Crisis events")
        return self.html(page)

    @app.page("/healthz")
    async def health_view(self: web.View, request: web.Request) -> web.Response:
        return self.text("ok\n")


def build_app(config: AggregatorConfig, partitions: int, data_dir: Path) -> faust.App:
    """The faust app: source topic, two windowed tables, one agent, the web views."""
    app = _new_app(config, partitions, data_dir)
    metrics = _metrics(app)
    timestamp = _event_clock(config.max_skew_s)
    tables = _tables(app, config, partitions, timestamp)
    codec = LabeledEventCodec()
    progress = _Progress()
    source = app.topic(config.topic, value_serializer=codec)
    # Every table key starts with the event name, so re-keying by event name makes each key
    # updated from exactly one partition, which faust's per-partition changelogs (and their
    # recovery) require. Done by hand, not with group_by(), so bad records stop here.
    by_event = app.topic(
        f"{config.app_id}-by-event",
        internal=True,
        partitions=partitions,
        value_serializer=codec,
        key_serializer="raw",
    )
    _add_router(app, source, by_event, metrics)
    _add_counter(app, by_event, config, tables, metrics, progress, timestamp)
    _add_views(app, config, tables, progress)
    return app


def run_aggregator(
    kafka: Mapping[str, Any], web_port: int = DEFAULT_WEB_PORT, **options: Any
) -> None:
    """Run the aggregator in the foreground until SIGTERM/SIGINT (then exit via SystemExit).

    ``kafka`` is the librdkafka configuration (``Settings.kafka_common()``); ``options`` are
    :class:`AggregatorConfig` fields (``topic``, ``window_s``, ...).
    """
    config = AggregatorConfig(kafka=kafka, web_port=web_port, **options)
    partitions = resolve_partitions(config)
    own_dir = config.data_dir is None
    data_dir = config.data_dir or Path(tempfile.mkdtemp(prefix="crisis-aggregate-"))
    app = build_app(config, partitions, data_dir)
    log.info(
        "aggregating %s (%d partitions) in %ds windows; web on %s:%d",
        config.topic,
        partitions,
        config.window_s,
        config.web_bind,
        config.web_port,
    )
    worker = faust.Worker(app, loglevel=config.log_level, quiet=True)
    worker.spinner = None  # no terminal escape codes in container logs
    try:
        worker.execute_from_commandline()
    finally:
        if own_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
