"""Language identification for events without ``lang``, and per-event evaluation."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from stream.cli.replay import evaluate as evaluate_cmd
from stream.lang import detect_language
from stream.models.bundle import Bundle
from stream.pipeline import Pipeline
from stream.schemas import InputEvent, Origin
from tests.conftest import BUNDLE


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Terremoto en Guatemala: hay muchos muertos y heridos http://t.co/x", "es"),
        ("Alluvione in Sardegna, tre morti e molti dispersi", "it"),
        ("Incêndio na boate em Santa Maria deixa mais de 200 mortos", "pt"),
        ("Des milliers de personnes évacuées après les inondations", "fr"),
        ("Bagyong Pablo: maraming tao ang lumikas sa Davao", "tl"),
        ("@redcross Donate now to help the flood victims in Alberta #yycflood", "en"),
    ],
)
def test_detects_the_languages_crises_are_tweeted_in(text: str, lang: str):
    assert detect_language(text) == lang


@pytest.mark.parametrize("text", ["", "#help", "http://t.co/abc @someone", "12 34 !!"])
def test_too_little_text_is_not_called(text: str):
    assert detect_language(text) is None


def test_the_pipeline_sets_lang_only_where_the_input_lacks_it(bundle: Bundle):
    pipeline = Pipeline(bundle)
    events = [
        InputEvent(id="a", text="Inundaciones en la ciudad, evacuen ya por favor"),
        InputEvent(id="b", text="Inundaciones en la ciudad, evacuen ya por favor", lang="xx"),
    ]
    origins = [Origin(topic="t", partition=0, offset=i) for i in range(2)]
    out = pipeline.label(events, origins)
    assert [o.lang for o in out] == ["es", "xx"]


def test_evaluate_scores_each_event_apart(tmp_path: Path):
    lines = []
    for event, texts in {
        "quake": ["Earthquake destroys homes, many dead", "lol nice pizza"],
        "flood": ["Flood waters rising, evacuate now", "watching a movie tonight"],
    }.items():
        for i, text in enumerate(texts):
            gold = "informative" if i == 0 else "not_informative"
            lines.append(
                orjson.dumps(
                    {
                        "id": f"{event}{i}",
                        "text": text,
                        "event": event,
                        "gold": {"informative": gold},
                    }
                )
            )
    data = tmp_path / "events.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "ev.json"
    res = CliRunner().invoke(
        evaluate_cmd,
        ["--bundle", str(BUNDLE), "--data", str(data), "--by-event", "--json", str(out)],
    )
    assert res.exit_code == 0, res.output
    doc = orjson.loads(out.read_bytes())
    assert sorted(doc["by_event"]) == ["flood", "quake"]
    assert all(ev["n"] == 2 for ev in doc["by_event"].values())
    assert "mean macro-F1 over 2 events" in res.output
