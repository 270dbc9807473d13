"""What one labelled event becomes on the wire: its serialised value, under the size cap, and
the topics it goes to (the labelled topic, the review topic, per-label routes)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from stream.errors import InvalidEvent
from stream.schemas import LabeledEvent
from stream.settings import Settings

__all__ = ["Planned", "plan_outputs"]


@dataclass(frozen=True)
class Planned:
    """The outputs of one labelled event: ``topics`` all get ``key``/``value``; ``review`` and
    ``routed`` say which copies were added (for the counters)."""

    key: bytes
    value: bytes
    topics: list[str]
    review: bool
    routed: int


def plan_outputs(out: LabeledEvent, settings: Settings) -> Planned:
    """Serialise ``out`` and list its topics. Raises :class:`InvalidEvent` when it cannot be
    serialised or is larger than ``max_output_bytes``: a producer would refuse it, and a crash
    here would re-read and re-crash on the same record forever."""
    s = settings
    try:
        value = orjson.dumps(out.model_dump(mode="json"))
    except (TypeError, ValueError) as exc:  # e.g. nesting orjson or pydantic refuse
        msg = f"labelled output could not be serialised: {exc}"[:300]
        raise InvalidEvent("processing_error", msg) from exc
    if len(value) > s.max_output_bytes:
        msg = f"labelled output is {len(value)} bytes, limit {s.max_output_bytes}"
        raise InvalidEvent("too_large", msg)
    topics = [s.output_topic]
    review = bool(out.needs_review and s.review_topic)
    if review:
        assert s.review_topic is not None
        topics.append(s.review_topic)
    routes = []
    if s.route_labels:
        routes = [
            f"{s.output_topic}.{task}.{out.labels[task].label}"
            for task in s.route_tasks
            if task in out.labels
        ]
    return Planned(out.id.encode(), value, topics + routes, review, len(routes))
