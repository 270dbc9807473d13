"""``crisis-stream aggregate``: run the faust aggregator (options fall back to environment).

Kafka connection and security come from the worker's settings (``CRISIS_BOOTSTRAP_SERVERS``,
``CRISIS_SECURITY_PROTOCOL``, ``CRISIS_SASL_*``, ``CRISIS_SSL_*``, ``CRISIS_CLIENT_PROPERTIES``,
``CRISIS_KAFKA``), so one environment configures both; the aggregator's own options are
``CRISIS_AGG_*``.
"""

from __future__ import annotations

import click

from stream.aggregate.app import run_aggregator
from stream.aggregate.config import DEFAULT_WEB_PORT
from stream.cli.env import settings as load_settings

__all__ = ["aggregate"]


@click.command("aggregate")
@click.option("--bootstrap", help="Kafka bootstrap servers (default: CRISIS_BOOTSTRAP_SERVERS)")
@click.option(
    "--topic", help="labelled topic to aggregate (default: CRISIS_OUTPUT_TOPIC, the worker's)"
)
@click.option(
    "--app-id",
    envvar="CRISIS_AGG_APP_ID",
    default="crisis-aggregate",
    show_default=True,
    help="faust app id: consumer group and changelog topic prefix",
)
@click.option(
    "--window",
    "window_s",
    type=click.IntRange(min=1),
    envvar="CRISIS_AGG_WINDOW_S",
    default=300,
    show_default=True,
    help="tumbling window size, seconds",
)
@click.option(
    "--expires",
    "expires_s",
    type=click.IntRange(min=1),
    envvar="CRISIS_AGG_EXPIRES_S",
    default=86_400,
    show_default=True,
    help="keep windows this long (wall clock), seconds",
)
@click.option(
    "--max-skew",
    "max_skew_s",
    type=click.IntRange(min=0),
    envvar="CRISIS_AGG_MAX_SKEW_S",
    default=86_400,
    show_default=True,
    help="event times further than this from the record timestamp use the record "
    "timestamp (a post dated 9999-12-31 cannot open a window), seconds",
)
@click.option(
    "--web-port",
    type=click.IntRange(0, 65535),
    envvar="CRISIS_AGG_WEB_PORT",
    default=DEFAULT_WEB_PORT,
    show_default=True,
)
@click.option(
    "--web-bind",
    envvar="CRISIS_AGG_WEB_BIND",
    default="127.0.0.1",
    show_default=True,
    help="address the web views bind (CRISIS_AGG_WEB_BIND): loopback unless exposed on "
    "purpose; the container image sets 0.0.0.0",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    envvar="CRISIS_AGG_PARTITIONS",
    default=None,
    help="partitions of the aggregator's own topics (default: as many as the labelled topic)",
)
@click.option(
    "--replication",
    type=click.IntRange(min=1),
    envvar="CRISIS_AGG_REPLICATION",
    default=1,
    show_default=True,
    help="replication factor of the changelog topics",
)
@click.option("--top-words", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--group-instance-id",
    envvar="CRISIS_AGG_GROUP_INSTANCE_ID",
    default=None,
    help="static group membership (a restart reclaims its partitions at once)",
)
@click.option("--log-level", help="default: CRISIS_LOG_LEVEL")
def aggregate(
    bootstrap: str | None,
    topic: str | None,
    app_id: str,
    window_s: int,
    expires_s: int,
    max_skew_s: int,
    web_port: int,
    web_bind: str,
    partitions: int | None,
    replication: int,
    top_words: int,
    group_instance_id: str | None,
    log_level: str | None,
) -> None:
    """Count labelled events per time window and serve them on HTTP (JSON + an HTML page)."""
    settings = load_settings(bootstrap_servers=bootstrap, log_level=log_level)
    run_aggregator(
        settings.kafka_common(),
        web_port,
        topic=topic or settings.output_topic,
        app_id=app_id,
        window_s=window_s,
        expires_s=expires_s,
        max_skew_s=max_skew_s,
        web_bind=web_bind,
        partitions=partitions,
        replication=replication,
        top_words=top_words,
        group_instance_id=group_instance_id,
        log_level=settings.log_level,
    )
