"""The JSON the review page reads: one queued event as seen for one task, and the progress.

Spans are cleaned here, not in the browser: the page gets spans of the reviewed task only,
inside the text (offsets in code points, as the worker writes them), sorted and without
overlaps, so the script only has to cut the text where it is told.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from stream.review.state import Queued, TaskProgress
from stream.schemas import LabeledEvent, TextSpan

__all__ = ["event_view", "image_url", "progress_view"]

#: the ``meta`` key of an event that names an image the analyst's browser may load
IMAGE_URL_KEY = "image_url"


def image_url(event: LabeledEvent) -> str | None:
    """``meta.image_url`` when it is an http(s) URL. A labelled event does not carry its
    image (inline images would bloat every output), so the producer of the input says where
    a browser can find it; without one, image cells are listed instead of drawn."""
    value = event.meta.get(IMAGE_URL_KEY)
    if isinstance(value, str) and value.lower().startswith(("https://", "http://")):
        return value
    return None


def _spans(event: LabeledEvent, task: str) -> list[TextSpan]:
    length = len(event.text)
    spans = sorted(
        (s for s in event.rationale.text if s.task == task and 0 <= s.start < s.end <= length),
        key=lambda s: (s.start, s.end),
    )
    out: list[TextSpan] = []
    for span in spans:
        if not out or span.start >= out[-1].end:
            out.append(span)
    return out


def event_view(item: Queued, task: str) -> dict[str, Any]:
    """One event for ``task``: text, the model's answer, its reasons and the label buttons
    (in alphabetical order, so a key means the same label on every event)."""
    event = item.event
    shown = event.labels[task]
    return {
        "id": event.id,
        "text": event.text,
        "lang": event.lang,
        "event": event.event,
        "source": event.source,
        "created_at": event.created_at.isoformat() if event.created_at else None,
        "task": task,
        "label": shown.label,
        "score": shown.score,
        "scores": shown.scores,
        "needs_review": shown.needs_review,
        "choices": sorted({shown.label, *shown.scores}),
        "tasks": {t: {"label": v.label, "score": v.score} for t, v in event.labels.items()},
        "spans": [
            {"start": s.start, "end": s.end, "token": s.token, "weight": s.weight}
            for s in _spans(event, task)
        ],
        "cells": [
            {"x": c.x, "y": c.y, "w": c.w, "h": c.h, "weight": c.weight, "concept": c.concept}
            for c in event.rationale.image
            if c.task == task
        ],
        "image_url": image_url(event),
        "image_error": event.image_error,
        "model": event.model.model_dump(),
    }


def progress_view(progress: dict[str, TaskProgress], today: date) -> dict[str, Any]:
    return {
        "day": today.isoformat(),
        "tasks": {
            task: {
                "queue": p.queue,
                "answered": p.answered,
                "answered_today": p.answered_today,
                "agreement": p.agreement,
            }
            for task, p in progress.items()
        },
    }
