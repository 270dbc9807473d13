"""The ``crisis-stream`` command line: one click group, each command in its own module under
:mod:`stream.cli`, imported only when that command runs (see :mod:`stream.cli.lazy`)."""

from __future__ import annotations

import sys

import click

from stream.cli.exits import EPILOG, exit_code
from stream.cli.lazy import LazyCommand, LazyGroup
from stream.errors import CrisisStreamError

__all__ = ["COMMANDS", "cli", "main"]

#: every subcommand: where it lives and its first help sentence (``--help`` lists these)
COMMANDS: dict[str, LazyCommand] = {
    name: LazyCommand(f"stream.cli.{target}", short_help)
    for name, target, short_help in [
        (
            "run",
            "run:run",
            "Run the worker until SIGTERM (or the end of a file source).",
        ),
        (
            "demo",
            "local:demo",
            "Start a local broker, seed sample crisis events, label them, print the results.",
        ),
        (
            "broker",
            "local:broker",
            "Run a local Kafka-protocol broker in the foreground (Ctrl-C or SIGTERM stops it).",
        ),
        (
            "produce",
            "local:produce",
            "Produce the lines of a JSONL file to a topic (keyed by event id).",
        ),
        (
            "dlq",
            "dlq:dlq",
            "Work with the dead-letter topic (redrive: send chosen dead letters back).",
        ),
        (
            "schema",
            "schema:schema",
            "Print or write the JSON Schemas of input, labelled, dead-letter and feedback events.",
        ),
        (
            "adapt",
            "adapt:adapt",
            "Adapt a bundle's heads to analysts' answers on the feedback topic, publishing gated "
            "versions that workers on OUT/current hot-reload.",
        ),
        (
            "config",
            "config:config",
            "Print the effective settings (secrets masked), or with --reference every setting.",
        ),
        (
            "models",
            "models:models",
            "Build and verify model bundles.",
        ),
        (
            "label",
            "label:label",
            "Label JSONL events or plain text lines from stdin and write labelled JSONL to stdout.",
        ),
        (
            "replay",
            "replay:replay",
            "Label a bounded range of TOPIC with a bundle, without touching any consumer group.",
        ),
        (
            "backtest",
            "replay:backtest",
            "Replay a range with bundle A (and B, or join with a labelled topic) and compare.",
        ),
        (
            "evaluate",
            "replay:evaluate",
            "Label gold-labelled events and print accuracy, macro-F1, per-class F1, the confusion "
            "matrix and the ECE (or, with --faithfulness, how faithful the text rationales are).",
        ),
        (
            "load-crisismmd",
            "replay:load_crisismmd",
            "Turn a CrisisMMD split into InputEvents with gold labels (id = tweet id, created_at ="
            " 2017-09-01T00:00:00Z + row index seconds; Kafka record timestamps are the load "
            "time).",
        ),
        (
            "load-corpus",
            "replay:load_corpus_events",
            "Write labelled crisis messages (CrisisLexT26, Figure Eight, CrisisMMD annotations) as"
            " InputEvents with gold labels and their event, for `evaluate --by-event --by-lang`.",
        ),
        (
            "aggregate",
            "aggregate:aggregate",
            "Count labelled events per time window and serve them on HTTP (JSON + an HTML page).",
        ),
        (
            "review",
            "review:review",
            "Serve the analysts' review page: low-confidence events one at a time, answers to the "
            "feedback topic.",
        ),
        (
            "explain",
            "evaluation:explain",
            "Write a self-contained HTML explanation of the event in EVENT_FILE (one JSON object).",
        ),
        (
            "faithfulness",
            "evaluation:faithfulness",
            "ERASER comprehensiveness / sufficiency of text rationales on an agreed split.",
        ),
        (
            "evaluate-images",
            "evaluation:evaluate_images",
            "Text-only / image-only / fused metrics on the agreed-split rows with local images.",
        ),
    ]
}


@click.group(cls=LazyGroup, lazy=COMMANDS, epilog=EPILOG)
@click.version_option(package_name="crisis-stream")
def cli() -> None:
    """Label crisis social-media events from Kafka with quantized ONNX encoders."""


def main(command: click.Command = cli, prog_name: str | None = None) -> None:
    """Run ``command``; a deliberate error is one ``error:`` line and its exit code
    (:mod:`stream.cli.exits`), anything else a traceback and exit 1."""
    try:
        command(prog_name=prog_name, standalone_mode=True)
    except CrisisStreamError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(exit_code(exc))
