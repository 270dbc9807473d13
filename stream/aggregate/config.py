"""The aggregator's settings and the one broker fact it needs before faust starts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from stream.errors import BrokerError, ConfigError
from stream.ops.admin import ensure_topics

__all__ = ["DEFAULT_WEB_PORT", "AggregatorConfig", "resolve_partitions"]

log = logging.getLogger(__name__)

DEFAULT_WEB_PORT = 6066


@dataclass(frozen=True)
class AggregatorConfig:
    """Everything the aggregator needs; the ``aggregate`` command fills it from options/env.

    ``kafka`` is the worker's librdkafka configuration
    (:meth:`~stream.settings.Settings.kafka_common`): the admin client uses it as it is, faust
    gets its broker URLs and credentials from it (:mod:`stream.aggregate.security`).

    ``partitions`` sizes the aggregator's own topics (the by-event repartition topic and the
    tables' changelogs, which faust requires to match); by default it follows the labelled
    topic, so the aggregator can use as many consumers as the worker's output has partitions.
    """

    kafka: Mapping[str, Any] = field(
        default_factory=lambda: {"bootstrap.servers": "127.0.0.1:9092"}
    )
    topic: str = "crisis.events.labeled"
    app_id: str = "crisis-aggregate"
    window_s: int = 300
    expires_s: int = 86_400
    max_skew_s: int = 86_400  # event times further from the record timestamp are not trusted
    web_port: int = DEFAULT_WEB_PORT
    web_bind: str = "127.0.0.1"  # the container image sets 0.0.0.0 (docs/decisions/0015)
    partitions: int | None = None
    replication: int = 1
    top_words: int = 10
    page_windows: int = 12
    group_instance_id: str | None = None
    data_dir: Path | None = None
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.window_s < 1 or self.expires_s < self.window_s:
            raise ConfigError("need window_s >= 1 and expires_s >= window_s")
        if self.max_skew_s < 0:
            raise ConfigError("max_skew_s must be >= 0")
        if self.partitions is not None and self.partitions < 1:
            raise ConfigError("partitions must be >= 1")

    @property
    def bootstrap(self) -> str:
        return str(self.kafka.get("bootstrap.servers", ""))


def resolve_partitions(config: AggregatorConfig, timeout_s: float = 30.0) -> int:
    """Partitions for the aggregator's own topics: ``config.partitions``, else the labelled
    topic's count. A missing labelled topic is created (so a fresh dev setup starts in any
    order) with that count, or 1."""
    conf = dict(config.kafka)
    try:
        md = AdminClient({**conf, "log_level": 0}).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach Kafka at {config.bootstrap}: {exc}") from exc
    found = md.topics.get(config.topic)
    if found is None or found.error is not None:
        n = config.partitions or 1
        ensure_topics(conf, {config.topic: n}, replication=config.replication)
        log.info("created topic %s with %d partition(s)", config.topic, n)
        return n
    return config.partitions or len(found.partitions)
