"""The review page's parts put together: the state, the follower that fills it, and the two
operations that write to the feedback topic (answer and undo).

A write is applied to the state only after the broker acknowledged it, and the follower reads
it back later as a no-op (answers are applied once, by id): the page shows what the topic
holds, and the analyst's next event never depends on the consumer catching up.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message
from pydantic import BaseModel, ValidationError

from stream.errors import ConfigError
from stream.review.answers import (
    AnswerRequest,
    RequestError,
    UndoRequest,
    build_answer,
    build_retraction,
    parse,
)
from stream.review.kafka import FeedbackProducer, TopicFollower
from stream.review.state import Queued, ReviewState
from stream.schemas import FeedbackEvent, LabeledEvent, Origin

__all__ = ["DEFAULT_PORT", "Review", "ReviewConfig"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 8091

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class ReviewConfig:
    """``kafka`` is the worker's librdkafka configuration
    (:meth:`~stream.settings.Settings.kafka_common`), security properties included."""

    kafka: Mapping[str, Any]
    review_topic: str
    feedback_topic: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    refresh_s: float = 10.0
    public_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.review_topic == self.feedback_topic:
            raise ConfigError("the review topic and the feedback topic must differ")


class Review:
    """One page instance: start, answer and undo (blocking: call them off the event loop)."""

    def __init__(
        self, config: ReviewConfig, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.config = config
        self.state = ReviewState()
        self.rejected: Counter[str] = Counter()  # undecodable records, by topic
        self._clock = clock
        self.follower = TopicFollower(
            config.kafka,
            {config.review_topic: self._on_event, config.feedback_topic: self._on_feedback},
            refresh_s=config.refresh_s,
        )
        self.producer = FeedbackProducer(config.kafka, config.feedback_topic)

    def start(self) -> None:
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()
        self.producer.close()

    def now(self) -> datetime:
        return self._clock()

    # -- reading ------------------------------------------------------------------------------
    def _on_event(self, msg: Message) -> None:
        event = self._decode(msg, LabeledEvent)
        if event is not None:
            self.state.add_event(event, _origin(msg))

    def _on_feedback(self, msg: Message) -> None:
        feedback = self._decode(msg, FeedbackEvent)
        if feedback is not None:
            self.state.apply(feedback)

    def _decode(self, msg: Message, model: type[M]) -> M | None:
        try:
            return model.model_validate_json(msg.value() or b"")
        except (ValidationError, ValueError):
            self.rejected[str(msg.topic())] += 1
            log.warning(
                "skipped a record that is not a %s",
                model.__name__,
                extra={"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()},
            )
            return None

    # -- writing ------------------------------------------------------------------------------
    def answer(self, body: Any) -> FeedbackEvent:
        """Check ``body`` (``POST /api/feedback``), produce the answer, apply it."""
        request = parse(AnswerRequest, body)
        item = self.state.get(request.event_id)
        if item is None:
            raise RequestError(404, f"no event {request.event_id!r} in the review queue")
        feedback = build_answer(request, item, self.now())
        self._publish(feedback)
        return feedback

    def undo(self, body: Any) -> tuple[FeedbackEvent, Queued | None]:
        """Retract a live answer (``POST /api/undo``); the event goes back to its queue."""
        request = parse(UndoRequest, body)
        original = self.state.answer(request.feedback_id)
        if original is None:
            if self.state.was_retracted(request.feedback_id):
                raise RequestError(409, f"answer {request.feedback_id!r} was already undone")
            raise RequestError(404, f"no answer {request.feedback_id!r}")
        retraction = build_retraction(original, request.annotator, self.now())
        self._publish(retraction)
        return retraction, self.state.get(original.event_id)

    def _publish(self, feedback: FeedbackEvent) -> None:
        self.producer.send(feedback.event_id, feedback.model_dump_json().encode())
        self.state.apply(feedback)


def _origin(msg: Message) -> Origin:
    kind, ts = msg.timestamp()
    return Origin(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        timestamp=None if kind == TIMESTAMP_NOT_AVAILABLE else ts,
    )
