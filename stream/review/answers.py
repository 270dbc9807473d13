"""From an analyst's request to a :class:`~stream.schemas.FeedbackEvent`, or a reason to refuse.

Everything the adaptation service trusts comes from the queued event, not from the browser:
the text, the model and the label it showed. The browser says only which event, which task,
which label and which words; each is checked against the event, so a bad request is refused
(4xx) before anything is produced.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stream.review.state import Queued
from stream.schemas import FeedbackEvent, WordMark

__all__ = [
    "AnswerRequest",
    "RequestError",
    "UndoRequest",
    "build_answer",
    "build_retraction",
    "parse",
]

M = TypeVar("M", bound=BaseModel)


class RequestError(Exception):
    """A request the page refuses: an HTTP status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class AnswerRequest(BaseModel):
    """``POST /api/feedback``."""

    model_config = ConfigDict(extra="forbid")
    event_id: str = Field(min_length=1, max_length=256)
    task: str = Field(min_length=1, max_length=64)
    label: str = Field(min_length=1, max_length=128)
    words: list[WordMark] = Field(default_factory=list, max_length=200)
    annotator: str = Field(min_length=1, max_length=128)


class UndoRequest(BaseModel):
    """``POST /api/undo``."""

    model_config = ConfigDict(extra="forbid")
    feedback_id: str = Field(min_length=1, max_length=128)
    annotator: str = Field(min_length=1, max_length=128)


def parse(model: type[M], body: Any) -> M:
    """``body`` as ``model``, or a 400 naming each bad field (never echoing the input)."""
    if isinstance(body, dict) and isinstance(body.get("annotator"), str):
        body = {**body, "annotator": body["annotator"].strip()}
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise RequestError(400, _reasons(exc)) from None


def _reasons(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()
    )


def build_answer(request: AnswerRequest, item: Queued, now: datetime) -> FeedbackEvent:
    """The answer to produce; 400 when the task, label or a word does not fit the event."""
    event = item.event
    shown = event.labels.get(request.task)
    if shown is None:
        raise RequestError(400, f"event {event.id!r} has no task {request.task!r}")
    choices = sorted({shown.label, *shown.scores})
    if request.label not in choices:
        raise RequestError(
            400, f"label {request.label!r} is not one of {request.task}: {', '.join(choices)}"
        )
    for word in request.words:
        if event.text[word.start : word.end] != word.token:
            raise RequestError(400, f"word mark {word.start}-{word.end} is not {word.token!r}")
    return _feedback(
        id=uuid.uuid4().hex,
        event_id=event.id,
        task=request.task,
        label=request.label,
        text=event.text,
        lang=event.lang,
        event=event.event,
        words=request.words,
        annotator=request.annotator,
        at=now,
        model=event.model,
        shown={task: value.label for task, value in event.labels.items()},
        origin=item.where,
    )


def build_retraction(original: FeedbackEvent, annotator: str, now: datetime) -> FeedbackEvent:
    """The undo of ``original``: the same event, task and context, no label."""
    return _feedback(
        **original.model_dump(exclude={"id", "label", "words", "annotator", "at", "retracts"}),
        id=uuid.uuid4().hex,
        retracts=original.id,
        annotator=annotator,
        at=now,
    )


def _feedback(**fields: Any) -> FeedbackEvent:
    try:
        return FeedbackEvent(**fields)
    except ValidationError as exc:
        raise RequestError(400, _reasons(exc)) from None
