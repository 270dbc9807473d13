"""Analysts' answers for the adaptation tests: on this disaster, routine traffic reports (which
the shipped model calls informative) are not informative, flood reports are."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from stream.schemas import FeedbackEvent, ModelInfo

ROADS = ["north", "south", "east", "west", "main", "ring", "old", "new", "harbour", "airport"]
TIMES = ["this evening", "this morning", "at noon", "tonight"]
PLACES = ["river district", "old town", "harbour", "valley", "north bank", "market square"]


def traffic(i: int) -> str:
    road = ROADS[i % len(ROADS)]
    return f"Traffic report: the {road} road near the stadium is busy {TIMES[i % 4]} #{i}"


def flood(i: int) -> str:
    return f"Flood water rising in the {PLACES[i % len(PLACES)]}, families evacuated #{i}"


def answer(
    text: str,
    label: str | None,
    event_id: str | None = None,
    task: str = "informative",
    annotator: str = "ana",
    retracts: str | None = None,
) -> FeedbackEvent:
    return FeedbackEvent(
        id=uuid.uuid4().hex,
        event_id=event_id or uuid.uuid4().hex[:12],
        task=task,
        label=label,
        retracts=retracts,
        text=text,
        annotator=annotator,
        at=datetime.now(UTC),
        model=ModelInfo(bundle="e5-crisis", version="1", sha256="0" * 64, quantization="int8"),
    )


def answers(n: int) -> list[FeedbackEvent]:
    """``n`` answers, three traffic reports (not informative) for each flood (informative)."""
    out = []
    for i in range(n):
        if i % 4 == 3:
            out.append(answer(flood(i), "informative"))
        else:
            out.append(answer(traffic(i), "not_informative"))
    return out
