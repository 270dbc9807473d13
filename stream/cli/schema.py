"""``crisis-stream schema``: the JSON Schemas of the event contracts."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from stream.schemas import json_schemas

__all__ = ["schema"]


@click.command("schema")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="directory to write the schemas to; default: print",
)
def schema(out: Path | None) -> None:
    """Print or write the JSON Schemas of input, labelled, dead-letter and feedback events."""
    schemas = json_schemas()
    if out is None:
        click.echo(orjson.dumps(schemas, option=orjson.OPT_INDENT_2).decode())
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, doc in schemas.items():
        (out / name).write_bytes(
            orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
    click.echo(f"wrote {len(schemas)} schemas to {out}")
