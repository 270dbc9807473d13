"""The ``crisis-stream`` command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import orjson

from stream.errors import CrisisStreamError
from stream.settings import Settings

if TYPE_CHECKING:
    from stream.models.export import Activations

__all__ = ["main"]


def _setup_logging(level: str) -> None:
    from stream.logs import configure

    configure(level)


@click.group()
@click.version_option(package_name="crisis-stream")
def cli() -> None:
    """Label crisis social-media events from Kafka with quantized ONNX encoders."""


@cli.command()
@click.option("--bootstrap", help="Kafka bootstrap servers (CRISIS_BOOTSTRAP_SERVERS)")
@click.option("--group", help="consumer group id (CRISIS_GROUP_ID)")
@click.option("--input-topic", help="input topic (CRISIS_INPUT_TOPIC)")
@click.option("--bundle", type=click.Path(path_type=Path), help="model bundle directory")
@click.option("--precision", type=click.Choice(["int8", "fp32"]), help="encoder precision")
@click.option(
    "--source",
    "source_spec",
    default="kafka",
    show_default=True,
    help="'kafka' or 'file:PATH' (JSONL)",
)
@click.option(
    "--sink",
    "sink_spec",
    default="kafka",
    show_default=True,
    help="'kafka' or 'dir:PATH' (one JSONL file per topic)",
)
@click.option(
    "--create-topics/--no-create-topics",
    default=False,
    help="create the worker's topics first (single-node/dev setups)",
)
def run(
    bootstrap: str | None,
    group: str | None,
    input_topic: str | None,
    bundle: Path | None,
    precision: str | None,
    source_spec: str,
    sink_spec: str,
    create_topics: bool,
) -> None:
    """Run the worker until SIGTERM (or the end of a file source)."""
    from stream.admin import ensure_topics
    from stream.runtime import build_worker, early_stop_flag, install_signal_handlers

    # A SIGTERM while the bundle loads (seconds) must still end in a clean exit 0: an
    # orchestrator scaling down a starting replica is normal, not a crash.
    stop_early = early_stop_flag()

    overrides = {
        k: v
        for k, v in {
            "bootstrap_servers": bootstrap,
            "group_id": group,
            "input_topic": input_topic,
            "bundle": bundle,
            "precision": precision,
        }.items()
        if v is not None
    }
    settings = Settings(**overrides)  # type: ignore[arg-type]
    _setup_logging(settings.log_level)
    if create_topics:
        ensure_topics(
            settings.kafka_common(),
            {
                t: 3 if t == settings.input_topic else 1
                for t in [settings.input_topic, *settings.output_topics()]
            },
        )
    logging.getLogger("stream").info("starting", extra={"settings": settings.redacted()})
    worker, server = build_worker(settings, source_spec, sink_spec)
    if create_topics and settings.route_labels:  # their names come from the bundle's labels
        heads = {h.task: list(h.labels) for h in worker.pipeline.bundle.heads}
        ensure_topics(settings.kafka_common(), dict.fromkeys(settings.route_topics(heads), 1))
    install_signal_handlers(worker)
    if stop_early.is_set():
        worker.request_stop()
    try:
        stats = worker.run()
    finally:
        if worker.reloader is not None:
            worker.reloader.stop()
        if server is not None:
            server.stop()
    logging.getLogger("stream").info(
        "stopped", extra={"stats": stats.__dict__ | {"batch_sizes": stats.batches}}
    )


@cli.command()
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
    from stream.demo import run_demo

    logging.basicConfig(level=logging.WARNING)
    run_demo(bundle or Settings().bundle, broker_kind)  # type: ignore[arg-type]


@cli.command()
@click.option("--kind", type=click.Choice(["noida", "tansu"]), default="noida", show_default=True)
@click.option("--port", type=int, default=9092, show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path(".broker"))
def broker(kind: str, port: int, data_dir: Path) -> None:
    """Run a local Kafka-protocol broker in the foreground (Ctrl-C stops it)."""
    import time

    from stream.broker import LocalBroker

    b = LocalBroker(kind, port, data_dir.resolve())  # type: ignore[arg-type]
    b.start()
    click.echo(f"{kind} broker on {b.bootstrap} (data {b.data_dir}); Ctrl-C to stop")
    try:
        while b.running:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()


@cli.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--topic", default=None, help="default: the settings' input topic")
@click.option("--bootstrap", default=None)
def produce(path: Path, topic: str | None, bootstrap: str | None) -> None:
    """Produce the lines of a JSONL file to a topic (keyed by event id)."""
    from stream.demo import seed

    settings = Settings() if bootstrap is None else Settings(bootstrap_servers=bootstrap)
    values = [line for line in path.read_bytes().splitlines() if line.strip()]
    seed(settings.bootstrap_servers, topic or settings.input_topic, values)
    click.echo(f"produced {len(values)} records")


@cli.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="directory to write the schemas to; default: print",
)
def schema(out: Path | None) -> None:
    """Print or write the JSON Schemas of input, labelled and dead-letter events."""
    from stream.schemas import json_schemas

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


@cli.group()
def models() -> None:
    """Build and verify model bundles."""


@models.command("build")
@click.option("--out", type=click.Path(path_type=Path), default=None)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="CrisisMMD directory (default: ../shared/datasets/crisismmd)",
)
@click.option(
    "--image/--no-image",
    default=True,
    show_default=True,
    help="also build the image side (EfficientNet-Lite0, concepts, fusion)",
)
@click.option(
    "--drop-links/--keep-links",
    default=None,
    help="encoder tokenizer drops links (default: the encoder's choice; MiniLM keeps them: "
    "dropping is ~3x faster on tweets, humanitarian dev macro-F1 -0.01)",
)
@click.option(
    "--encoder",
    type=click.Choice(["minilm", "mpnet", "e5"]),
    default="minilm",
    show_default=True,
    help="text encoder: all-MiniLM-L6-v2; all-mpnet-base-v2 (the mpnet extra; more accurate, "
    "~4x slower, --out models/mpnet-crisis); multilingual-e5-small (the e5 extra; ~100 "
    "languages, --out models/e5-crisis)",
)
@click.option(
    "--int8-activations",
    "activations",
    type=click.Choice(["per-token", "per-tensor"]),
    default="per-token",
    show_default=True,
    help="per-token: a tweet's label never depends on its batch; per-tensor: the faster "
    "encoder (per-token ran at 0.68-0.77x its rate on AVX2), labels move slightly with the batch",
)
def models_build(
    out: Path | None,
    data: Path | None,
    image: bool,
    drop_links: bool | None,
    encoder: str,
    activations: Activations,
) -> None:
    """Build a bundle from package-shipped weights (needs the build extra): the text encoder
    and heads, and (unless --no-image) the image encoder, concept space and fusion."""
    import time

    from stream.data.crisismmd import find_dataset
    from stream.models.build import build_bundle
    from stream.models.encoders import ENCODERS

    default = Settings().bundle
    if encoder != "minilm":
        default = default.with_name(ENCODERS[encoder].bundle_name)
    out = out or default
    data = data or find_dataset()
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        click.echo(f"[{time.perf_counter() - t0:6.1f}s] {msg}", err=True)

    if data is None:
        click.secho(
            "CrisisMMD not found: heads will be zero-shot (label descriptions)",
            fg="yellow",
            err=True,
        )
    build_bundle(
        out,
        data,
        progress,
        image=image,
        drop_links=drop_links,
        encoder=encoder,
        activations=activations,
    )
    click.echo(f"bundle written to {out} in {time.perf_counter() - t0:.0f}s")


@models.command("verify")
@click.argument("bundle", type=click.Path(path_type=Path))
def models_verify(bundle: Path) -> None:
    """Check every file of a bundle against its manifest's sha256."""
    from stream.models.bundle import read_manifest, verify_files

    manifest = read_manifest(bundle)
    verify_files(bundle, manifest)
    click.echo(f"{manifest.name} {manifest.version}: {len(manifest.files)} files verified")


@models.command("add-label")
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="new bundle dir")
@click.option("--task", required=True, help="a new task, or one with a prototype head")
@click.option("--label", required=True)
@click.option("--description", required=True, help="one plain sentence of what such tweets say")
@click.option(
    "--examples",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="a text file of example tweets for this label, one per line",
)
def models_add_label(
    bundle_dir: Path,
    out: Path,
    task: str,
    label: str,
    description: str,
    examples: Path | None,
) -> None:
    """Add a label with no retraining: a prototype from its description (and examples)."""
    from stream.models.labels import add_label

    texts = []
    if examples is not None:
        texts = [t.strip() for t in examples.read_text().splitlines() if t.strip()]
    entry = add_label(bundle_dir, out, task, label, description, texts)
    click.echo(
        f"{out}: task {task} labels {entry['labels']} ({len(texts)} examples for {label}); "
        f"point the worker at it (CRISIS_BUNDLE) or swap it in for hot reload"
    )


def _register() -> None:
    """Commands that live next to what they drive; imported here so ``--help`` lists them."""
    from stream.aggregate.cli import aggregate
    from stream.explain import explain
    from stream.faithfulness import faithfulness
    from stream.images.evaluate import evaluate_images
    from stream.replay.cli import backtest, evaluate, load_crisismmd, replay

    for command in (replay, backtest, evaluate, load_crisismmd, aggregate, explain):
        cli.add_command(command)
    cli.add_command(faithfulness)
    cli.add_command(evaluate_images)


_register()


def main() -> None:
    try:
        cli(standalone_mode=True)
    except CrisisStreamError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
