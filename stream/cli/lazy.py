"""A click group whose subcommands are imported only when one runs or shows its own help.

``crisis-stream --help`` lists every command from the short help recorded here, so listing them
loads no model runtime (onnxruntime), no faust and no build tooling; a test keeps these short
help strings equal to the commands' own.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import click
from click.utils import make_default_short_help

__all__ = ["LazyCommand", "LazyGroup"]


@dataclass(frozen=True)
class LazyCommand:
    """Where a command lives (``module:attribute``) and the first sentence of its help."""

    target: str
    short_help: str

    def load(self) -> click.Command:
        module, _, attr = self.target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is not a click command")
        return command


class LazyGroup(click.Group):
    """A :class:`click.Group` with ``lazy`` commands besides the ones added eagerly."""

    def __init__(self, *args: object, lazy: dict[str, LazyCommand], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            self.add_command(self.lazy[cmd_name].load(), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the recorded short help: nothing is imported to show it."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        rows = []
        for name in names:
            if name in self.commands:
                command = self.commands[name]
                if not command.hidden:
                    rows.append((name, command.get_short_help_str(limit)))
            else:
                rows.append((name, make_default_short_help(self.lazy[name].short_help, limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
