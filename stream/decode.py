"""Turn raw record bytes into an :class:`InputEvent`, or a dead-letter reason.

Errors are data here: every failure becomes an :class:`InvalidEvent` with a short ``kind`` code
(``not_json``, ``schema``, ``empty``, ``too_long``, ``too_large``) so the worker can route it.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from stream.errors import InvalidEvent
from stream.schemas import DeadLetter, ErrorInfo, InputEvent, Origin

__all__ = ["dead_letter", "decode_event"]


def _schema_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


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
    if not isinstance(doc, dict):
        raise InvalidEvent("schema", f"expected a JSON object, got {type(doc).__name__}")
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


def _guess_id(raw: bytes | None) -> str | None:
    """Best-effort id of a bad record so an analyst can find it; never raises."""
    if not raw or len(raw) > 10_000_000:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("id"), str | int):
        return str(doc["id"])[:256]
    return None


def dead_letter(raw: bytes | None, error: InvalidEvent, origin: Origin) -> DeadLetter:
    return DeadLetter(
        id=_guess_id(raw),
        error=ErrorInfo(kind=error.kind, message=error.message),
        raw_b64=base64.b64encode(raw or b"").decode("ascii"),
        origin=origin,
        at=datetime.now(UTC),
    )
