"""Backtest: label a range with bundle A (and B), join the outputs event by event, and compare.

Outputs are joined on their origin ``(topic, partition, offset)`` — the input record both sides
read — falling back to the event id (e.g. against a labelled topic fed from elsewhere).
Per task the summary holds the agreement, the A-label x B-label matrix (label flips), and where
events carry ``gold`` labels each side's accuracy, macro-F1, per-class F1, confusion matrix and
ECE, computed on the same (joined) events so the two sides are comparable, with bootstrap
intervals, and B minus A as a paired bootstrap (:mod:`stream.evaluation.intervals`): whether
B's gain is larger than the noise of the events replayed.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from stream.evaluation.intervals import bootstrap_difference
from stream.evaluation.metrics import label_order
from stream.evaluation.scoring import evaluate_predictions
from stream.replay.reader import Bound, read_range
from stream.replay.run import SinkTarget, replay
from stream.runtime import build_pipeline
from stream.settings import Settings

__all__ = [
    "Joined",
    "Outcome",
    "compare_task",
    "gate_failures",
    "gold_difference",
    "gold_metrics",
    "join",
    "parse_outcome",
    "read_outcomes",
    "run_backtest",
    "scan_outcomes",
    "summarize",
]

log = logging.getLogger(__name__)

OriginKey = tuple[str, int, int]


@dataclass(frozen=True)
class Outcome:
    """What a backtest needs of one labelled event."""

    id: str
    origin: OriginKey | None
    labels: dict[str, tuple[str, float]]
    label_sets: dict[str, list[str]]
    gold: dict[str, str]
    model: str


def parse_outcome(raw: bytes | str) -> Outcome | None:
    """A labelled event (JSON) as an :class:`Outcome`; None for anything else (not JSON, or
    JSON without the fields of a labelled event, or with fields of the wrong shape)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or "labels" not in doc or "id" not in doc:
        return None
    try:
        return _outcome(doc)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _outcome(doc: dict[str, Any]) -> Outcome:
    """Raises on a field of the wrong shape: a topic fed from elsewhere may hold anything."""
    o = doc.get("origin") or {}
    origin = None
    if {"topic", "partition", "offset"} <= o.keys():
        origin = (str(o["topic"]), int(o["partition"]), int(o["offset"]))
    m = doc.get("model") or {}
    gold = dict(doc.get("gold") or {})
    if not all(isinstance(g, str) for g in gold.values()):
        raise TypeError("gold labels must be strings")
    return Outcome(
        id=str(doc["id"]),
        origin=origin,
        labels={t: _label(v) for t, v in doc["labels"].items()},
        label_sets={t: list(_scores(v)) for t, v in doc["labels"].items()},
        gold=gold,
        model=f"{m.get('bundle', '?')} {m.get('version', '?')} ({m.get('quantization', '?')})",
    )


def _label(task_label: dict[str, Any]) -> tuple[str, float]:
    label = task_label["label"]
    if not isinstance(label, str):
        raise TypeError("a label must be a string")
    return label, float(task_label.get("score", 0.0))


def _scores(task_label: dict[str, Any]) -> dict[str, Any]:
    scores = task_label.get("scores", {})
    if not isinstance(scores, dict):
        raise TypeError("scores must be an object")
    return scores


def read_outcomes(lines: Iterable[bytes | str | None]) -> list[Outcome]:
    """Parse labelled events; a re-delivered event (same origin, or same id without origin)
    counts once, the last copy winning (at-least-once topics hold duplicates)."""
    return scan_outcomes(lines)[0]


def scan_outcomes(lines: Iterable[bytes | str | None]) -> tuple[list[Outcome], int]:
    """:func:`read_outcomes`, and how many non-empty lines were skipped as not labelled
    events."""
    latest: dict[object, Outcome] = {}
    skipped = 0
    for raw in lines:
        if raw is None or not raw.strip():
            continue
        oc = parse_outcome(raw)
        if oc is None:
            skipped += 1
        else:
            latest[oc.origin or ("id", oc.id)] = oc
    return list(latest.values()), skipped


@dataclass
class Joined:
    pairs: list[tuple[Outcome, Outcome]] = field(default_factory=list)
    by_origin: int = 0
    by_id: int = 0
    only_a: int = 0
    only_b: int = 0


def join(a: list[Outcome], b: list[Outcome]) -> Joined:
    """Pair each A outcome with the B outcome of the same origin, else of the same id."""
    by_origin = {o.origin: i for i, o in enumerate(b) if o.origin is not None}
    by_id = {o.id: i for i, o in enumerate(b)}
    used: set[int] = set()
    out = Joined()
    for oa in a:
        j = by_origin.get(oa.origin) if oa.origin is not None else None
        if j is not None and j not in used:
            out.by_origin += 1
        else:
            j = by_id.get(oa.id)
            if j is None or j in used:
                out.only_a += 1
                continue
            out.by_id += 1
        used.add(j)
        out.pairs.append((oa, b[j]))
    out.only_b = len(b) - len(used)
    return out


def _model_labels(outcomes: Iterable[Outcome], task: str) -> list[str]:
    for o in outcomes:
        if task in o.label_sets:
            return o.label_sets[task]
    return []


def compare_task(pairs: list[tuple[Outcome, Outcome]], task: str) -> dict[str, Any]:
    """Agreement of A and B on ``task`` and the A-label x B-label counts."""
    both = [
        (a.labels[task][0], b.labels[task][0])
        for a, b in pairs
        if task in a.labels and task in b.labels
    ]
    counts = Counter(both)
    labels_a = label_order(_model_labels((p[0] for p in pairs), task), [la for la, _ in both])
    labels_b = label_order(_model_labels((p[1] for p in pairs), task), [lb for _, lb in both])
    flips: dict[str, dict[str, int]] = {}
    for (la, lb), c in sorted(counts.items()):
        if la != lb:
            flips.setdefault(la, {})[lb] = c
    agree = sum(c for (la, lb), c in counts.items() if la == lb)
    return {
        "n": len(both),
        "agreement": agree / len(both) if both else None,
        "flips_total": len(both) - agree,
        "flips": flips,
        "matrix": {
            "labels_a": labels_a,
            "labels_b": labels_b,
            "counts": [[counts.get((la, lb), 0) for lb in labels_b] for la in labels_a],
        },
    }


def gold_metrics(outcomes: list[Outcome], task: str) -> dict[str, Any] | None:
    """Accuracy, macro-F1, per-class F1, confusion, ECE on the events with a gold ``task``."""
    scored = [o for o in outcomes if task in o.gold and task in o.labels]
    if not scored:
        return None
    ev = evaluate_predictions(
        [o.gold[task] for o in scored],
        [o.labels[task][0] for o in scored],
        [o.labels[task][1] for o in scored],
        _model_labels(scored, task),
    )
    return ev.to_dict()


def gold_difference(pairs: list[tuple[Outcome, Outcome]], task: str) -> dict[str, Any] | None:
    """B minus A in accuracy and macro-F1 on the joined events where both sides labelled
    ``task`` and the event has its gold label, with paired bootstrap intervals."""
    scored = [(a, b) for a, b in pairs if task in a.gold and task in a.labels and task in b.labels]
    if not scored:
        return None
    gold = [a.gold[task] for a, _ in scored]
    pred_a = [a.labels[task][0] for a, _ in scored]
    pred_b = [b.labels[task][0] for _, b in scored]
    labels = label_order(_model_labels((a for a, _ in scored), task), gold, pred_a, pred_b)
    diffs = bootstrap_difference(gold, pred_a, pred_b, labels)
    return {"n": len(scored), **{m: asdict(d) for m, d in diffs.items()}}


def gate_failures(summary: dict[str, Any], max_drop: float) -> list[str]:
    """Why a candidate A may not replace B: the tasks where the paired interval allows A's
    macro-F1 to sit more than ``max_drop`` below B's (B − A upper end > ``max_drop``). A gate
    with no gold-labelled task to judge fails too: passing it would say nothing."""
    judged = {
        t: e["gold_difference"] for t, e in summary["tasks"].items() if e.get("gold_difference")
    }
    if not judged:
        return ["no task has gold labels on both sides: nothing to judge the candidate on"]
    out = []
    for task, diff in sorted(judged.items()):
        worst = diff["macro_f1"]["high"]
        if worst > max_drop:
            out.append(
                f"{task}: A's macro-F1 may be up to {worst:.4f} below B's on these "
                f"{diff['n']} events (allowed {max_drop}; B − A {diff['macro_f1']['delta']:+.4f})"
            )
    return out


def summarize(
    a: list[Outcome],
    b: list[Outcome] | None,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """The machine-readable backtest summary (``summary.json``)."""
    sides: dict[str, Any] = {"a": {**meta.get("a", {}), "n": len(a), "models": _models(a)}}
    tasks = sorted({t for o in a for t in o.labels})
    summary: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **{k: v for k, v in meta.items() if k not in ("a", "b")},
        "sides": sides,
        "tasks": {},
    }
    if b is None:
        for task in tasks:
            summary["tasks"][task] = {"gold": {"a": gold_metrics(a, task)}}
        return summary
    sides["b"] = {**meta.get("b", {}), "n": len(b), "models": _models(b)}
    joined = join(a, b)
    summary["join"] = {
        "joined": len(joined.pairs),
        "by_origin": joined.by_origin,
        "by_id": joined.by_id,
        "only_a": joined.only_a,
        "only_b": joined.only_b,
    }
    ja, jb = [p[0] for p in joined.pairs], [p[1] for p in joined.pairs]
    for task in tasks:
        entry = compare_task(joined.pairs, task)
        entry["gold"] = {"a": gold_metrics(ja, task), "b": gold_metrics(jb, task)}
        entry["gold_difference"] = gold_difference(joined.pairs, task)
        summary["tasks"][task] = entry
    return summary


def _models(outcomes: list[Outcome]) -> dict[str, int]:
    return dict(Counter(o.model for o in outcomes).most_common())


def _side_settings(settings: Settings, bundle: Path, precision: str | None) -> Settings:
    return settings.model_copy(update={"bundle": bundle, "precision": precision})


def run_backtest(
    settings: Settings,
    topic: str,
    start: Bound,
    end: Bound,
    out_dir: Path,
    bundle_a: Path,
    precision_a: str | None = None,
    bundle_b: Path | None = None,
    precision_b: str | None = None,
    against_topic: str | None = None,
    idle_timeout_s: float = 30.0,
    progress: TextIO | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Replay ``topic[start:end)`` with A (and B) into ``out_dir``, or join A against an existing
    labelled topic; write ``report.html`` and ``summary.json``; return the summary."""
    from stream.replay.report import write_report

    out_dir.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"topic": topic, "range": {"from": str(start), "to": str(end)}}

    def run_side(name: str, bundle: Path, precision: str | None) -> list[Outcome]:
        s = _side_settings(settings, bundle, precision)
        path = out_dir / f"{name}.labeled.jsonl"
        res = replay(
            s,
            topic,
            start,
            end,
            SinkTarget("file", str(path)),
            build_pipeline(s),
            idle_timeout_s,
            progress,
            quiet,
        )
        meta[name] = {
            "bundle": str(bundle),
            "precision": precision,
            "output": path.name,
            "replayed": res.consumed,
            "dead_letters": res.stats.dead_letters,
            "complete": res.complete,
            "seconds": round(res.seconds, 2),
        }
        return read_outcomes(path.read_bytes().splitlines())

    a = run_side("a", bundle_a, precision_a)
    b: list[Outcome] | None = None
    if bundle_b is not None:
        b = run_side("b", bundle_b, precision_b)
    elif against_topic is not None:
        keys = {o.origin for o in a} | {o.id for o in a}
        recs = read_range(settings.kafka_common(), against_topic, idle_timeout_s=idle_timeout_s)
        read, skipped = scan_outcomes(r.value for r in recs)
        b = [o for o in read if o.origin in keys or o.id in keys]
        meta["b"] = {"topic": against_topic}
        meta["against_skipped"] = skipped
        if skipped:
            log.warning(
                "skipped %d records of %s that are not labelled events", skipped, against_topic
            )
    summary = summarize(a, b, meta)
    write_report(summary, out_dir)
    return summary
