"""``crisis-stream review``: the analysts' review page.

Kafka connection and security come from the worker's settings (``CRISIS_BOOTSTRAP_SERVERS``,
``CRISIS_SECURITY_PROTOCOL``, ``CRISIS_SASL_*``, ``CRISIS_SSL_*``, ``CRISIS_CLIENT_PROPERTIES``,
``CRISIS_KAFKA``) and so do the topics, so one environment configures the worker and the page.
"""

from __future__ import annotations

import click

from stream.cli.env import settings as load_settings
from stream.errors import ConfigError
from stream.ops.logs import configure
from stream.review import Review, ReviewConfig, run_review

__all__ = ["review"]


@click.command("review")
@click.option("--bootstrap", help="Kafka bootstrap servers (default: CRISIS_BOOTSTRAP_SERVERS)")
@click.option("--topic", help="review topic to read (default: CRISIS_REVIEW_TOPIC)")
@click.option("--feedback-topic", help="topic answers go to (default: CRISIS_FEEDBACK_TOPIC)")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="port of the page (default: CRISIS_REVIEW_PORT, 8091)",
)
@click.option(
    "--host",
    help="address the page binds (default: CRISIS_REVIEW_HOST, 127.0.0.1: loopback unless "
    "exposed on purpose)",
)
@click.option("--log-level", help="default: CRISIS_LOG_LEVEL")
def review(
    bootstrap: str | None,
    topic: str | None,
    feedback_topic: str | None,
    port: int | None,
    host: str | None,
    log_level: str | None,
) -> None:
    """Serve the analysts' review page: low-confidence events one at a time, answers to the
    feedback topic."""
    settings = load_settings(
        bootstrap_servers=bootstrap,
        review_topic=topic,
        feedback_topic=feedback_topic,
        review_port=port,
        review_host=host,
        log_level=log_level,
    )
    if not settings.review_topic:
        raise ConfigError("no review topic: set CRISIS_REVIEW_TOPIC or --topic")
    configure(settings.log_level)
    config = ReviewConfig(
        kafka=settings.kafka_common(),
        review_topic=settings.review_topic,
        feedback_topic=settings.feedback_topic,
        host=settings.review_host,
        port=settings.review_port,
        public_hosts=tuple(settings.review_public_hosts),
    )
    run_review(Review(config))
