"""``crisis-stream models``: build, verify and extend model bundles (build-time code, so its
imports load only when a ``models`` subcommand runs)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from stream.build.adaptation_run import Scope
from stream.build.bundle import DEFAULT_ENCODER, HeadsFrom, Pooling, build_bundle
from stream.build.encoders import ENCODERS
from stream.build.export import Activations
from stream.build.labels import add_label
from stream.cli.env import settings as load_settings
from stream.cli.options import datasets_root_option
from stream.data.crisismmd import find_dataset
from stream.models.manifest import read_manifest, verify_files

__all__ = ["models"]


@click.group("models")
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
    default=DEFAULT_ENCODER,
    show_default=True,
    help="text encoder: multilingual-e5-small (~100 languages, the default, models/e5-crisis); "
    "all-MiniLM-L6-v2 (English, ~2x faster, --out models/minilm-crisis); all-mpnet-base-v2 "
    "(the mpnet extra; English, ~4x slower, --out models/mpnet-crisis)",
)
@click.option(
    "--heads",
    "heads_from",
    type=click.Choice(["corpus", "crisismmd"]),
    default="corpus",
    show_default=True,
    help="corpus: fitted across every event of CrisisMMD, CrisisLexT26 and Figure Eight "
    "(the recipe `models crossval` measures); crisismmd: the CrisisMMD agreed train split only",
)
@click.option(
    "--finetune/--no-finetune",
    default=None,
    help="fine-tune the encoder first: across events with --heads corpus (the production "
    "bundle: `make models-tuned`, about 11 minutes on two cores), on CrisisMMD's train split "
    "with --heads crisismmd (default: no, the quick bundle; $CRISIS_STREAM_FINETUNE=1 too)",
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
@click.option(
    "--pooling",
    type=click.Choice(["mean_content", "mean"]),
    default=None,
    help="mean_content: function words ('in', 'the', 'de') are left out of the pool and the "
    "lexicon, so rationales name content words (default unless fine-tuning); mean: every token",
)
@click.option(
    "--layers",
    type=click.IntRange(min=1),
    default=None,
    help="run only the encoder's first N transformer layers: fewer layers, a faster encoder "
    "(default: all; e5 fine-tuned across events keeps 8 of its 12)",
)
def models_build(
    out: Path | None,
    data: Path | None,
    image: bool,
    drop_links: bool | None,
    encoder: str,
    activations: Activations,
    heads_from: HeadsFrom,
    finetune: bool | None,
    pooling: Pooling | None,
    layers: int | None,
) -> None:
    """Build a bundle from package-shipped weights (needs the build extra): the text encoder
    and heads, and (unless --no-image) the image encoder, concept space and fusion."""

    default = load_settings().bundle
    if encoder != DEFAULT_ENCODER:
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
        heads=heads_from,
        finetune=finetune,
        pooling=pooling,
        layers=layers,
    )
    click.echo(f"bundle written to {out} in {time.perf_counter() - t0:.0f}s")


@models.command("verify")
@click.argument("bundle", type=click.Path(path_type=Path))
def models_verify(bundle: Path) -> None:
    """Check every file of a bundle against its manifest's sha256."""

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

    texts = []
    if examples is not None:
        texts = [t.strip() for t in examples.read_text().splitlines() if t.strip()]
    entry = add_label(bundle_dir, out, task, label, description, texts)
    click.echo(
        f"{out}: task {task} labels {entry['labels']} ({len(texts)} examples for {label}); "
        f"point the worker at it (CRISIS_BUNDLE) or swap it in for hot reload"
    )


@models.command("crossval")
@click.option(
    "--bundle", type=click.Path(path_type=Path), default=None, help="default: the configured bundle"
)
@datasets_root_option
@click.option(
    "--folds",
    type=int,
    default=0,
    show_default=True,
    help="0: leave one event out; K: K folds of whole events",
)
@click.option(
    "--fp32/--no-fp32",
    default=True,
    show_default=True,
    help="also score the same heads on the fp32 encoder",
)
@click.option(
    "--baseline/--no-baseline",
    default=True,
    show_default=True,
    help="TF-IDF + logistic regression under the same folds",
)
@click.option(
    "--limit-per-group",
    type=int,
    default=None,
    help="first N messages of each event (quick, noisy)",
)
@click.option(
    "--finetune",
    is_flag=True,
    help="each fold's encoder fine-tuned on the other folds' events (the recipe of "
    "`models build --finetune`; dev events as the first fold; 5 folds unless --folds; about "
    "13 minutes a fold on two cores, kept in the user cache; no fp32 or zero-shot columns)",
)
@click.option(
    "--dev-first",
    is_flag=True,
    help="with --folds K: the dev events as the first fold (as --finetune does), so a frozen "
    "recipe can be compared under the same folds",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="write the JSON report here"
)
@click.option(
    "--record", is_flag=True, help="write the summary into the bundle's manifest and MODEL_CARD.md"
)
def models_crossval(
    bundle: Path | None,
    data: Path | None,
    folds: int,
    fp32: bool,
    baseline: bool,
    limit_per_group: int | None,
    finetune: bool,
    dev_first: bool,
    out: Path | None,
    record: bool,
) -> None:
    """Cross-event evaluation: hold each event out, fit the shipped heads on the others, and
    report macro-F1, accuracy and ECE per event and language, beside a TF-IDF baseline."""

    import orjson

    from stream.build.crossval_run import format_report, run_crossval
    from stream.data.paths import datasets_root

    bundle = bundle or load_settings().bundle
    root = data or datasets_root()
    if root is None:
        raise click.UsageError("no datasets found: pass --data (the folder holding crisismmd/ ...)")
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        click.echo(f"[{time.perf_counter() - t0:6.1f}s] {msg}", err=True)

    if finetune and folds == 0:
        folds = 5
    report = run_crossval(
        bundle,
        root,
        progress,
        folds,
        fp32,
        baseline,
        limit_per_group,
        finetune=finetune,
        dev_first=finetune or dev_first,
    )
    click.echo(format_report(report))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        click.echo(f"report written to {out}")
    if record:
        from stream.build.model_card import record_crossval

        record_crossval(bundle, report)
        click.echo(f"summary recorded in {bundle / 'manifest.json'} and its MODEL_CARD.md")


@models.command("simulate-feedback")
@click.option(
    "--bundle", type=click.Path(path_type=Path), default=None, help="default: the configured bundle"
)
@datasets_root_option
@click.option(
    "--events",
    "scope",
    type=click.Choice(["non-dev", "dev", "all"]),
    default="non-dev",
    show_default=True,
    help="held-out crisis events: those the settings were not chosen on (the headline), the "
    "dev events, or all",
)
@click.option(
    "--grid",
    is_flag=True,
    help="try every correction setting (L2 x class weights) instead of the defaults; run it "
    "with --events dev to choose them",
)
@click.option(
    "--out-json", type=click.Path(path_type=Path), default=None, help="write the JSON report here"
)
@click.option(
    "--svg",
    type=click.Path(path_type=Path),
    default=None,
    help="draw the curves here (e.g. docs/images/adaptation.svg)",
)
def models_simulate_feedback(
    bundle: Path | None,
    data: Path | None,
    scope: Scope,
    grid: bool,
    out_json: Path | None,
    svg: Path | None,
) -> None:
    """Simulate analysts' feedback on held-out events. Each event's adapted head is scored
    after 0-200 answers, drawn in review-queue order and in random order."""

    import orjson

    from stream.build.adaptation_chart import adaptation_svg
    from stream.build.adaptation_run import format_report, run_simulation
    from stream.data.paths import datasets_root

    bundle = bundle or load_settings().bundle
    root = data or datasets_root()
    if root is None:
        raise click.UsageError("no datasets found: pass --data (the folder holding crisismmd/ ...)")
    if grid and svg is not None:
        raise click.UsageError("--svg draws the default settings' curves: leave out --grid")
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        click.echo(f"[{time.perf_counter() - t0:6.1f}s] {msg}", err=True)

    report = run_simulation(bundle, root, progress, scope, grid)
    click.echo(format_report(report))
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        click.echo(f"report written to {out_json}")
    if svg is not None:
        summaries = {t: b["summary"] for t, b in report["tasks"].items()}
        title = f"Adapted head after analysts' answers ({scope} events)"
        svg.parent.mkdir(parents=True, exist_ok=True)
        svg.write_text(adaptation_svg(summaries, title))
        click.echo(f"chart written to {svg}")
