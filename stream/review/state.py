"""What the review page knows: the queued events and every live answer, folded from two topics.

The page owns no data. Its state is a fold over the review topic (events) and the feedback
topic (answers and their retractions), both read from the beginning at every start: progress
survives a restart, and an answer given anywhere (another page, another tool) takes its event
off the queue here too.

A task's queue holds the events that carry the task, have text and have no live answer for
that task, least confident first: ordered by *that task's* top score, the label the analyst is
asked to confirm (an event's other tasks wait in their own queues). Ties keep arrival order.
The first copy of an event id wins: upstream delivery is at-least-once, and a later copy must
not change what an analyst is looking at.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date

from stream.schemas import FeedbackEvent, LabeledEvent, Origin

__all__ = ["Queued", "ReviewState", "TaskProgress"]


@dataclass(frozen=True)
class Queued:
    """An event of the review topic and where it was read (the answer's ``origin``).

    The event is held as its JSON (about 2 KB) and parsed when shown or answered: the parsed
    model takes seven times the memory, and only a page of events is looked at at a time."""

    raw: bytes
    tasks: frozenset[str]
    where: Origin

    @classmethod
    def of(cls, event: LabeledEvent, where: Origin) -> Queued:
        raw = event.model_dump_json(exclude={"timing_ms", "worker"}).encode()
        return cls(raw, frozenset(event.labels), where)

    @property
    def event(self) -> LabeledEvent:
        return LabeledEvent.model_validate_json(self.raw)


@dataclass(frozen=True)
class TaskProgress:
    """One task's figures: answers count once per (event, annotator), the latest winning."""

    queue: int
    answered: int
    answered_today: int
    agreed: int

    @property
    def agreement(self) -> float | None:
        """Share of answers equal to the label the model gave; None without answers."""
        return self.agreed / self.answered if self.answered else None


class ReviewState:
    """Events by id, each task's queue, and live answers; safe to share between the consumer
    thread and the web handlers (one lock, short critical sections)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, Queued] = {}
        self._order: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
        self._answers: dict[str, FeedbackEvent] = {}  # live answers by id
        self._seen: set[str] = set()  # every feedback id applied: a re-read is a no-op
        self._retracted: set[str] = set()
        self._answered: Counter[tuple[str, str]] = Counter()  # live answers per (event, task)
        self._pending: Counter[str] = Counter()  # queue length per task
        self.without_text = 0

    def add_event(self, event: LabeledEvent, where: Origin) -> bool:
        """Queue ``event`` for each of its tasks; False for a copy of a known id or an event
        without text (an answer must carry the text it is about)."""
        with self._lock:
            if event.id in self._events:
                return False
            if not event.text.strip():
                self.without_text += 1
                return False
            seq = len(self._events)
            self._events[event.id] = Queued.of(event, where)
            for task, shown in event.labels.items():
                bisect.insort(self._order[task], (shown.score, seq, event.id))
                if not self._answered[(event.id, task)]:
                    self._pending[task] += 1
            return True

    def apply(self, feedback: FeedbackEvent) -> bool:
        """Apply an answer or a retraction once (by id); False when already applied."""
        with self._lock:
            if feedback.id in self._seen:
                return False
            self._seen.add(feedback.id)
            if feedback.retracts is not None:
                self._retracted.add(feedback.retracts)
                undone = self._answers.pop(feedback.retracts, None)
                if undone is not None:
                    self._count(undone, -1)
            elif feedback.id not in self._retracted:
                at = feedback.at if feedback.at.tzinfo else feedback.at.replace(tzinfo=UTC)
                self._answers[feedback.id] = feedback.model_copy(update={"at": at})
                self._count(feedback, +1)
            return True

    def _count(self, answer: FeedbackEvent, step: int) -> None:
        key = (answer.event_id, answer.task)
        before = self._answered[key]
        self._answered[key] = before + step
        queued = self._events.get(answer.event_id)
        if queued is None or answer.task not in queued.tasks:
            return
        if before == 0 and step > 0:
            self._pending[answer.task] -= 1
        elif before + step == 0:
            self._pending[answer.task] += 1

    def queue(self, task: str, limit: int) -> tuple[list[Queued], int]:
        """The first ``limit`` events of ``task``'s queue and the queue's length."""
        with self._lock:
            out: list[Queued] = []
            for _, _, event_id in self._order.get(task, []):
                if len(out) >= limit:
                    break
                if not self._answered[(event_id, task)]:
                    out.append(self._events[event_id])
            return out, self._pending[task]

    def get(self, event_id: str) -> Queued | None:
        with self._lock:
            return self._events.get(event_id)

    def answer(self, feedback_id: str) -> FeedbackEvent | None:
        """A live answer by id (None when unknown or retracted)."""
        with self._lock:
            return self._answers.get(feedback_id)

    def was_retracted(self, feedback_id: str) -> bool:
        with self._lock:
            return feedback_id in self._retracted

    def progress(self, today: date) -> dict[str, TaskProgress]:
        """Per task seen on events or answers; ``today`` is a UTC date."""
        with self._lock:
            latest: dict[tuple[str, str, str], FeedbackEvent] = {}
            for answer in self._answers.values():
                key = (answer.event_id, answer.task, answer.annotator)
                if key not in latest or answer.at >= latest[key].at:
                    latest[key] = answer
            counts: dict[str, Counter[str]] = defaultdict(Counter)
            for answer in latest.values():
                c = counts[answer.task]
                c["answered"] += 1
                c["today"] += answer.at.astimezone(UTC).date() == today
                c["agreed"] += answer.label == answer.shown.get(answer.task)
            tasks = sorted({*self._order, *counts})
            return {
                t: TaskProgress(
                    queue=self._pending[t],
                    answered=counts[t]["answered"],
                    answered_today=counts[t]["today"],
                    agreed=counts[t]["agreed"],
                )
                for t in tasks
            }

    def sizes(self) -> dict[str, int]:
        """How much is held: for the health answer and the logs."""
        with self._lock:
            return {"events": len(self._events), "answers": len(self._answers)}
