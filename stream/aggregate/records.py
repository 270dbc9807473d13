"""What the aggregator reads and what it counts, kept free of faust so it is unit-testable.

The labelled topic carries ``LabeledEvent`` JSON. Decoding is *total* (a bad record becomes a
:class:`Rejected` value instead of an exception) because faust throws a value-decode error into
the agent's stream, which would stop the agent on one malformed record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Any

from faust.serializers.codecs import Codec
from pydantic import ValidationError

from stream.schemas import LabeledEvent

__all__ = [
    "KEY_SEP",
    "UNKNOWN_EVENT",
    "LabeledEventCodec",
    "Rejected",
    "count_keys",
    "decode_key",
    "encode_key",
    "event_name",
    "event_time",
    "normalize_word",
    "window_time",
    "word_keys",
]

#: Table keys are strings (stable across the JSON changelog); parts are joined by the ASCII unit
#: separator, which :func:`encode_key` removes from the parts (event names are user content).
KEY_SEP = "\x1f"
#: The event name counted for events that carry none.
UNKNOWN_EVENT = "unknown"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record of the labelled topic that is not a valid ``LabeledEvent``.

    ``kind`` is pydantic's error type (a small closed set, fit for a metric label); ``detail``
    says where.
    """

    kind: str
    detail: str


class LabeledEventCodec(Codec):
    """faust value codec: bytes -> ``LabeledEvent`` or :class:`Rejected`, never an exception."""

    def _loads(self, s: bytes) -> LabeledEvent | Rejected:
        try:
            return LabeledEvent.model_validate_json(s)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "value"
            return Rejected(str(first.get("type", "invalid")), f"{first.get('msg', '')} at {where}")

    def _dumps(self, s: Any) -> bytes:
        if isinstance(s, bytes):  # faust forwards records unchanged when repartitioning
            return s
        if not isinstance(s, LabeledEvent):
            raise TypeError(f"expected LabeledEvent or bytes, got {type(s).__name__}")
        return s.model_dump_json().encode()


def encode_key(*parts: str) -> str:
    return KEY_SEP.join(p.replace(KEY_SEP, " ") for p in parts)


def decode_key(key: str) -> tuple[str, ...]:
    return tuple(key.split(KEY_SEP))


def event_time(ev: LabeledEvent, record_ts: float | None) -> float:
    """Epoch seconds that place an event in a window.

    ``created_at`` (naive means UTC) first; else the raw input record's timestamp carried in
    ``origin`` (when the post entered the system); else the labelled record's own timestamp.
    """
    if ev.created_at is not None:
        dt = ev.created_at if ev.created_at.tzinfo else ev.created_at.replace(tzinfo=UTC)
        return dt.timestamp()
    if ev.origin.timestamp is not None and ev.origin.timestamp > 0:
        return ev.origin.timestamp / 1000.0
    if record_ts is not None:
        return record_ts
    raise ValueError(f"event {ev.id!r} has no created_at and no record timestamp")


def window_time(ev: LabeledEvent, record_ts: float | None, max_skew_s: float) -> tuple[float, bool]:
    """The time that places ``ev`` in a window, and whether it fell back to the record's.

    An event time more than ``max_skew_s`` from the record timestamp (a post dated
    9999-12-31 or 1970, a client clock gone wrong) is not trusted: it would open a window no
    page can show and no expiry reaches, so the record timestamp is used instead.
    """
    ts = event_time(ev, record_ts)
    if record_ts is not None and not abs(ts - record_ts) <= max_skew_s:
        return float(record_ts), True
    return ts, False


def count_keys(ev: LabeledEvent) -> list[str]:
    """One (event name, task, label) key per task the event was labelled for."""
    name = event_name(ev)
    return [encode_key(name, task, tl.label) for task, tl in sorted(ev.labels.items())]


def normalize_word(token: str) -> str | None:
    """Lower-case a rationale span; ``None`` for spans with no letter or digit."""
    word = token.strip().lower()
    return word if any(ch.isalnum() for ch in word) else None


def event_name(ev: LabeledEvent) -> str:
    return ev.event or UNKNOWN_EVENT


def word_keys(ev: LabeledEvent) -> list[str]:
    """(event name, task, label, word) keys for the words that pushed *toward* the predicted
    label.

    Only positive weights count (a negative word argued against the label), and a word counts
    once per event and task, so the figure reads "in how many events this word was a reason".
    """
    name = event_name(ev)
    keys: set[str] = set()
    for span in ev.rationale.text:
        predicted = ev.labels.get(span.task)
        if span.weight <= 0 or predicted is None or predicted.label != span.label:
            continue
        word = normalize_word(span.token)
        if word is not None:
            keys.add(encode_key(name, span.task, span.label, word))
    return sorted(keys)
