"""``stream.Classifier``: in-process labelling without Kafka, its doctest, and the same labels
as the pipeline the worker runs."""

from __future__ import annotations

import doctest
import subprocess
import sys

import pytest

from stream.classifier import Classifier
from stream.errors import InvalidEvent
from stream.models.bundle import Bundle
from stream.pipeline import Pipeline
from stream.schemas import InputEvent, Origin
from tests.conftest import BUNDLE, REPO

TEXTS = [
    "Bridge collapsed after the flood, two dead",
    "Volunteers needed at the shelter on 5th street: water and blankets",
    "lovely sunset tonight",
]


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier.load(BUNDLE, batch_size=2)


def test_docstring_examples_run():
    """The examples in :mod:`stream.classifier` are executed, with the test bundle."""
    import stream.classifier

    result = doctest.testmod(
        stream.classifier, extraglobs={"bundle_dir": str(BUNDLE)}, optionflags=doctest.ELLIPSIS
    )
    assert result.attempted >= 5
    assert result.failed == 0


def test_predict_texts_events_and_dicts_in_order(clf: Classifier):
    import stream

    assert stream.Classifier is Classifier
    items = [
        TEXTS[0],
        InputEvent(id="ev-1", text=TEXTS[1], lang="en"),
        {"text": TEXTS[2], "meta": {"k": 1}},
    ]
    out = clf.predict(items)
    assert [e.text for e in out] == TEXTS
    assert [e.id for e in out] == ["0", "ev-1", "2"]
    assert [(e.origin.topic, e.origin.offset) for e in out] == [("classifier", i) for i in range(3)]
    assert out[2].meta == {"k": 1}
    for ev in out:
        assert set(ev.labels) == set(clf.tasks)
        for task in ev.labels.values():
            assert abs(sum(task.scores.values()) - 1) < 1e-3
        assert ev.model == clf.model
    assert out[0].labels["informative"].label == "informative"
    assert out[0].rationale.text, "rationale words expected"
    assert clf.labels(TEXTS)[0] == {t: out[0].labels[t].label for t in clf.tasks}


def test_same_labels_as_the_pipeline(clf: Classifier, bundle: Bundle):
    """Sorting into batches changes nothing: labels and scores equal one Pipeline.label call."""
    events = [InputEvent(id=str(i), text=t) for i, t in enumerate(TEXTS * 3)]
    direct = Pipeline(bundle).label(events, [Origin(topic="x", partition=0, offset=0)] * 9)
    mine = clf.predict(events, offsets=[10 + i for i in range(9)])
    assert [e.origin.offset for e in mine] == list(range(10, 19))
    for a, b in zip(direct, mine, strict=True):
        assert a.id == b.id
        assert {t: v.label for t, v in a.labels.items()} == {
            t: v.label for t, v in b.labels.items()
        }
        for task in a.labels:
            assert a.labels[task].score == pytest.approx(b.labels[task].score, abs=1e-4)


def test_invalid_items_name_the_item(clf: Classifier):
    with pytest.raises(InvalidEvent) as exc:
        clf.predict(["fine", "   "])
    assert exc.value.kind == "empty" and "item 1" in exc.value.message
    with pytest.raises(InvalidEvent) as exc:
        clf.predict([{"id": 7, "text": "id must be a string"}])
    assert exc.value.kind == "schema"
    with pytest.raises(TypeError):
        clf.predict([42])
    assert clf.predict([]) == []


def test_importing_stream_does_not_load_the_model_runtime():
    probe = (
        "import sys, stream; assert 'Classifier' in stream.__all__; "
        "print('onnxruntime' in sys.modules); stream.Classifier; "
        "print('onnxruntime' in sys.modules)"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "True"]
