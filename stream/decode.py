"""Turn raw record bytes into an :class:`InputEvent`, or a dead-letter reason.

Errors are data here: every failure becomes an :class:`InvalidEvent` with a short ``kind`` code
(``not_json``, ``schema``, ``empty``, ``too_long``, ``too_large``) so the worker can route it.

Two limits keep a bad record from crashing the worker later, where it would be re-read and crash
it again: nesting deeper than :data:`MAX_DEPTH` (the labelled output re-serialises ``meta``, and
orjson and pydantic give up at ~255 levels), and a dead letter's copy of the raw record capped
at :data:`DLQ_RAW_BYTES` (the producer refuses messages over ~1 MB; the full record stays at its
origin offset, and the dead letter carries its size and sha256).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from stream.errors import InvalidEvent
from stream.schemas import DeadLetter, ErrorInfo, InputEvent, Origin

__all__ = [
    "DLQ_RAW_BYTES",
    "MAX_DEPTH",
    "dead_letter",
    "decode_event",
    "json_id",
    "nesting_depth",
    "validate_event",
]

#: deepest JSON nesting accepted in an event (CrisisMMD-style events need 3-4)
MAX_DEPTH = 32
#: raw bytes a dead letter copies (base64 makes it 4/3 larger: well under 1 MB)
DLQ_RAW_BYTES = 256 * 1024


def _schema_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def nesting_depth(doc: Any, limit: int) -> int:
    """Depth of nested lists/dicts (a scalar is 0), counting no further than ``limit + 1``;
    iterative, so a hostile document cannot exhaust the stack."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth > limit:
                return deepest
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return deepest


def decode_event(raw: bytes | None, max_record_bytes: int, max_text_chars: int) -> InputEvent:
    """Parse and validate one record; raise :class:`InvalidEvent` with a reason code."""
    if raw is None:
        raise InvalidEvent("empty", "record has no value (tombstone)")
    if len(raw) > max_record_bytes:
        raise InvalidEvent("too_large", f"record is {len(raw)} bytes, limit {max_record_bytes}")
    try:
        doc: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", str(exc)[:300]) from None
    return validate_event(doc, max_text_chars)


def validate_event(doc: Any, max_text_chars: int) -> InputEvent:
    """Validate one parsed JSON document as an event, with :func:`decode_event`'s rules and
    reason codes (for events that arrive already parsed)."""
    if not isinstance(doc, dict):
        raise InvalidEvent("schema", f"expected a JSON object, got {type(doc).__name__}")
    if nesting_depth(doc, MAX_DEPTH) > MAX_DEPTH:
        raise InvalidEvent("schema", f"JSON nested deeper than {MAX_DEPTH} levels")
    text = doc.get("text")
    if isinstance(text, str) and len(text) > max_text_chars:
        raise InvalidEvent("too_long", f"text has {len(text)} characters, limit {max_text_chars}")
    try:
        event = InputEvent.model_validate(doc)
    except ValidationError as exc:
        kind = "empty" if "neither text nor image" in str(exc) else "schema"
        raise InvalidEvent(kind, _schema_message(exc)) from None
    if "\x00" in event.text:
        raise InvalidEvent("schema", "text contains NUL characters")
    return event


def json_id(raw: bytes) -> str | None:
    """The ``id`` of a JSON object (at most 256 characters), None when there is none; never
    raises."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("id"), str | int):
        return str(doc["id"])[:256]
    return None


def _guess_id(raw: bytes | None) -> str | None:
    """Best-effort id of a bad record so an analyst can find it; never raises."""
    if not raw or len(raw) > 10_000_000:
        return None
    return json_id(raw)


def dead_letter(
    raw: bytes | None, error: InvalidEvent, origin: Origin, keep: int = DLQ_RAW_BYTES
) -> DeadLetter:
    """The dead letter of ``raw``: its reason, id if one can be read, and the raw bytes (the
    first ``keep`` of them, with the whole record's size and sha256; ``keep=0`` for a dead
    letter the DLQ refused with its copy: the record stays readable at ``origin``)."""
    body = raw or b""
    return DeadLetter(
        id=_guess_id(raw),
        error=ErrorInfo(kind=error.kind, message=error.message),
        raw_b64=base64.b64encode(body[:keep]).decode("ascii"),
        raw_bytes=len(body),
        raw_sha256=hashlib.sha256(body).hexdigest(),
        raw_truncated=len(body) > keep,
        origin=origin,
        at=datetime.now(UTC),
    )
