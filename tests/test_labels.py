"""Adding a label without retraining: a prototype head from a sentence, refined by examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from stream.build.labels import add_label, few_shot_metrics, prototype_weights
from stream.build.train import Split
from stream.cli import cli
from stream.errors import BundleError
from stream.models.bundle import Bundle, load_bundle
from stream.pipeline import Pipeline
from stream.schemas import InputEvent, Origin

from .conftest import BUNDLE

FIRE = "wildfire smoke, flames and burning forests near homes"
QUAKE = "an earthquake shook buildings, tremors and aftershocks"


def _label(bundle: Bundle, texts: list[str]) -> list[dict[str, object]]:
    events = [InputEvent(id=f"e{i}", text=t) for i, t in enumerate(texts)]
    origins = [Origin(topic="t", partition=0, offset=i) for i in range(len(texts))]
    return [e.model_dump() for e in Pipeline(bundle).label(events, origins)]


def test_new_task_from_descriptions_labels_and_explains(tmp_path: Path):
    one = tmp_path / "one"
    add_label(BUNDLE, one, "hazard", "fire", FIRE)
    two = tmp_path / "two"
    entry = add_label(one, two, "hazard", "earthquake", QUAKE, ["Magnitude 7.1 quake hits"])
    assert entry["labels"] == ["fire", "earthquake"] and entry["kind"] == "prototype"
    bundle = load_bundle(two)  # hashes verified
    assert bundle.manifest.version.endswith("+hazard.2")
    out = _label(bundle, ["Forest fire spreading towards the village", "Strong quake in Mexico"])
    assert [o["labels"]["hazard"]["label"] for o in out] == ["fire", "earthquake"]
    assert any(s["task"] == "hazard" for s in out[0]["rationale"]["text"])
    # the original tasks are untouched
    assert set(out[0]["labels"]) == {h.task for h in load_bundle(BUNDLE).heads} | {"hazard"}


def test_trained_tasks_are_not_extended_and_out_must_be_new(tmp_path: Path):
    with pytest.raises(BundleError, match="trained head"):
        add_label(BUNDLE, tmp_path / "x", "informative", "maybe", "unsure tweets")
    (tmp_path / "exists").mkdir()
    with pytest.raises(BundleError, match="exists"):
        add_label(BUNDLE, tmp_path / "exists", "hazard", "fire", FIRE)


def test_examples_move_the_prototype_towards_them(bundle: Bundle):
    labels, desc = ["fire"], {"fire": FIRE}
    plain = prototype_weights(bundle.encoder, labels, desc)[0]
    ex = ["Cal Fire: evacuations ordered as blaze jumps highway"] * 4
    refined = prototype_weights(bundle.encoder, labels, desc, {"fire": ex})[0]
    target = bundle.encoder.encode(ex[:1]).embeddings[0]
    assert refined @ target > plain @ target


def test_few_shot_metrics_are_seeded(bundle: Bundle):
    labels = ["fire", "earthquake"]
    train = {
        "fire": [f"fire number {i} burns" for i in range(20)],
        "earthquake": [f"earthquake number {i} shakes" for i in range(20)],
    }
    texts = ["the fire burns the hills", "an earthquake shakes the city"]
    test = Split(bundle.encoder.encode(texts).embeddings, np.array([0, 1]))
    desc = {"fire": FIRE, "earthquake": QUAKE}
    a = few_shot_metrics(bundle.encoder, labels, desc, train, test, shots=4, seeds=(0, 1))
    b = few_shot_metrics(bundle.encoder, labels, desc, train, test, shots=4, seeds=(0, 1))
    assert a == b and a["accuracy"] == 1.0 and a["draws"] == 2


def test_add_label_command(tmp_path: Path):
    examples = tmp_path / "ex.txt"
    examples.write_text("Tornado touches down near Moore\n\nTwister flattens barns\n")
    args = [
        "models",
        "add-label",
        "--bundle",
        str(BUNDLE),
        "--out",
        str(tmp_path / "b"),
        "--task",
        "hazard",
        "--label",
        "tornado",
        "--description",
        "a tornado or twister",
        "--examples",
        str(examples),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "2 examples for tornado" in result.output
    assert load_bundle(tmp_path / "b").heads[-1].labels == ["tornado"]
