"""``label``: stdin to stdout with :class:`stream.Classifier`, one output line per input line.

A line whose first non-blank character is ``{`` is a JSON :class:`~stream.schemas.InputEvent`
(``id`` may be left out); any other line is the text of an event. Each input line gives one line
on stdout, in input order: the labelled event, or ``{"id", "error": {"kind", "message"},
"origin"}`` for a line that cannot be labelled (the dead-letter reason codes of the worker).
Logs go to stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click
import orjson

from stream.decode import json_id
from stream.errors import InvalidEvent
from stream.schemas import InputEvent, LabeledEvent, Origin

if TYPE_CHECKING:
    from stream.classifier import Classifier

__all__ = ["label"]

log = logging.getLogger(__name__)
#: input lines read before they are labelled (and their outputs written) together
CHUNK_BATCHES = 4


def _chunks(stream: IO[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for line in stream:
        chunk.append(line.rstrip(b"\r\n"))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _parse(clf: Classifier, raw: bytes, index: int, max_bytes: int) -> InputEvent:
    if len(raw) > max_bytes:
        raise InvalidEvent("too_large", f"line is {len(raw)} bytes, limit {max_bytes}")
    if raw.lstrip()[:1] == b"{":
        try:
            doc: Any = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent("not_json", str(exc)[:300]) from None
        return clf.event(doc, index)  # a line starting with { parses as an object
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent("not_utf8", str(exc)[:300]) from None
    return clf.event(text, index)


def _error(raw: bytes | None, kind: str, message: str, origin: Origin) -> dict[str, Any]:
    return {
        "id": json_id(raw) if raw is not None and raw.lstrip()[:1] == b"{" else None,
        "error": {"kind": kind, "message": message},
        "origin": origin.model_dump(),
    }


def _label_all(clf: Classifier, events: list[InputEvent], offsets: list[int]) -> list[Any]:
    """The labelled events; should the model fail on a batch, each event alone, so that one
    event it cannot label becomes that event's error line."""
    try:
        return list(clf.predict(events, offsets=offsets))
    except Exception:  # isolate the event the model cannot label, report it as data
        log.exception("labelling a chunk failed; retrying one by one")
    out: list[Any] = []
    for ev, offset in zip(events, offsets, strict=True):
        try:
            out += clf.predict([ev], offsets=[offset])
        except Exception as exc:
            origin = Origin(topic=clf.source, partition=0, offset=offset)
            doc = _error(None, "label_failed", f"{type(exc).__name__}: {exc}"[:300], origin)
            doc["id"] = ev.id
            out.append(doc)
    return out


def _keep_fields(fields: str | None) -> list[str] | None:
    """The ``--fields`` list, checked against the labelled event's fields; None keeps all."""
    if not fields:
        return None
    keep = [f.strip() for f in fields.split(",") if f.strip()]
    unknown = [f for f in keep if f not in LabeledEvent.model_fields]
    if unknown or not keep:
        raise click.BadParameter(
            f"unknown field(s) {unknown}; fields: {', '.join(LabeledEvent.model_fields)}",
            param_hint="--fields",
        )
    return keep


def _label_chunk(clf: Classifier, chunk: list[bytes], index: int, max_bytes: int) -> list[Any]:
    """One result per line of ``chunk`` (its first line is line ``index``), in order: a
    ``LabeledEvent``, or an error object for a line that could not be labelled."""
    lines: list[Any] = [None] * len(chunk)
    events: list[InputEvent] = []
    where: list[int] = []
    for j, raw in enumerate(chunk):
        offset = index + j
        try:
            events.append(_parse(clf, raw, offset, max_bytes))
            where.append(j)
        except InvalidEvent as exc:
            origin = Origin(topic=clf.source, partition=0, offset=offset)
            lines[j] = _error(raw, exc.kind, exc.message, origin)
    labelled = _label_all(clf, events, [index + j for j in where]) if events else []
    for j, result in zip(where, labelled, strict=True):
        lines[j] = result
    return lines


def _write_lines(out: IO[bytes], lines: list[Any], keep: list[str] | None) -> int:
    """Writes one JSON line per result (labelled events cut to ``keep``); returns the number
    of error lines."""
    errors = 0
    for result in lines:
        if isinstance(result, LabeledEvent):
            doc = result.model_dump(mode="json")
            if keep is not None:
                doc = {k: doc[k] for k in keep}
        else:
            errors += 1
            doc = result
        out.write(orjson.dumps(doc) + b"\n")
    return errors


@click.command("label")
@click.option(
    "--bundle",
    type=click.Path(path_type=Path),
    help="model bundle directory (default: CRISIS_BUNDLE, models/e5-crisis)",
)
@click.option(
    "--precision",
    type=click.Choice(["int8", "fp32"]),
    help="encoder precision (default: the bundle's)",
)
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime intra-op threads")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="events per encoder call (default: CRISIS_BATCH_MAX_EVENTS, 32)",
)
@click.option(
    "--fields",
    help="comma-separated top-level fields to keep in each labelled line, e.g. id,labels "
    "(error lines are kept whole)",
)
@click.option("--strict", is_flag=True, help="exit 1 when any line could not be labelled")
@click.option("--verbose", is_flag=True, help="log at INFO (JSON on stderr)")
def label(
    bundle: Path | None,
    precision: str | None,
    threads: int | None,
    batch_size: int | None,
    fields: str | None,
    strict: bool,
    verbose: bool,
) -> None:
    """Label JSONL events or plain text lines from stdin and write labelled JSONL to stdout.

    One output line per input line, in input order. A line starting with { is a JSON
    InputEvent (its id defaults to the line's index, counted from 0); any other line is a text.
    A line that cannot be labelled gives a line with an "error" object (kind, message) instead.
    """
    from stream.classifier import Classifier
    from stream.cli.env import settings as load_settings
    from stream.ops.logs import configure

    keep = _keep_fields(fields)
    configure("INFO" if verbose else "WARNING")
    settings = load_settings()
    clf = Classifier.load(
        bundle, precision, threads, batch_size=batch_size, source="stdin", settings=settings
    )
    out = sys.stdout.buffer
    errors = index = 0
    try:
        for chunk in _chunks(sys.stdin.buffer, clf.batch_size * CHUNK_BATCHES):
            lines = _label_chunk(clf, chunk, index, settings.max_record_bytes)
            errors += _write_lines(out, lines, keep)
            out.flush()
            index += len(chunk)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if errors:
        click.echo(f"{errors} of {index} lines could not be labelled", err=True)
        if strict:
            raise click.exceptions.Exit(1)
