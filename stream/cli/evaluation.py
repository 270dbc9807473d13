"""``explain``, ``faithfulness`` and ``evaluate-images``: inspect what a bundle labels and why."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click
import orjson

from stream.cli.env import settings as load_settings
from stream.data.crisismmd import find_dataset, load_split
from stream.data.image_rows import read_image_rows
from stream.evaluation.explain import ALL_CELLS, explain_event
from stream.evaluation.faithfulness import faithfulness_report
from stream.evaluation.images import evaluate_image_rows
from stream.images.source import ImageOptions
from stream.models.bundle import load_bundle
from stream.pipeline import Pipeline
from stream.schemas import InputEvent

__all__ = ["evaluate_images", "explain", "faithfulness"]


@click.command("explain")
@click.argument("event_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path), default=None)
@click.option(
    "--image-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="directory image.path may read from (default: CRISIS_IMAGE_ROOT, else the "
    "event file's directory)",
)
@click.option("--top-k", default=8, show_default=True, help="rationale words per task")
def explain(
    event_file: Path, out: Path, bundle_dir: Path | None, image_root: Path | None, top_k: int
) -> None:
    """Write a self-contained HTML explanation of the event in EVENT_FILE (one JSON object)."""

    settings = load_settings()
    event = InputEvent.model_validate(orjson.loads(event_file.read_bytes()))
    options = ImageOptions.from_settings(settings)
    root = image_root or options.root or event_file.resolve().parent
    options = replace(options, root=root, cells_top_k=ALL_CELLS)
    bundle = load_bundle(bundle_dir or settings.bundle, settings.precision, settings.threads)
    pipeline = Pipeline(bundle, top_k, settings.review_threshold, options)
    labeled, page = explain_event(pipeline, event, options)
    out.write_text(page, encoding="utf-8")
    summary = ", ".join(f"{t}={lab.label} ({lab.score:.2f})" for t, lab in labeled.labels.items())
    click.echo(
        f"{out}: {summary}"
        + (f"; image_error: {labeled.image_error}" if labeled.image_error else "")
    )


@click.command("faithfulness")
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path), default=None)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="CrisisMMD directory (default: ../shared/datasets/crisismmd)",
)
@click.option("--task", default="informative", show_default=True)
@click.option(
    "--split",
    type=click.Choice(["test", "dev"]),
    default="test",
    show_default=True,
    help="dev for choosing settings, test for the figure",
)
@click.option("--k", default=5, show_default=True, help="rationale words removed / kept")
@click.option(
    "--sweep",
    default="1,2,3,5,10",
    show_default=True,
    help="comma-separated k to report besides --k ('' for none)",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--repeats", default=3, show_default=True, help="random-word draws per text")
@click.option("--limit", type=int, default=None, help="only the first N test texts")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="write JSON here")
def faithfulness(
    bundle_dir: Path | None,
    data: Path | None,
    task: str,
    split: str,
    k: int,
    sweep: str,
    seed: int,
    repeats: int,
    limit: int | None,
    out: Path | None,
) -> None:
    """ERASER comprehensiveness / sufficiency of text rationales on an agreed split."""

    data = data or find_dataset()
    if data is None:
        raise click.UsageError("CrisisMMD not found: pass --data")
    bundle = load_bundle(bundle_dir or load_settings().bundle)
    rows = load_split(data, task, split)
    if limit:
        rows = rows[:limit]
    ks = [int(x) for x in sweep.split(",") if x.strip()]
    report = faithfulness_report(
        bundle, [r.text for r in rows], [r.label for r in rows], k, seed, task, repeats, ks
    )
    report["split"] = split
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
    if out:
        out.write_text(text + "\n")
    click.echo(text)


@click.command("evaluate-images")
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path), default=None)
@click.option("--data", type=click.Path(path_type=Path), default=None, help="CrisisMMD dir")
@click.option(
    "--split",
    type=click.Choice(["test", "dev", "train", "all"]),
    default="test",
    show_default=True,
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="write JSON here")
def evaluate_images(
    bundle_dir: Path | None, data: Path | None, split: str, out: Path | None
) -> None:
    """Text-only / image-only / fused metrics on the agreed-split rows with local images."""

    settings = load_settings()
    data = data or find_dataset()
    if data is None:
        raise click.UsageError("CrisisMMD not found: pass --data")
    rows = [r for r in read_image_rows(data) if r.agreed and (split == "all" or r.split == split)]
    if not rows:
        raise click.UsageError(f"no CrisisMMD rows with local images under {data}")
    bundle = load_bundle(bundle_dir or settings.bundle, settings.precision, settings.threads)
    if bundle.image is None:
        raise click.UsageError("this bundle has no image encoder")
    options = replace(ImageOptions.from_settings(settings), root=data / "images")
    report = evaluate_image_rows(Pipeline(bundle, 5, None, options), rows)
    report["split"] = split
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
    if out:
        out.write_text(text + "\n")
    click.echo(text)
