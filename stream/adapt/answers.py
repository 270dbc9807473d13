"""Analysts' answers as a training set: which answers count, and which are held back.

Feedback is at-least-once (the review page may re-send, the topic is re-read after a crash), an
analyst may change an answer, and the page's undo sends a retraction. So answers are kept by
their id (a re-delivered answer is one answer), and of one annotator's answers about one
(event, task) the latest that was not retracted counts. Answers of different annotators all
count: disagreement is information the logistic fit can weigh.

About one answer in ``HELD_BACK_EVERY`` is held back: never fitted, only used to gate the
adapted head against the one serving (the backtest gate on feedback nobody trained on). Which
one is decided by a hash of the answer's text, not by its position: every answer about the same
text (two annotators, a retweet) falls on the same side, and an undo or a changed answer never
moves an answer the serving head was trained on into the held-back set. The simulation of the
docs uses the same rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import orjson
from pydantic import ValidationError

from stream.schemas import FeedbackEvent

__all__ = ["HELD_BACK_EVERY", "Answers", "InvalidFeedback", "held_back", "parse_feedback"]

HELD_BACK_EVERY = 5


def held_back(text: str) -> bool:
    """Whether answers about ``text`` are held back for the gate (about one text in
    ``HELD_BACK_EVERY``; case and spacing do not matter)."""
    key = " ".join(text.casefold().split()).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % HELD_BACK_EVERY == 0


class InvalidFeedback(ValueError):
    """A feedback record that cannot count: it goes to the dead-letter topic with ``kind``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def parse_feedback(raw: bytes | None, labels: dict[str, list[str]]) -> FeedbackEvent:
    """The answer in ``raw``, checked against the bundle's tasks and labels."""
    if not raw:
        raise InvalidFeedback("empty", "empty feedback record")
    try:
        answer = FeedbackEvent.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        raise InvalidFeedback("not_json", f"not JSON: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise InvalidFeedback("schema", f"{where}: {first['msg']}") from exc
    if answer.task not in labels:
        raise InvalidFeedback(
            "unknown_task", f"unknown task {answer.task!r} (bundle has {list(labels)})"
        )
    if answer.label is not None and answer.label not in labels[answer.task]:
        raise InvalidFeedback(
            "unknown_label",
            f"{answer.label!r} is not a label of {answer.task} ({labels[answer.task]})",
        )
    return answer


class Answers:
    """Every answer received, in arrival order, and the ones that count per task."""

    def __init__(self) -> None:
        self._all: dict[str, FeedbackEvent] = {}

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, answer_id: object) -> bool:
        return answer_id in self._all

    def add(self, answer: FeedbackEvent) -> bool:
        """Keep ``answer``; False when an answer with its id was already kept (a re-delivery).
        A retraction of an answer never seen is refused: it could not be applied."""
        if answer.id in self._all:
            return False
        if answer.retracts is not None and answer.retracts not in self._all:
            raise InvalidFeedback(
                "unknown_retraction", f"retracts {answer.retracts!r}, never received"
            )
        self._all[answer.id] = answer
        return True

    def extend(self, answers: Iterable[FeedbackEvent]) -> None:
        for a in answers:
            self.add(a)

    def all(self) -> list[FeedbackEvent]:
        return list(self._all.values())

    def counting(self, task: str) -> list[FeedbackEvent]:
        """The answers of ``task`` that count, in the arrival order of each one's latest."""
        retracted = {a.retracts for a in self._all.values() if a.retracts is not None}
        latest: dict[tuple[str, str], FeedbackEvent] = {}
        for a in self._all.values():
            if a.task != task or a.label is None or a.id in retracted:
                continue
            key = (a.annotator, a.event_id)
            latest.pop(key, None)  # re-inserted: the order follows the latest answer
            latest[key] = a
        return list(latest.values())

    def split(self, task: str) -> tuple[list[FeedbackEvent], list[FeedbackEvent]]:
        """(fitted, held back) answers of ``task``."""
        fitted: list[FeedbackEvent] = []
        held: list[FeedbackEvent] = []
        for a in self.counting(task):
            (held if held_back(a.text) else fitted).append(a)
        return fitted, held
