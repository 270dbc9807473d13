"""Schemas and decoding: round-trips, JSON Schema export, and every dead-letter reason."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.decode import dead_letter, decode_event
from stream.errors import InvalidEvent
from stream.schemas import DeadLetter, InputEvent, Origin, json_schemas

texts = st.text(min_size=1, max_size=300).filter(lambda s: s.strip() and "\x00" not in s)
events = st.builds(
    InputEvent,
    id=st.text(min_size=1, max_size=40),
    text=texts,
    lang=st.one_of(st.none(), st.sampled_from(["en", "es", "ar"])),
    event=st.one_of(st.none(), st.text(max_size=20)),
    # JSON integers beyond 64 bits come back from orjson as floats (as in most parsers)
    meta=st.dictionaries(
        st.text(max_size=10),
        st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=10)),
    ),
    gold=st.one_of(
        st.none(), st.dictionaries(st.sampled_from(["informative"]), st.text(max_size=10))
    ),
)


@given(events)
def test_input_event_round_trip(ev: InputEvent):
    raw = ev.model_dump_json().encode()
    assert decode_event(raw, 10_000_000, 10_000) == ev


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_invalid_event(raw: bytes):
    try:
        decode_event(raw, 1000, 1000)
    except InvalidEvent as exc:
        assert exc.kind in {"not_json", "schema", "empty", "too_long", "too_large"}


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"not json", "not_json"),
        (b"\xff\xfe{}", "not_json"),
        (b"[1, 2]", "schema"),
        (b'{"text": "no id"}', "schema"),
        (b'{"id": 5, "text": "wrong id type"}', "schema"),
        (b'{"id": "a", "text": "   "}', "empty"),
        (b'{"id": "a", "text": "x", "image": {"b64": "AA", "url": "http://x"}}', "schema"),
        (b'{"id": "a", "text": "nul \\u0000 inside"}', "schema"),
        (orjson.dumps({"id": "a", "text": "x" * 5000}), "too_long"),
        (b"x" * 2_000_001, "too_large"),
        (None, "empty"),
    ],
)
def test_bad_input_reasons(raw: bytes | None, kind: str):
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, 2_000_000, 4000)
    assert info.value.kind == kind
    dl = dead_letter(raw, info.value, Origin(topic="t", partition=0, offset=3))
    assert DeadLetter.model_validate_json(dl.model_dump_json()) == dl
    assert dl.error.kind == kind


def test_image_only_event_is_valid():
    ev = decode_event(b'{"id": "a", "image": {"path": "x.jpg"}}', 1000, 1000)
    assert ev.text == "" and ev.image is not None


def test_dead_letter_keeps_id_when_parsable():
    raw = b'{"id": "abc", "text": ""}'
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, 1000, 1000)
    assert dead_letter(raw, info.value, Origin(topic="t", partition=0, offset=0)).id == "abc"


def test_json_schemas_are_exported():
    schemas = json_schemas()
    assert set(schemas) == {
        "input_event.schema.json",
        "labeled_event.schema.json",
        "dead_letter.schema.json",
        "feedback_event.schema.json",
    }
    labeled = schemas["labeled_event.schema.json"]
    assert {"id", "labels", "rationale", "origin", "model"} <= set(labeled["required"])


def test_published_schemas_are_current():
    """``schemas/`` is the contract downstream services code against: regenerate it with
    ``crisis-stream schema --out schemas`` whenever the models change."""
    published = Path(__file__).resolve().parent.parent / "schemas"
    for name, doc in json_schemas().items():
        path = published / name
        assert path.is_file(), f"{path} missing: run `crisis-stream schema --out schemas`"
        assert orjson.loads(path.read_bytes()) == orjson.loads(orjson.dumps(doc)), (
            f"{path} is stale: run `crisis-stream schema --out schemas`"
        )
