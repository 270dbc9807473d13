"""Offline evaluation: label gold-labelled events with :meth:`Pipeline.label` and score them.

No broker and no worker loop: the events go straight through the shared pipeline in fixed-size
batches, so ``crisis-stream evaluate`` is the quick reference a backtest's numbers are checked
against (both score with :func:`stream.evaluation.metrics.evaluate_predictions`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from stream.errors import ConfigError
from stream.evaluation.scoring import Evaluation, evaluate_predictions
from stream.pipeline import Pipeline
from stream.schemas import InputEvent, LabeledEvent, Origin

__all__ = [
    "check_task",
    "label_events",
    "score_by_event",
    "score_by_language",
    "score_grouped",
    "score_labelled",
]


def check_task(pipeline: Pipeline, task: str) -> None:
    """Refuse, before any event is labelled, a task the bundle has no head for."""
    if task not in {h.task for h in pipeline.bundle.heads}:
        tasks = [h.task for h in pipeline.bundle.heads]
        raise ConfigError(f"bundle has no {task!r} head (tasks: {tasks})")


def label_events(
    pipeline: Pipeline,
    events: Sequence[InputEvent],
    batch_size: int = 32,
    source: str = "evaluate",
    on_batch: Callable[[int], None] | None = None,
) -> list[LabeledEvent]:
    """Label ``events`` in input order, ``batch_size`` at a time; origin offset = index."""
    out: list[LabeledEvent] = []
    for start in range(0, len(events), batch_size):
        batch = events[start : start + batch_size]
        origins = [Origin(topic=source, partition=0, offset=start + i) for i in range(len(batch))]
        out += pipeline.label(batch, origins)
        if on_batch is not None:
            on_batch(len(out))
    return out


def score_labelled(labelled: Sequence[LabeledEvent], task: str) -> Evaluation:
    """Score the events that have both a gold and a predicted label for ``task``."""
    scored = [e for e in labelled if e.gold and task in e.gold and task in e.labels]
    if not scored:
        raise ConfigError(f"no event has both a gold and a predicted {task!r} label")
    return evaluate_predictions(
        [e.gold[task] for e in scored if e.gold],
        [e.labels[task].label for e in scored],
        [e.labels[task].score for e in scored],
        list(scored[0].labels[task].scores),
    )


def score_grouped(
    labelled: Sequence[LabeledEvent], task: str, key: Callable[[LabeledEvent], str | None]
) -> dict[str, Evaluation]:
    """:func:`score_labelled` per group (``key`` of each event; "unknown" when None), groups
    sorted."""
    groups: dict[str, list[LabeledEvent]] = {}
    for e in labelled:
        if e.gold and task in e.gold and task in e.labels:
            groups.setdefault(key(e) or "unknown", []).append(e)
    return {name: score_labelled(groups[name], task) for name in sorted(groups)}


def score_by_language(labelled: Sequence[LabeledEvent], task: str) -> dict[str, Evaluation]:
    """Per ``lang``: a multilingual bundle's figure over all events can hide one language it
    fails on."""
    return score_grouped(labelled, task, lambda e: e.lang)


def score_by_event(labelled: Sequence[LabeledEvent], task: str) -> dict[str, Evaluation]:
    """Per ``event``: a figure pooled over disasters hides the one it fails on."""
    return score_grouped(labelled, task, lambda e: e.event)
