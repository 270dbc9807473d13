"""Click options shared by several commands."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["datasets_root_option"]

datasets_root_option = click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="datasets root holding crisismmd/, crisislex_t26/, figure8/ (default: ../shared/datasets)",
)
