"""Settings for a command, with its warnings on stderr (``warning: ...``, one line each)."""

from __future__ import annotations

from typing import Any

import click

from stream.settings import Settings
from stream.settings_load import load_settings, unknown_variables

__all__ = ["settings"]


def settings(**overrides: Any) -> Settings:
    """:func:`~stream.settings_load.load_settings` (a ``ConfigError`` exits 3), warning about
    unknown ``CRISIS_*`` variables and what ``CRISIS_CLIENT_PROPERTIES`` dropped."""
    for line in unknown_variables():  # before loading: a typo may be why it fails
        _warn(line)
    loaded = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    for line in loaded.warnings:
        _warn(line)
    return loaded


def _warn(line: str) -> None:
    click.secho(f"warning: {line}", fg="yellow", err=True)
