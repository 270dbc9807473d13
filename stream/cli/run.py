"""``crisis-stream run``: the worker."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from stream.cli.env import settings as load_settings
from stream.ops.admin import ensure_topics
from stream.ops.logs import configure
from stream.runtime import build_worker, early_stop_flag, install_signal_handlers

__all__ = ["run"]


@click.command("run")
@click.option("--bootstrap", help="Kafka bootstrap servers (CRISIS_BOOTSTRAP_SERVERS)")
@click.option("--group", help="consumer group id (CRISIS_GROUP_ID)")
@click.option("--input-topic", help="input topic (CRISIS_INPUT_TOPIC)")
@click.option("--bundle", type=click.Path(path_type=Path), help="model bundle directory")
@click.option("--precision", type=click.Choice(["int8", "fp32"]), help="encoder precision")
@click.option(
    "--source",
    "source_spec",
    default="kafka",
    show_default=True,
    help="'kafka' or 'file:PATH' (JSONL)",
)
@click.option(
    "--sink",
    "sink_spec",
    default="kafka",
    show_default=True,
    help="'kafka' or 'dir:PATH' (one JSONL file per topic)",
)
@click.option(
    "--create-topics/--no-create-topics",
    default=False,
    help="create the worker's topics first (single-node/dev setups)",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="partitions of each topic --create-topics creates (input and outputs alike)",
)
@click.option(
    "--replication-factor",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="replication factor of the topics --create-topics creates (3 on a production cluster)",
)
def run(
    bootstrap: str | None,
    group: str | None,
    input_topic: str | None,
    bundle: Path | None,
    precision: str | None,
    source_spec: str,
    sink_spec: str,
    create_topics: bool,
    partitions: int,
    replication_factor: int,
) -> None:
    """Run the worker until SIGTERM (or the end of a file source)."""
    # A SIGTERM while the bundle loads (seconds) must still end in a clean exit 0: an
    # orchestrator scaling down a starting replica is normal, not a crash.
    stop_early = early_stop_flag()

    settings = load_settings(
        bootstrap_servers=bootstrap,
        group_id=group,
        input_topic=input_topic,
        bundle=bundle,
        precision=precision,
    )
    configure(settings.log_level)
    if create_topics:
        ensure_topics(
            settings.kafka_common(),
            dict.fromkeys(
                [settings.input_topic, *settings.output_topics(), settings.feedback_topic],
                partitions,
            ),
            replication_factor,
        )
    logging.getLogger("stream").info("starting", extra={"settings": settings.redacted()})
    worker, server = build_worker(settings, source_spec, sink_spec)
    if create_topics and settings.route_labels:  # their names come from the bundle's labels
        heads = worker.pipeline.bundle.labels
        ensure_topics(
            settings.kafka_common(),
            dict.fromkeys(settings.route_topics(heads), partitions),
            replication_factor,
        )
    install_signal_handlers(worker)
    if stop_early.is_set():
        worker.request_stop()
    try:
        stats = worker.run()
    finally:
        if worker.reloader is not None:
            worker.reloader.stop()
        if server is not None:
            server.stop()
    logging.getLogger("stream").info(
        "stopped", extra={"stats": stats.__dict__ | {"batch_sizes": stats.batches}}
    )
