"""``replay``, ``backtest``, ``evaluate`` and ``load-crisismmd``: label recorded topics and gold
data with the production pipeline and score the result."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson

from stream.cli.env import settings as load_settings
from stream.cli.exits import ExitCode
from stream.cli.options import datasets_root_option
from stream.settings import Settings

__all__ = ["backtest", "evaluate", "load_crisismmd", "replay"]

_PRECISION = click.Choice(["int8", "fp32"])
_BOUND_HELP = "offset:N, ts:ISO8601, ts:EPOCH_MS"


def _settings(bootstrap: str | None, **overrides: Any) -> Settings:
    return load_settings(bootstrap_servers=bootstrap, **overrides)


def _logging(verbose: bool) -> None:
    from stream.ops.logs import configure

    configure("INFO" if verbose else "WARNING")


def _common(f: Any) -> Any:
    f = click.option("--bootstrap", help="Kafka bootstrap servers (CRISIS_BOOTSTRAP_SERVERS)")(f)
    f = click.option(
        "--idle-timeout", default=30.0, show_default=True, help="stop when nothing comes for S s"
    )(f)
    f = click.option("--verbose", is_flag=True, help="log at INFO (JSON on stderr)")(f)
    return f


@click.command("replay")
@click.option("--topic", required=True, help="topic to replay (all partitions)")
@click.option(
    "--from", "from_", default="beginning", show_default=True, help=f"beginning, {_BOUND_HELP}"
)
@click.option(
    "--to", default="end", show_default=True, help=f"end (as of now), {_BOUND_HELP}; exclusive"
)
@click.option("--bundle", type=click.Path(path_type=Path), help="model bundle directory")
@click.option("--precision", type=_PRECISION, help="encoder precision (default: the bundle's)")
@click.option("--sink", "sink_spec", required=True, help="topic:NAME or file:PATH (JSONL)")
@_common
def replay(
    topic: str,
    from_: str,
    to: str,
    bundle: Path | None,
    precision: str | None,
    sink_spec: str,
    bootstrap: str | None,
    idle_timeout: float,
    verbose: bool,
) -> None:
    """Label a bounded range of TOPIC with a bundle, without touching any consumer group.

    Reads every partition from --from to --to (end exclusive) with assign() and no commits,
    runs the live worker's pipeline, writes to --sink, and stops at the end of the range.
    """
    from stream.replay.reader import parse_bound
    from stream.replay.run import parse_sink
    from stream.replay.run import replay as run_replay

    _logging(verbose)
    settings = _settings(bootstrap, bundle=bundle, precision=precision)
    sink = parse_sink(sink_spec)
    res = run_replay(
        settings, topic, parse_bound(from_), parse_bound(to), sink, idle_timeout_s=idle_timeout
    )
    st = res.stats
    click.echo(
        f"replayed {res.consumed}/{res.total} offsets of {topic}: {st.labeled} labelled, "
        f"{st.dead_letters} dead letters, {res.skipped_out_of_window} outside the time window, "
        f"in {res.seconds:.1f}s -> {sink.kind}:{res.output} (dead letters: {res.dead_letters})"
    )
    if not res.complete:
        click.secho("warning: stopped on idle before the end of the range", fg="yellow", err=True)
        sys.exit(ExitCode.RUNTIME)


@click.command("backtest")
@click.option(
    "--bundle", type=click.Path(path_type=Path, exists=True), required=True, help="bundle A"
)
@click.option("--precision", type=_PRECISION, help="bundle A's encoder precision")
@click.option("--against", type=click.Path(path_type=Path, exists=True), help="bundle B")
@click.option("--against-precision", type=_PRECISION, help="bundle B's encoder precision")
@click.option("--against-topic", help="compare with a labelled topic (e.g. crisis.events.labeled)")
@click.option("--topic", required=True, help="input topic to replay")
@click.option(
    "--from", "from_", default="beginning", show_default=True, help=f"beginning, {_BOUND_HELP}"
)
@click.option(
    "--to", default="end", show_default=True, help=f"end (as of now), {_BOUND_HELP}; exclusive"
)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="report dir")
@click.option(
    "--max-drop",
    type=float,
    help="CI gate, A the candidate: exit 6 unless on every task with gold labels the paired "
    "95 % interval puts A's macro-F1 at most this far below B's",
)
@_common
def backtest(
    bundle: Path,
    precision: str | None,
    against: Path | None,
    against_precision: str | None,
    against_topic: str | None,
    topic: str,
    from_: str,
    to: str,
    out_dir: Path,
    max_drop: float | None,
    bootstrap: str | None,
    idle_timeout: float,
    verbose: bool,
) -> None:
    """Replay a range with bundle A (and B, or join with a labelled topic) and compare.

    Writes OUT/report.html (plots inline) and OUT/summary.json (for CI), plus each side's
    labelled events as OUT/a.labeled.jsonl and OUT/b.labeled.jsonl.
    """
    from stream.replay.backtest import gate_failures, run_backtest
    from stream.replay.reader import parse_bound

    if against is not None and against_topic is not None:
        raise click.UsageError("give --against or --against-topic, not both")
    _logging(verbose)
    summary = run_backtest(
        _settings(bootstrap),
        topic,
        parse_bound(from_),
        parse_bound(to),
        out_dir,
        bundle,
        precision,
        against,
        against_precision,
        against_topic,
        idle_timeout,
    )
    _echo_summary(summary, out_dir, against_topic)
    if max_drop is not None:
        failures = gate_failures(summary, max_drop)
        for reason in failures:
            click.secho(f"gate failed: {reason}", fg="red", err=True)
        if failures:
            raise click.exceptions.Exit(ExitCode.GATE_FAILED)
        click.echo(f"gate passed: A is at most {max_drop} macro-F1 below B on every gold task")


def _echo_summary(summary: dict[str, Any], out_dir: Path, against_topic: str | None) -> None:
    """One line per task, what was skipped of --against-topic, and where the report is."""
    for task, entry in summary["tasks"].items():
        line = f"{task}:"
        if entry.get("agreement") is not None:
            line += f" agreement {entry['agreement']:.2%} ({entry['flips_total']} flips)"
        for side, g in entry["gold"].items():
            if g:
                line += f"  {side.upper()} macro-F1 {g['macro_f1']:.4f} acc {g['accuracy']:.4f}"
        if d := entry.get("gold_difference"):
            f1 = d["macro_f1"]
            line += f"  B-A macro-F1 {f1['delta']:+.4f} [{f1['low']:+.4f}, {f1['high']:+.4f}]"
        click.echo(line)
    if against_topic is not None:
        click.echo(
            f"skipped {summary['against_skipped']} records of {against_topic} that are not "
            "labelled events"
        )
    click.echo(f"report: {out_dir / 'report.html'}  summary: {out_dir / 'summary.json'}")


@click.command("evaluate")
@click.option("--bundle", type=click.Path(path_type=Path), help="model bundle directory")
@click.option("--precision", type=_PRECISION, help="encoder precision (default: the bundle's)")
@click.option(
    "--data",
    type=click.Path(path_type=Path, exists=True),
    help="CrisisMMD split .tsv, or .jsonl of InputEvents with gold labels "
    "(with --faithfulness: the CrisisMMD directory, default ../shared/datasets/crisismmd)",
)
@click.option("--task", default="informative", show_default=True)
@click.option("--limit", type=int, help="only the first N events")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="also write JSON here")
@click.option(
    "--by-lang", is_flag=True, help="also score each language (the events' lang field) apart"
)
@click.option(
    "--by-event", is_flag=True, help="also score each event (the events' event field) apart"
)
@click.option(
    "--faithfulness",
    "faithful",
    is_flag=True,
    help="instead: ERASER comprehensiveness/sufficiency of the text rationales on the test split",
)
@click.pass_context
def evaluate(
    ctx: click.Context,
    bundle: Path | None,
    precision: str | None,
    data: Path | None,
    task: str,
    limit: int | None,
    json_out: Path | None,
    by_lang: bool,
    by_event: bool,
    faithful: bool,
) -> None:
    """Label gold-labelled events and print accuracy, macro-F1, per-class F1, the confusion
    matrix and the ECE (or, with --faithfulness, how faithful the text rationales are)."""
    if faithful:
        from stream.cli.evaluation import faithfulness

        ctx.invoke(faithfulness, bundle_dir=bundle, data=data, task=task, limit=limit, out=json_out)
        return
    if data is None or data.is_dir():
        raise click.UsageError("--data must name a .tsv or .jsonl file")
    from stream.evaluation.scoring import format_evaluation
    from stream.replay.evaluate import (
        check_task,
        label_events,
        score_by_event,
        score_by_language,
        score_labelled,
    )
    from stream.replay.gold import read_events
    from stream.runtime import build_pipeline

    _logging(False)
    settings = _settings(None, bundle=bundle, precision=precision)
    events = read_events(data, task, limit)
    pipeline = build_pipeline(settings)
    t0 = time.monotonic()

    def progress(done: int) -> None:
        rate = done / max(time.monotonic() - t0, 1e-6)
        click.echo(f"\rlabelled {done}/{len(events)}  {rate:5.1f} ev/s", nl=False, err=True)

    check_task(pipeline, task)
    labelled = label_events(pipeline, events, settings.batch_max_events, on_batch=progress)
    ev = score_labelled(labelled, task)
    click.echo("", err=True)
    info = pipeline.model_info
    title = f"{task} on {data.name} — {info.bundle} {info.version} ({info.quantization})"
    click.echo(format_evaluation(ev, title))
    langs = score_by_language(labelled, task) if by_lang else {}
    per_event = score_by_event(labelled, task) if by_event else {}
    for kind, groups in (("lang", langs), ("event", per_event)):
        for name, lev in groups.items():
            click.echo(
                f"  {kind} {name:>8}: n {lev.n:4d}  accuracy {lev.accuracy:.4f}  "
                f"macro-F1 {lev.macro_f1:.4f}  ECE {lev.ece:.4f}"
            )
    named = [lev for name, lev in per_event.items() if name != "unknown"]
    if named:  # events without an event field are listed, not averaged in
        mean = sum(lev.macro_f1 for lev in named) / len(named)
        click.echo(f"  mean macro-F1 over {len(named)} events: {mean:.4f}")
    if json_out is not None:
        doc = {"data": str(data), "task": task, "model": info.model_dump(), **ev.to_dict()}
        if by_lang:
            doc["by_lang"] = {lang: lev.to_dict() for lang, lev in langs.items()}
        if by_event:
            doc["by_event"] = {name: lev.to_dict() for name, lev in per_event.items()}
        json_out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")


@click.command("load-crisismmd")
@click.option(
    "--split",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    required=True,
    help="a CrisisMMD split TSV",
)
@click.option("--task", default="informative", show_default=True, help="task of its labels")
@click.option("--out", type=click.Path(path_type=Path), help="write InputEvents as JSONL here")
@click.option("--topic", help="or produce them to this topic")
@click.option("--bootstrap", help="Kafka bootstrap servers (CRISIS_BOOTSTRAP_SERVERS)")
@click.option("--partitions", default=3, show_default=True, help="when creating --topic")
@click.option("--limit", type=int, help="only the first N tweets")
def load_crisismmd(
    split: Path,
    task: str,
    out: Path | None,
    topic: str | None,
    bootstrap: str | None,
    partitions: int,
    limit: int | None,
) -> None:
    """Turn a CrisisMMD split into InputEvents with gold labels (id = tweet id, created_at =
    2017-09-01T00:00:00Z + row index seconds; Kafka record timestamps are the load time)."""
    from stream.replay.gold import crisismmd_events, produce_events, write_jsonl

    if (out is None) == (topic is None):
        raise click.UsageError("give exactly one of --out or --topic")
    events = crisismmd_events(split, task, limit=limit)
    if out is not None:
        write_jsonl(events, out)
        click.echo(f"wrote {len(events)} events to {out}")
    else:
        settings = _settings(bootstrap)
        assert topic is not None
        produce_events(settings.kafka_common(), topic, events, partitions)
        click.echo(f"produced {len(events)} events to {topic} on {settings.bootstrap_servers}")


@click.command("load-corpus")
@datasets_root_option
@click.option(
    "--source",
    "sources",
    type=click.Choice(["crisismmd", "crisislex_t26", "figure8"]),
    multiple=True,
    required=True,
    help="data set(s) to load (repeatable)",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="JSONL of InputEvents")
@click.option("--limit", type=int, help="only the first N messages")
def load_corpus_events(
    sources: tuple[str, ...], data: Path | None, out: Path, limit: int | None
) -> None:
    """Write labelled crisis messages (CrisisLexT26, Figure Eight, CrisisMMD annotations) as
    InputEvents with gold labels and their event, for `evaluate --by-event --by-lang`."""
    from stream.data.paths import datasets_root
    from stream.replay.gold import corpus_events, write_jsonl

    root = data or datasets_root()
    if root is None:
        raise click.UsageError("no datasets found: pass --data")
    events = corpus_events(root, sources, limit=limit)
    write_jsonl(events, out)
    click.echo(f"wrote {len(events)} events to {out}")
