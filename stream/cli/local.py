"""``demo``, ``broker`` and ``produce``: local tooling around a broker on this machine."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from stream.cli.env import settings as load_settings
from stream.local.broker import LocalBroker
from stream.local.demo import run_demo, seed

__all__ = ["broker", "demo", "produce"]


@click.command("demo")
@click.option("--bundle", type=click.Path(path_type=Path), default=None)
@click.option(
    "--broker",
    "broker_kind",
    type=click.Choice(["noida", "tansu"]),
    default="noida",
    show_default=True,
)
def demo(bundle: Path | None, broker_kind: str) -> None:
    """Start a local broker, seed sample crisis events, label them, print the results."""
    logging.basicConfig(level=logging.WARNING)
    run_demo(bundle or load_settings().bundle, broker_kind)  # type: ignore[arg-type]


@click.command("broker")
@click.option("--kind", type=click.Choice(["noida", "tansu"]), default="noida", show_default=True)
@click.option("--port", type=int, default=9092, show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path(".broker"))
def broker(kind: str, port: int, data_dir: Path) -> None:
    """Run a local Kafka-protocol broker in the foreground (Ctrl-C or SIGTERM stops it)."""
    b = LocalBroker(kind, port, data_dir.resolve())  # type: ignore[arg-type]
    b.serve(
        lambda b: click.echo(f"{kind} broker on {b.bootstrap} (data {b.data_dir}); Ctrl-C to stop")
    )


@click.command("produce")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--topic", default=None, help="default: the settings' input topic")
@click.option(
    "--bootstrap", default=None, help="Kafka bootstrap servers (CRISIS_BOOTSTRAP_SERVERS)"
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="seconds to wait for every record's acknowledgement (else exit 5)",
)
def produce(path: Path, topic: str | None, bootstrap: str | None, timeout_s: float) -> None:
    """Produce the lines of a JSONL file to a topic (keyed by event id)."""
    settings = load_settings(bootstrap_servers=bootstrap)
    values = [line for line in path.read_bytes().splitlines() if line.strip()]
    seed(settings.kafka_common(), topic or settings.input_topic, values, timeout_s)
    click.echo(f"produced {len(values)} records")
