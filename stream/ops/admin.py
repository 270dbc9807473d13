"""Topic administration: create the worker's topics explicitly (never rely on auto-create)."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from stream.errors import BrokerError

__all__ = ["ensure_topics"]

log = logging.getLogger(__name__)


def ensure_topics(
    conf: dict[str, Any], topics: dict[str, int], replication: int = 1, timeout_s: float = 30.0
) -> list[str]:
    """Create missing topics (name -> partitions); return the ones created."""
    admin = AdminClient({**conf, "log_level": 3})
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        where = conf.get("bootstrap.servers")
        raise BrokerError(f"cannot reach Kafka at {where}: {exc.args[0].str()}") from exc
    new = [NewTopic(t, n, replication) for t, n in topics.items() if t not in existing]
    created: list[str] = []
    if not new:
        return created
    for name, fut in admin.create_topics(new, operation_timeout=timeout_s).items():
        try:
            fut.result(timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    log.info("created topics %s", created)
    return created
