"""``crisis-stream label``: stdin to stdout, one line out per line in, in order; bad lines become
error lines, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import orjson
import pytest

from stream.cli.label import _label_all
from stream.schemas import InputEvent, LabeledEvent
from tests.conftest import BUNDLE, REPO

LINES = [
    b"Bridge collapsed after the flood, two dead",
    b'{"id": "e-1", "text": "Volunteers needed at the shelter: water and blankets", "lang": "en"}',
    b'{"id": "broken", "text": ',
    b"",
    b'{"text": "Roads closed downtown after the storm", "meta": {"k": 1}}',
    b'{"id": "e-5", "text": "   "}',
    b"\xff\xfe not utf-8",
    b"lovely sunset tonight",
]


def _label(stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "stream", "label", "--bundle", str(BUNDLE), *args],
        input=stdin,
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=300,
    )


def test_round_trip_plain_json_and_malformed_lines_in_order():
    run = _label(b"\n".join(LINES) + b"\n", "--batch-size", "2")
    assert run.returncode == 0, run.stderr.decode()
    assert b"Traceback" not in run.stderr
    out = [orjson.loads(line) for line in run.stdout.splitlines()]
    assert len(out) == len(LINES)
    assert [o["origin"]["offset"] for o in out] == list(range(len(LINES)))
    assert {o["origin"]["topic"] for o in out} == {"stdin"}
    good = {0: "0", 1: "e-1", 4: "4", 7: "7"}
    errors = {2: "not_json", 3: "empty", 5: "empty", 6: "not_utf8"}
    for i, event_id in good.items():
        ev = LabeledEvent.model_validate(out[i])
        assert ev.id == event_id and ev.labels and "error" not in out[i]
    for i, kind in errors.items():
        assert set(out[i]) == {"id", "error", "origin"}
        assert out[i]["error"]["kind"] == kind and out[i]["error"]["message"]
    assert out[0]["text"] == LINES[0].decode()
    assert out[0]["labels"]["informative"]["label"] == "informative"
    assert out[4]["meta"] == {"k": 1}
    assert out[5]["id"] == "e-5"
    assert b"4 of 8 lines could not be labelled" in run.stderr


def test_strict_and_fields():
    run = _label(b"flooded street\n{oops\n", "--strict", "--fields", "id, labels")
    assert run.returncode == 1
    assert b"Traceback" not in run.stderr
    first, second = (orjson.loads(line) for line in run.stdout.splitlines())
    assert set(first) == {"id", "labels"} and first["id"] == "0"
    assert second["error"]["kind"] == "not_json"
    clean = _label(b"flooded street\n", "--strict", "--fields", "id")
    assert clean.returncode == 0 and orjson.loads(clean.stdout) == {"id": "0"}


def test_unknown_field_is_a_usage_error():
    run = _label(b"x\n", "--fields", "id,nope")
    assert run.returncode == 2 and not run.stdout
    assert b"nope" in run.stderr and b"Traceback" not in run.stderr


class _Flaky:
    """Fails any batch holding the text ``boom``, like a model that cannot take one event."""

    source = "stdin"

    def predict(self, events: list[InputEvent], *, offsets: list[int]) -> list[Any]:
        if any(e.text == "boom" for e in events):
            raise RuntimeError("cannot encode")
        return [f"labelled {e.id}@{o}" for e, o in zip(events, offsets, strict=True)]


def test_an_event_the_model_cannot_label_becomes_its_error_line(caplog: pytest.LogCaptureFixture):
    events = [InputEvent(id=str(i), text=t) for i, t in enumerate(["a", "boom", "c"])]
    out = _label_all(_Flaky(), events, [3, 4, 5])  # type: ignore[arg-type]
    assert out[0] == "labelled 0@3" and out[2] == "labelled 2@5"
    assert out[1]["id"] == "1" and out[1]["error"]["kind"] == "label_failed"
    assert out[1]["origin"]["offset"] == 4
