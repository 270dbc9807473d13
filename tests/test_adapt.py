"""The adaptation's parts: which answers count, the correction fit, bundle versions, the gate."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.adapt.adapter import Adapter
from stream.adapt.answers import Answers, InvalidFeedback, held_back, parse_feedback
from stream.adapt.correction import _loss, _sample_weights, fit_correction
from stream.adapt.journal import Journal
from stream.adapt.versions import BundleVersions
from stream.models.bundle import Bundle
from stream.models.numeric import softmax

from .adapt_data import answer, answers, flood, traffic

LABELS = {"informative": ["informative", "not_informative"]}


def test_the_latest_answer_of_an_annotator_counts_and_an_undo_restores_the_one_before():
    a = Answers()
    first = answer("t", "informative", event_id="e1")
    second = answer("t", "not_informative", event_id="e1")
    other = answer("t", "informative", event_id="e1", annotator="bo")
    for x in (first, second, other):
        assert a.add(x)
    assert not a.add(second)  # re-delivered: one answer
    assert [x.id for x in a.counting("informative")] == [second.id, other.id]
    undo = answer("t", None, event_id="e1", retracts=second.id)
    a.add(undo)
    assert [x.id for x in a.counting("informative")] == [first.id, other.id]
    with pytest.raises(InvalidFeedback, match="never received"):
        a.add(answer("t", None, retracts="nope"))


def test_about_one_text_in_five_is_held_back_whatever_its_case_or_spacing():
    texts = [f"Bridge {i} closed after the flood" for i in range(2000)]
    share = sum(map(held_back, texts)) / len(texts)
    assert 0.17 < share < 0.23
    assert all(held_back(t) == held_back(f"  {t.upper()} ") for t in texts[:200])
    a = Answers()
    a.extend(answers(40))
    fitted, held = a.split("informative")
    assert [x.id for x in held] == [x.id for x in a.counting("informative") if held_back(x.text)]
    assert len(fitted) + len(held) == 40 and held


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"", "empty"),
        (b"{not json", "not_json"),
        (orjson.dumps({"id": "x"}), "schema"),
        (answer("t", "informative", task="nope").model_dump_json().encode(), "unknown_task"),
        (answer("t", "maybe").model_dump_json().encode(), "unknown_label"),
    ],
)
def test_feedback_that_cannot_count_says_why(raw: bytes, kind: str):
    with pytest.raises(InvalidFeedback) as info:
        parse_feedback(raw, LABELS)
    assert info.value.kind == kind


def test_feedback_needs_a_label_or_a_retraction_not_both():
    doc = orjson.loads(answer("t", "informative").model_dump_json())
    doc["retracts"] = "x"
    with pytest.raises(InvalidFeedback, match="exactly one"):
        parse_feedback(orjson.dumps(doc), LABELS)


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(4, 60),
    classes=st.integers(2, 5),
    l2=st.sampled_from([0.1, 1.0, 10.0]),
    seed=st.integers(0, 10_000),
)
def test_the_correction_reaches_the_optimum_of_its_convex_loss(n, classes, l2, seed):
    """Against scipy's L-BFGS on the same objective: a loose fit would ship a head that is
    not what the docs say it is."""
    optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(seed)
    dim = 8
    x = rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = rng.integers(0, classes, n)
    z0 = rng.normal(size=(n, classes))
    ours = fit_correction(x, z0, y, l2)
    xa, onehot, sw = (
        np.hstack([x, np.ones((n, 1))]),
        np.eye(classes)[y],
        _sample_weights(y, classes),
    )

    def f(t: np.ndarray) -> float:
        return _loss(t.reshape(classes, dim + 1), xa, z0, onehot, sw, l2)

    ref = optimize.minimize(f, np.zeros(classes * (dim + 1)), method="L-BFGS-B")
    assert ours.loss <= ref.fun + 1e-3 * max(1.0, abs(ref.fun))


def test_the_folded_head_gives_the_corrected_probabilities():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 16))
    w, b, t = rng.normal(size=(3, 16)), rng.normal(size=3), 1.7
    y = rng.integers(0, 3, 30)
    c = fit_correction(x, (x @ w.T + b) / t, y, 0.5)
    w2, b2 = c.fold(w, b, t)
    expected = softmax((x @ w.T + b) / t + x @ c.dw.T + c.db)
    assert np.allclose(softmax((x @ w2.T.astype(np.float64) + b2) / t), expected, atol=1e-5)


def _fake_bundle(root: Path) -> Path:
    root.mkdir()
    files = {}
    for name, body in {"enc.onnx": b"encoder", "head_a.npz": b"head"}.items():
        (root / name).write_bytes(body)
        files[name] = hashlib.sha256(body).hexdigest()
    manifest = {
        "name": "b",
        "version": "1",
        "text_encoder": {"files": {"int8": "enc.onnx"}},
        "heads": [{"task": "a", "labels": ["x", "y"], "file": "head_a.npz"}],
        "files": files,
    }
    (root / "manifest.json").write_bytes(orjson.dumps(manifest))
    return root


def test_a_version_links_unchanged_files_and_moves_current_atomically(tmp_path: Path):
    base = _fake_bundle(tmp_path / "base")
    versions = BundleVersions(tmp_path / "out", keep=2)
    assert versions.current() is None
    first = versions.publish(base, {}, lambda m: None)
    assert versions.current() == first
    assert os.stat(first / "enc.onnx").st_ino == os.stat(base / "enc.onnx").st_ino

    def version(m: dict) -> None:
        m["version"] = "1+adapt"

    new_head = versions.publish(base, {"head_a.npz": lambda p: p.write_bytes(b"adapted")}, version)
    assert versions.current() == new_head and (tmp_path / "out" / "current").is_symlink()
    manifest = orjson.loads((tmp_path / "out" / "current" / "manifest.json").read_bytes())
    assert manifest["version"] == "1+adapt"
    assert manifest["files"]["head_a.npz"] == hashlib.sha256(b"adapted").hexdigest()
    assert (base / "head_a.npz").read_bytes() == b"head"  # the base is never written
    third = versions.publish(base, {}, lambda m: None)
    assert sorted(p.name for p in (tmp_path / "out" / "versions").iterdir()) == [
        new_head.name,
        third.name,
    ]


def test_the_journal_survives_a_torn_last_line(tmp_path: Path):
    journal = Journal(tmp_path / "feedback.jsonl")
    kept = answers(3)
    journal.append(kept)
    with open(journal.path, "ab") as f:
        f.write(b'{"id": "torn", "event_')
    later = answers(1)
    journal.append(later)
    assert [a.id for a in journal.read()] == [a.id for a in kept + later]


def test_answers_adapt_the_head_to_the_event_and_the_gate_lets_it_serve(bundle: Bundle):
    adapter = Adapter(bundle, min_answers=10)
    a = Answers()
    a.extend(answers(40))
    (result,) = [r for r in adapter.adapt(a) if r.task == "informative"]
    assert result.accepted, result.reason
    assert (result.fitted, result.held_back) == (34, 6)
    assert result.gate["macro_f1_candidate"] > result.gate["macro_f1_serving"]
    head = next(h for h in bundle.heads if h.task == "informative")
    new = [traffic(100 + i) for i in range(8)] + [flood(100 + i) for i in range(4)]
    emb = bundle.encoder.encode(new).embeddings
    before = head.predict(emb, bundle.analyse(new)).pred
    adapter_head = type(head)(
        head.task, head.labels, result.weight, result.bias, head.temperature, 0.5, head.lexical
    )
    after = adapter_head.predict(emb, bundle.analyse(new)).pred
    names = [head.labels[i] for i in after]
    assert names == ["not_informative"] * 8 + ["informative"] * 4
    assert [head.labels[i] for i in before[:8]].count("informative") >= 6  # it was wrong


def test_the_gate_refuses_answers_that_the_held_back_ones_contradict(bundle: Bundle):
    """Fitted answers say traffic is not informative, the held-back ones say it is: the
    candidate scores worse than the serving head on them and must not serve."""
    adapter = Adapter(bundle, min_answers=10, max_drop=0.0)
    a = Answers()
    sunsets = [t for t in (f"Lovely sunset over the bay today #{i}" for i in range(60))]
    held_sunsets = [t for t in sunsets if held_back(t)][:3]  # the model agrees: not informative
    a.extend(answer(t, "not_informative") for t in held_sunsets)
    for i in range(40):
        label = "informative" if held_back(traffic(i)) else "not_informative"
        a.add(answer(traffic(i), label))
    (result,) = adapter.adapt(a)
    assert not result.accepted and "held-back macro-F1" in result.reason
    head = next(h for h in bundle.heads if h.task == "informative")
    assert adapter.serving["informative"][0] is head.weight


def test_a_task_with_too_few_answers_is_not_adapted(bundle: Bundle):
    adapter = Adapter(bundle, min_answers=10)
    a = Answers()
    a.extend(answers(6))
    (result,) = adapter.adapt(a)
    assert not result.accepted and "6 answers, 10 needed" in result.reason
