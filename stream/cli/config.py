"""``crisis-stream config``: the effective settings, or the reference of every setting."""

from __future__ import annotations

import click
import orjson

from stream.cli.env import settings
from stream.settings_reference import render_reference

__all__ = ["config"]


@click.command("config")
@click.option(
    "--reference",
    is_flag=True,
    help="print the Markdown reference of every setting (docs/configuration.md)",
)
def config(reference: bool) -> None:
    """Print the effective settings (secrets masked), or with --reference every setting.

    Without --reference: one JSON object, "settings" (every setting by its variable, as the
    environment and CRISIS_CLIENT_PROPERTIES make it) and "librdkafka" (the properties every
    Kafka client gets). An invalid setting exits 3 with the variable named.
    """
    if reference:
        click.echo(render_reference(), nl=False)
        return
    loaded = settings()
    doc = {
        "settings": {f"CRISIS_{k.upper()}": v for k, v in loaded.redacted().items()},
        "librdkafka": loaded.redacted_kafka(),
    }
    click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
