"""Event schemas: what comes in, what goes out, and what goes to the dead-letter topic.

Pydantic models double as the published JSON Schema (``crisis-stream schema``), so a
downstream team can validate the topics they subscribe to.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DeadLetter",
    "ErrorInfo",
    "FeedbackEvent",
    "ImageCell",
    "ImageRef",
    "InputEvent",
    "LabeledEvent",
    "ModelInfo",
    "Origin",
    "Rationale",
    "RationaleLink",
    "TaskLabel",
    "TextSpan",
    "WordMark",
    "json_schemas",
]


class ImageRef(BaseModel):
    """Exactly one of inline base64 bytes, a local path, or a URL (fetching is off by default)."""

    model_config = ConfigDict(extra="forbid")
    b64: str | None = None
    path: str | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageRef:
        if sum(v is not None for v in (self.b64, self.path, self.url)) != 1:
            raise ValueError("image needs exactly one of b64, path, url")
        return self


class InputEvent(BaseModel):
    """A social-media post to label. ``gold`` labels are for backtests, never for the model."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=256)
    text: str = ""
    lang: str | None = None
    created_at: datetime | None = None
    source: str | None = None
    event: str | None = None
    image: ImageRef | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    gold: dict[str, str] | None = None

    @model_validator(mode="after")
    def _has_content(self) -> InputEvent:
        if not self.text.strip() and self.image is None:
            raise ValueError("event has neither text nor image")
        return self


class Origin(BaseModel):
    """Where an event was read: joins a replayed backtest to live output event by event."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None = None


class TaskLabel(BaseModel):
    label: str
    score: float
    scores: dict[str, float]
    calibrated: bool = True
    needs_review: bool = False
    #: this task's exact share of the fused logit per modality (sums to 1); the event-level
    #: ``modality`` is the mean over tasks, which hides a task that ignores the image
    modality: dict[str, float] = Field(default_factory=dict)


class TextSpan(BaseModel):
    """A word of the input text and its signed effect on the task's calibrated label logit
    (its exact share relative to the text's mean token: > 0 argued for the label)."""

    task: str
    label: str
    start: int
    end: int
    token: str
    weight: float


class ImageCell(BaseModel):
    """A cell of the image feature grid, as a box in original image pixels."""

    task: str
    label: str
    x: int
    y: int
    w: int
    h: int
    weight: float
    concept: str | None = None


class RationaleLink(BaseModel):
    text_span: list[int]
    image_cell: list[int]
    weight: float


class Rationale(BaseModel):
    text: list[TextSpan] = Field(default_factory=list)
    image: list[ImageCell] = Field(default_factory=list)
    links: list[RationaleLink] = Field(default_factory=list)


class ModelInfo(BaseModel):
    bundle: str
    version: str
    sha256: str
    quantization: str


class LabeledEvent(BaseModel):
    """The published result for one input event (key = ``id``)."""

    id: str
    text: str
    lang: str | None = None
    source: str | None = None
    event: str | None = None
    created_at: datetime | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    gold: dict[str, str] | None = None
    labels: dict[str, TaskLabel]
    needs_review: bool
    modality: dict[str, float]
    rationale: Rationale
    image_error: str | None = None
    model: ModelInfo
    origin: Origin
    worker: str | None = None
    timing_ms: dict[str, float] = Field(default_factory=dict)


class ErrorInfo(BaseModel):
    kind: str
    message: str


class DeadLetter(BaseModel):
    """A record that could not be labelled, with the reason and its raw bytes (base64; the
    first 256 KiB of a larger record, which stays readable at ``origin``)."""

    id: str | None = None
    error: ErrorInfo
    raw_b64: str
    raw_bytes: int | None = Field(None, description="size of the whole raw record")
    raw_sha256: str | None = Field(None, description="sha256 of the whole raw record")
    raw_truncated: bool = Field(
        False,
        description="raw_b64 holds only the first 256 KiB (none at all when the dead-letter "
        "topic refused the copy; the record stays readable at origin)",
    )
    origin: Origin
    at: datetime


class WordMark(BaseModel):
    """An analyst's mark on a rationale word: was it a right reason for the label?"""

    model_config = ConfigDict(extra="forbid")
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    token: str = Field(max_length=256)
    right: bool


class FeedbackEvent(BaseModel):
    """An analyst's answer about one labelled event (topic ``crisis.events.feedback``, key =
    ``event_id``).

    ``text`` travels with the answer so that a correction is a self-contained training
    example: the adaptation service never has to find the event again. ``retracts`` names an
    earlier answer (its ``id``) that this one undoes; an undo carries no ``label``. Of several
    answers by one annotator for one (event, task), the latest counts.
    """

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=128, description="unique id of this answer")
    event_id: str = Field(min_length=1, max_length=256)
    task: str = Field(min_length=1, max_length=64)
    label: str | None = Field(None, max_length=128, description="the label the analyst chose")
    retracts: str | None = Field(None, max_length=128, description="id of an answer undone")
    text: str = Field(max_length=100_000, description="the event's text, as shown")
    lang: str | None = None
    event: str | None = Field(None, description="the disaster the event belongs to")
    words: list[WordMark] = Field(default_factory=list, max_length=200)
    annotator: str = Field(min_length=1, max_length=128)
    at: datetime
    model: ModelInfo = Field(description="the model whose output the analyst was shown")
    shown: dict[str, str] = Field(
        default_factory=dict, description="the label the model gave, by task, as shown"
    )
    origin: Origin | None = Field(None, description="where the labelled event was read")

    @model_validator(mode="after")
    def _label_or_retraction(self) -> FeedbackEvent:
        if (self.label is None) == (self.retracts is None):
            raise ValueError("feedback needs exactly one of label (an answer) or retracts (undo)")
        if not self.text.strip():
            raise ValueError("feedback has an empty text")
        if any(w.end <= w.start or w.end > len(self.text) for w in self.words):
            raise ValueError("a word mark lies outside the text")
        return self


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas of the four wire formats, keyed by file name."""
    return {
        "input_event.schema.json": InputEvent.model_json_schema(),
        "labeled_event.schema.json": LabeledEvent.model_json_schema(),
        "dead_letter.schema.json": DeadLetter.model_json_schema(),
        "feedback_event.schema.json": FeedbackEvent.model_json_schema(),
    }
