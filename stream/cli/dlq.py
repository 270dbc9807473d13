"""``crisis-stream dlq``: work with the dead-letter topic."""

from __future__ import annotations

import click
import orjson

from stream.cli.env import settings as load_settings
from stream.ops.redrive import redrive as run_redrive

__all__ = ["dlq"]


@click.group("dlq")
def dlq() -> None:
    """Work with the dead-letter topic (redrive: send chosen dead letters back)."""


@dlq.command("redrive")
@click.option("--topic", default=None, help="dead-letter topic (default: CRISIS_DLQ_TOPIC)")
@click.option("--to", "to_topic", default=None, help="target (default: CRISIS_INPUT_TOPIC)")
@click.option("--kind", "kinds", multiple=True, help="error kind to re-send (repeatable)")
@click.option("--all", "all_kinds", is_flag=True, help="re-send every kind")
@click.option(
    "--group",
    default="crisis-stream-redrive",
    show_default=True,
    help="consumer group remembering what was re-sent (a second run continues after it)",
)
@click.option("--dry-run", is_flag=True, help="count what would be re-sent; send nothing")
@click.option("--timeout", "timeout_s", type=float, default=30.0, show_default=True)
def redrive(
    topic: str | None,
    to_topic: str | None,
    kinds: tuple[str, ...],
    all_kinds: bool,
    group: str,
    dry_run: bool,
    timeout_s: float,
) -> None:
    """Re-send chosen dead letters to the input topic with their original value, key and
    headers; prints what was read, sent and skipped (JSON)."""
    if not kinds and not all_kinds:
        raise click.UsageError("say which dead letters: --kind KIND (repeatable) or --all")
    settings = load_settings()
    report = run_redrive(
        settings.kafka_common(),
        topic or settings.dlq_topic,
        to_topic or settings.input_topic,
        None if all_kinds else set(kinds),
        group,
        dry_run,
        timeout_s,
    )
    click.echo(orjson.dumps(report.as_dict()).decode())
