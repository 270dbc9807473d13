"""``crisis-stream config``: the settings reference (every ``CRISIS_*`` variable)."""

from __future__ import annotations

import click

from stream.settings_reference import render_reference

__all__ = ["config"]


@click.command("config")
@click.option(
    "--reference",
    is_flag=True,
    required=True,
    help="print the Markdown reference of every setting (docs/configuration.md)",
)
def config(reference: bool) -> None:
    """Print the configuration reference: every setting, its variable, type and default."""
    click.echo(render_reference(), nl=False)
