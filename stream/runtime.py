"""Wiring: build sources, sinks and the pipeline from settings and CLI specs.

Source/sink specs: ``kafka`` (the settings' topics), ``file:PATH`` (a JSONL file source) and
``dir:PATH`` (a JSONL sink writing ``<topic>.jsonl`` files).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from stream.errors import BundleError, ConfigError
from stream.images.source import ImageOptions
from stream.models.bundle import load_bundle
from stream.ops.cpu import threads_from_cgroup
from stream.ops.health import HealthServer
from stream.ops.prometheus import WorkerMetrics
from stream.ops.reload import BundleReloader
from stream.pipeline import Pipeline
from stream.settings import Settings
from stream.sinks import JsonlSink, KafkaSink, Sink
from stream.sources import JsonlSource, KafkaSource, Source
from stream.worker import Worker

__all__ = [
    "build_pipeline",
    "build_worker",
    "install_signal_handlers",
    "intra_op_threads",
    "make_sink",
    "make_source",
]

log = logging.getLogger(__name__)


def intra_op_threads(settings: Settings) -> int | None:
    """``CRISIS_THREADS``, else the container's CPU quota rounded up (:mod:`stream.ops.cpu`),
    else None: onnxruntime's own choice, one thread per core of the machine."""
    if settings.threads:
        return settings.threads
    threads = threads_from_cgroup()
    if threads is not None:
        log.info("onnxruntime intra-op threads: %d, from the cgroup CPU quota", threads)
    return threads


def build_pipeline(settings: Settings) -> Pipeline:
    bundle = load_bundle(
        settings.bundle,
        settings.precision,
        intra_op_threads(settings),
        settings.batch_max_events,
        settings.ort_spinning,
        settings.encoder_cache_size,
    )
    images = ImageOptions.from_settings(settings)
    pipeline = Pipeline(bundle, settings.rationale_top_k, settings.review_threshold, images)
    try:  # a bundle whose hashes verify may still not label (a head that does not fit)
        pipeline.canary()
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(
            f"the bundle at {settings.bundle} fails to label built-in texts: {exc}"
        ) from exc
    return pipeline


#: how often librdkafka rechecks a full prefetch queue (its default, 1 s, starved a consumer
#: draining a backlog faster than prefetch_events a second; the check is local, no request)
PREFETCH_RECHECK_MS = 100


def consumer_conf(settings: Settings) -> dict[str, object]:
    """The worker's consumer properties; ``CRISIS_KAFKA`` overrides the prefetch pair."""
    conf: dict[str, object] = {
        "queued.min.messages": settings.prefetch_events,
        "fetch.queue.backoff.ms": PREFETCH_RECHECK_MS,
        **settings.kafka_common(),
        "group.id": settings.group_id,
        "auto.offset.reset": settings.auto_offset_reset,
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": settings.heartbeat_interval_ms,
        "auto.commit.interval.ms": settings.commit_interval_ms,
    }
    if settings.group_instance_id:
        conf["group.instance.id"] = settings.group_instance_id
    return conf


def make_source(spec: str, settings: Settings, metrics: WorkerMetrics | None = None) -> Source:
    if spec == "kafka":
        conf = consumer_conf(settings)
        if settings.kafka_stats_interval_ms:  # also how a lost broker is noticed to be back
            conf["statistics.interval.ms"] = settings.kafka_stats_interval_ms
        stats_cb = metrics.on_kafka_stats if metrics is not None else None
        return KafkaSource(conf, [settings.input_topic], stats_cb=stats_cb)
    if spec.startswith("file:"):
        return JsonlSource(Path(spec[5:]))
    raise ConfigError(f"unknown source {spec!r}: use 'kafka' or 'file:PATH'")


def make_sink(spec: str, settings: Settings) -> Sink:
    if spec == "kafka":
        conf = settings.kafka_common()
        if settings.kafka_stats_interval_ms:
            conf.setdefault("statistics.interval.ms", settings.kafka_stats_interval_ms)
        return KafkaSink(conf)
    if spec.startswith("dir:"):
        return JsonlSink(Path(spec[4:]))
    raise ConfigError(f"unknown sink {spec!r}: use 'kafka' or 'dir:PATH'")


def early_stop_flag() -> threading.Event:
    """Catch SIGTERM/SIGINT from now until :func:`install_signal_handlers` takes over, so a
    stop requested during start-up is honoured (a clean exit) instead of killing the process."""
    flag = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s during start-up: will stop once started", signal.Signals(signum).name)
        flag.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return flag


def install_signal_handlers(worker: Worker) -> None:
    """SIGTERM/SIGINT: stop fetching, finish the in-flight batch, flush, commit, exit 0.
    SIGHUP: check the bundle directory for a new bundle now."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: draining", signal.Signals(signum).name)
        worker.request_stop()

    def reload(_signum: int, _frame: FrameType | None) -> None:
        if worker.reloader is not None:
            log.info("SIGHUP: checking for a new bundle")
            worker.reloader.trigger()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGHUP, reload)


def build_worker(
    settings: Settings, source_spec: str = "kafka", sink_spec: str = "kafka"
) -> tuple[Worker, HealthServer | None]:
    """A worker with metrics, hot reload and (when ``metrics_port`` is set) the HTTP endpoints."""
    metrics = WorkerMetrics()
    reloader = None
    if settings.reload_interval_s > 0:

        def load(path: Path) -> Pipeline:
            return build_pipeline(settings.model_copy(update={"bundle": path}))

        def count(result: str) -> None:
            metrics.reloads.labels(result=result).inc()

        reloader = BundleReloader(settings.bundle, load, settings.reload_interval_s, count)
    worker = Worker(
        settings,
        make_source(source_spec, settings, metrics),
        make_sink(sink_spec, settings),
        build_pipeline(settings),
        metrics=metrics,
        reloader=reloader,
    )
    if reloader is not None:
        reloader.start()
    server = None
    if settings.metrics_port is not None:
        server = HealthServer(
            metrics,
            worker.readiness,
            lambda: worker.heartbeat,
            settings.metrics_port,
            host=settings.metrics_host,
            request_timeout_s=settings.metrics_request_timeout_s,
        ).start()
        log.info("metrics and health on %s:%d", server.host, server.port)
    return worker, server
