"""Labelled events and answers for the review page's tests, built by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from stream.schemas import (
    FeedbackEvent,
    ImageCell,
    LabeledEvent,
    ModelInfo,
    Origin,
    Rationale,
    TaskLabel,
    TextSpan,
)

INF, NOT_INF = "informative", "not_informative"
HUM = ("affected_individuals", "infrastructure_and_utility_damage", "not_humanitarian")
MODEL = ModelInfo(bundle="e5-crisis", version="9.8.7", sha256="ab" * 32, quantization="int8")
WHERE = Origin(topic="crisis.events.review", partition=0, offset=7, timestamp=1_700_000_000_000)


def task_label(label: str, score: float, labels: tuple[str, ...]) -> TaskLabel:
    rest = (1.0 - score) / (len(labels) - 1)
    scores = {name: (score if name == label else rest) for name in labels}
    return TaskLabel(label=label, score=score, scores=scores, needs_review=score < 0.6)


def labeled(
    eid: str,
    text: str,
    informative: float,
    humanitarian: float = 0.5,
    words: dict[str, float] | None = None,
    cells: int = 0,
    **fields: Any,
) -> LabeledEvent:
    """An event labelled informative with the given scores; ``words`` (token -> weight) become
    rationale spans of the informative task at their code-point offsets in ``text``."""
    spans = [
        TextSpan(
            task=INF, label=INF, start=text.index(w), end=text.index(w) + len(w), token=w, weight=v
        )
        for w, v in (words or {}).items()
    ]
    image = [
        ImageCell(task=INF, label=INF, x=10 + 40 * i, y=10, w=30, h=30, weight=0.2 - 0.3 * i)
        for i in range(cells)
    ]
    return LabeledEvent(
        id=eid,
        text=text,
        lang="en",
        event="river_flood_2026",
        labels={
            INF: task_label(INF, informative, (INF, NOT_INF)),
            "humanitarian": task_label(HUM[1], humanitarian, HUM),
        },
        needs_review=True,
        modality={"text": 1.0, "image": 0.0},
        rationale=Rationale(text=spans, image=image),
        model=MODEL,
        origin=Origin(topic="crisis.events.raw", partition=1, offset=3),
        **fields,
    )


def answer(
    fid: str,
    eid: str,
    label: str | None,
    annotator: str = "ana",
    at: datetime | None = None,
    task: str = INF,
    retracts: str | None = None,
    shown: str = INF,
) -> FeedbackEvent:
    return FeedbackEvent(
        id=fid,
        event_id=eid,
        task=task,
        label=label,
        retracts=retracts,
        text="some text",
        annotator=annotator,
        at=at or datetime.now(UTC),
        model=MODEL,
        shown={task: shown},
    )
