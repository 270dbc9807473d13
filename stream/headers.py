"""Kafka record headers: what an output says about itself, and what a dead letter keeps.

A downstream service can route on headers without parsing the value (content type, contract
version, which model labelled it), and a trace started upstream continues through the worker
(W3C ``traceparent`` / ``tracestate`` / ``baggage`` are passed through). A dead letter keeps
every header of the record it stands for, plus the error, so ``crisis-stream dlq redrive`` can
send the original back as it came (Kafka Connect's dead-letter convention).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from stream.schemas import ModelInfo, Origin

__all__ = [
    "CONTRACT_VERSION",
    "Headers",
    "dead_letter_headers",
    "normalise",
    "original_headers",
    "output_headers",
]

#: a record's headers as confluent-kafka gives and takes them
Headers = Sequence[tuple[str, bytes | None]]

#: the output contract (``schemas/labeled_event.schema.json``); a breaking change bumps it
CONTRACT_VERSION = "1"
#: headers a trace carries from the input to every output
TRACE_HEADERS = frozenset({"traceparent", "tracestate", "baggage"})
#: headers this worker adds; stripped again when a dead letter is sent back
PREFIX = "crisis."


def output_headers(model: ModelInfo, inputs: Headers = ()) -> list[tuple[str, bytes | None]]:
    """Headers of a labelled output (and its review and route copies)."""
    out: list[tuple[str, bytes | None]] = [
        ("content-type", b"application/json"),
        (f"{PREFIX}contract", f"labeled_event/{CONTRACT_VERSION}".encode()),
        (f"{PREFIX}model", model.bundle.encode()),
        (f"{PREFIX}model.version", model.version.encode()),
        (f"{PREFIX}model.sha256", model.sha256.encode()),
    ]
    out += [(k, v) for k, v in inputs if k.lower() in TRACE_HEADERS]
    return out


def dead_letter_headers(
    inputs: Headers, kind: str, message: str, origin: Origin
) -> list[tuple[str, bytes | None]]:
    """Every header of the original record, then the error and where the record was read."""
    return [
        *[(k, v) for k, v in inputs if not k.startswith(PREFIX)],
        (f"{PREFIX}error.kind", kind.encode()),
        (f"{PREFIX}error.message", message.encode()[:1000]),
        (f"{PREFIX}origin.topic", origin.topic.encode()),
        (f"{PREFIX}origin.partition", str(origin.partition).encode()),
        (f"{PREFIX}origin.offset", str(origin.offset).encode()),
    ]


def normalise(
    raw: dict[str, str | bytes | None] | Iterable[tuple[str, str | bytes | None]] | None,
) -> tuple[tuple[str, bytes | None], ...]:
    """A record's headers as (name, bytes) pairs, whichever shape the client gave."""
    items = raw.items() if isinstance(raw, dict) else (raw or ())
    return tuple((k, v.encode() if isinstance(v, str) else v) for k, v in items)


def original_headers(headers: Iterable[tuple[str, bytes | None]]) -> list[tuple[str, bytes | None]]:
    """The headers of a dead letter without the ones this worker added."""
    return [(k, v) for k, v in headers if not k.startswith(PREFIX)]
