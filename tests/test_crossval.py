"""Cross-event heads and the cross-validation protocol, on synthetic embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from stream.build import crossval as cv
from stream.build import event_heads
from stream.build.calibration import fit_temperature, fit_temperature_and_bias, nll
from stream.build.event_heads import EventData, event_weights, fit_event_head
from stream.build.hybrid import fit_lexicon
from stream.cli.models import models_crossval
from stream.data.message import Message
from stream.evaluation.metrics import expected_calibration_error
from stream.models.heads import LinearHead
from stream.models.numeric import softmax
from tests.conftest import BUNDLE, SHARED, needs_shared
from tests.crisis_data import make_root

WORDS = {
    "informative": ["flood", "dead", "rescue", "damage", "evacuate"],
    "not_informative": ["lol", "pizza", "movie", "selfie", "game"],
}


def _messages(events: int = 6, per_event: int = 40, seed: int = 0) -> list[Message]:
    rng = np.random.default_rng(seed)
    out = []
    for e in range(events):
        for i in range(per_event):
            label = "informative" if rng.random() < 0.5 else "not_informative"
            words = [*rng.choice(WORDS[label], size=3).tolist(), f"place{e}"]
            out.append(
                Message(
                    f"m{e}-{i}", "synthetic", f"event{e}", " ".join(words), {"informative": label}
                )
            )
    return out


def _embed(messages: list[Message], seed: int = 1) -> np.ndarray:
    """Embeddings that carry the label (first axis) plus noise, unit length."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(messages), 8))
    x[:, 0] += [2.0 if m.labels["informative"] == "informative" else -2.0 for m in messages]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@given(st.lists(st.sampled_from("abcde"), min_size=1, max_size=60))
def test_every_event_weighs_the_same(events: list[str]):
    w = event_weights(np.array(events))
    totals = {e: w[np.array(events) == e].sum() for e in set(events)}
    assert np.allclose(list(totals.values()), len(events) / len(totals))
    assert np.isclose(w.mean(), 1.0)


@given(st.lists(st.sampled_from(list("abcdefgh")), min_size=1, max_size=40), st.integers(0, 9))
def test_folds_partition_whole_groups(groups: list[str], k: int):
    folds = cv.folds_of(groups, k)
    flat = [g for f in folds for g in f]
    assert sorted(flat) == sorted(set(groups)) and all(folds)


def test_event_head_is_a_hybrid_linear_head_calibrated_on_held_out_events():
    msgs = _messages()
    x = _embed(msgs)
    labels = ["informative", "not_informative"]
    texts = [m.text for m in msgs]
    lexicon = fit_lexicon(texts, chars=False)
    data = EventData(
        x,
        np.array([labels.index(m.labels["informative"]) for m in msgs]),
        np.array([m.event for m in msgs]),
        [lexicon.analyse(t) for t in texts],
    )
    head = fit_event_head("informative", labels, data, lexicon)
    assert head.lexical is not None and head.lexical.weight.shape == (2, lexicon.size)
    assert head.temperature > 0 and 0.5 <= head.review_threshold <= 0.9
    # the runtime head computes exactly W x + b + V f
    runtime = LinearHead("informative", labels, head.weight, head.bias, lexical=head.lexical)
    z = runtime.predict(x[:5], data.analyses[:5]).logits
    manual = x[:5] @ head.weight.T + head.bias + head.lexical.logits(data.analyses[:5])
    assert np.allclose(z, manual, atol=1e-5)
    assert (z.argmax(axis=1) == data.y[:5]).mean() >= 0.8


def _prior_shifted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from ``softmax(z)``; the logits a head reports are ``2 z`` tilted toward
    the rare labels (what balanced class weights do)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3)) * 1.5 + np.array([1.5, 0.0, -1.0])
    y = np.array([rng.choice(3, p=p) for p in softmax(z)])
    return 2 * z + np.array([-1.5, 0.0, 1.0]), y


def _ece(probs: np.ndarray, y: np.ndarray) -> float:
    return expected_calibration_error(probs.max(axis=1), probs.argmax(axis=1) == y)[0]


def test_temperature_and_bias_undo_a_prior_shift_a_temperature_cannot():
    logits, y = _prior_shifted(6000, 0)
    temperature, bias = fit_temperature_and_bias(logits, y)
    assert temperature == pytest.approx(2.0, rel=0.1)
    np.testing.assert_allclose(bias, np.array([0.75, 0.0, -0.5]) - 0.25 / 3, atol=0.15)
    fresh, fresh_y = _prior_shifted(6000, 1)
    alone = fresh / fit_temperature(logits, y)
    calibrated = fresh / temperature + bias
    assert nll(calibrated, fresh_y) < nll(alone, fresh_y)
    assert _ece(softmax(calibrated), fresh_y) < 0.75 * _ece(softmax(alone), fresh_y)
    shrunk = fit_temperature_and_bias(logits, y, l2=0.1)[1]
    assert np.abs(shrunk).sum() < np.abs(bias).sum() and abs(shrunk.sum()) < 1e-9


def test_every_held_out_event_weighs_the_same_in_the_calibration():
    """Rows of a big event repeated ten times do not move the fit when weighted per event."""
    logits, y = _prior_shifted(2000, 2)
    events = np.repeat(["big", "small"], 1000)
    once = fit_temperature_and_bias(logits, y, event_weights(events))
    rows = np.r_[np.tile(np.arange(1000), 10), np.arange(1000, 2000)]
    tenfold = fit_temperature_and_bias(logits[rows], y[rows], event_weights(events[rows]))
    assert once[0] == pytest.approx(tenfold[0], rel=1e-3)
    np.testing.assert_allclose(once[1], tenfold[1], atol=1e-3)


def test_calibration_bias_is_folded_into_the_intercepts_and_rationales_stay_exact(
    monkeypatch: pytest.MonkeyPatch,
):
    """The runtime's ``softmax(logits / T)`` of the shipped head is the calibrated
    ``softmax(raw / T + c)``, and token shares plus the centred bias still add up to the
    centred calibrated logit."""
    msgs = _messages(events=6, per_event=60)
    x = _embed(msgs)
    labels = ["informative", "not_informative"]
    texts = [m.text for m in msgs]
    lexicon = fit_lexicon(texts, chars=False)
    data = EventData(
        x,
        np.array([labels.index(m.labels["informative"]) for m in msgs]),
        np.array([m.event for m in msgs]),
        [lexicon.analyse(t) for t in texts],
    )
    fits: list[tuple[np.ndarray, np.ndarray]] = []
    calibrations: list[tuple[float, np.ndarray]] = []
    real_fit, real_calibrate = event_heads._fit, event_heads.fit_temperature_and_bias
    monkeypatch.setitem(event_heads.BIAS_L2_BY_TASK, "informative", 0.1)
    monkeypatch.setattr(event_heads, "_fit", lambda *a: fits.append(real_fit(*a)) or fits[-1])
    monkeypatch.setattr(
        event_heads,
        "fit_temperature_and_bias",
        lambda *a: calibrations.append(real_calibrate(*a)) or calibrations[-1],
    )
    head = fit_event_head("informative", labels, data, lexicon)
    (temperature, bias), (coef, icpt) = calibrations[0], fits[-1]
    assert head.temperature == temperature and np.abs(bias).max() > 0
    assert head.metrics["selection"]["calibration_bias"] == pytest.approx(bias, abs=1e-4)
    runtime = LinearHead(
        "informative", labels, head.weight, head.bias, head.temperature, lexical=head.lexical
    )
    out = runtime.predict(x, data.analyses)
    raw = np.asarray(data.split().x @ coef[:, : x.shape[1]].T + icpt) + head.lexical.logits(
        data.analyses
    )
    np.testing.assert_allclose(out.probs, softmax(raw / temperature + bias), atol=1e-5)
    tokens = np.random.default_rng(3).normal(size=(4, x.shape[1]))
    scale = 0.25  # the embedding is the scaled sum of its tokens
    emb = tokens.sum(axis=0) * scale
    z = runtime.predict(emb[None], data.analyses[:1]).logits[0] / temperature
    lexical = head.lexical.logits(data.analyses[:1])[0] / temperature
    for label in range(2):
        shares = runtime.token_shares(tokens, scale, label)
        centred_bias = (runtime.bias[label] - runtime.bias.mean()) / temperature
        centred_lexical = lexical[label] - lexical.mean()
        assert shares.sum() + centred_bias + centred_lexical == pytest.approx(
            z[label] - z.mean(), abs=1e-4
        )


def test_crossval_never_trains_on_the_held_out_event(monkeypatch: pytest.MonkeyPatch):
    msgs = _messages()
    x = _embed(msgs)
    seen: list[set[str]] = []
    real = cv.fit_event_head

    def spy(task, labels, data, lexicon, c=None):  # type: ignore[no-untyped-def]
        seen.append(set(data.events.tolist()))
        return real(task, labels, data, lexicon, c)

    monkeypatch.setattr(cv, "fit_event_head", spy)
    inputs = cv.CrossvalInputs(msgs, x, lambda t: np.eye(len(t), 8), x.copy(), ["en"] * len(msgs))
    report = cv.crossval(inputs, lambda _: None, tasks=["informative"])
    task = report["tasks"]["informative"]
    assert len(seen) == 6 and all(len(s) == 5 for s in seen)
    assert {f"event{i}" for i in range(6)} == {
        next(iter({f"event{i}" for i in range(6)} - s)) for s in seen
    }
    mean = task["mean_over_events"]
    assert mean["events"] == 6 and mean["macro_f1"] > 0.8
    lo, hi = mean["macro_f1_interval"]
    assert lo <= mean["macro_f1"] <= hi
    assert task["fp32_encoder"]["macro_f1"] == mean["macro_f1"]  # same embeddings
    assert task["baseline_tfidf"]["macro_f1"] > 0.8  # the words carry the label too
    assert task["by_language"]["en"]["n"] == len(msgs)


@needs_shared
def test_crossval_command_on_the_shared_corpus(tmp_path: Path):
    """A quick run (20 messages per group, 3 folds): every crisis event reported once, a
    report file, and its summary recorded into a copy of the bundle whose hashes still hold."""
    import shutil

    from stream.models.bundle import load_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle)
    out = tmp_path / "cv.json"
    args = [
        "--bundle",
        str(bundle),
        "--data",
        str(SHARED.parent),
        "--folds",
        "3",
        "--limit-per-group",
        "20",
        "--no-fp32",
        "--out",
        str(out),
        "--record",
    ]
    res = CliRunner().invoke(models_crossval, args)
    assert res.exit_code == 0, res.output
    report = orjson.loads(out.read_bytes())
    assert report["protocol"].startswith("3 folds over 23 groups")
    for task in ("informative", "humanitarian"):
        assert report["tasks"][task]["mean_over_events"]["events"] == 20
        assert "mean over 20 events" in res.output
    manifest = orjson.loads((bundle / "manifest.json").read_bytes())
    assert "crossval" in manifest and "MODEL_CARD.md" in manifest["files"]
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "Events it never saw" in card and "CC BY-NC-SA" in card
    load_bundle(bundle)  # the recorded card's sha256 verifies


def test_fine_tuned_encoders_and_other_head_recipes_are_refused(tmp_path: Path):
    """A fine-tuned encoder has seen the events' labels (its folds would leak unless each is
    fine-tuned again without them), and a summary recorded into a bundle must describe its
    heads' and its encoder's recipe."""
    from stream.build.crossval_run import run_crossval
    from stream.build.model_card import record_crossval
    from stream.errors import ConfigError

    manifest = {
        "name": "b",
        "version": "0",
        "text_encoder": {"files": {"int8": "x.onnx"}, "fine_tuning": {"epochs_run": 3}},
        "heads": [
            {
                "task": "informative",
                "labels": ["a", "b"],
                "file": "h.npz",
                "metrics": {"selection": {"C": 1.0}},
            }
        ],
        "files": {},
    }
    (tmp_path / "manifest.json").write_bytes(orjson.dumps(manifest))
    with pytest.raises(ConfigError, match="fine-tuned"):
        run_crossval(tmp_path, make_root(tmp_path / "data"), lambda _: None)
    with pytest.raises(ConfigError, match="cross-event recipe"):
        record_crossval(tmp_path, {"protocol": "p", "messages": 0, "tasks": {}})
    manifest["heads"][0]["metrics"]["selection"]["event_weight"] = "equal"  # type: ignore[index]
    (tmp_path / "manifest.json").write_bytes(orjson.dumps(manifest))
    frozen_folds = {"protocol": "p", "messages": 0, "tasks": {}, "fold_encoders": False}
    tuned_folds = {**frozen_folds, "fold_encoders": True}
    with pytest.raises(ConfigError, match="fine-tuned on CrisisMMD"):  # another recipe
        record_crossval(tmp_path, tuned_folds)
    with pytest.raises(ConfigError, match="--finetune would measure another recipe"):
        run_crossval(tmp_path, tmp_path / "data", lambda _: None, finetune=True)
    manifest["text_encoder"]["fine_tuning"] = {"recipe": "across events: 700 a group"}  # type: ignore[index]
    (tmp_path / "manifest.json").write_bytes(orjson.dumps(manifest))
    with pytest.raises(ConfigError, match="shared one frozen encoder"):
        record_crossval(tmp_path, frozen_folds)
    record_crossval(tmp_path, tuned_folds)
    assert orjson.loads((tmp_path / "manifest.json").read_bytes())["crossval"]["protocol"] == "p"
    assert "- fine-tuned: across events: 700 a group" in (tmp_path / "MODEL_CARD.md").read_text()
    del manifest["text_encoder"]["fine_tuning"]  # type: ignore[attr-defined]
    (tmp_path / "manifest.json").write_bytes(orjson.dumps(manifest))
    with pytest.raises(ConfigError, match="fine-tuned theirs"):
        record_crossval(tmp_path, tuned_folds)


@given(
    st.lists(st.sampled_from(["hurricane_harvey", "mexico_earthquake", *"abcdef"]), min_size=1),
    st.integers(0, 8),
)
def test_dev_events_form_the_first_fold_and_every_group_is_held_out_once(groups: list[str], k: int):
    folds = cv.dev_fold_first(groups, k)
    flat = [g for f in folds for g in f]
    assert sorted(flat) == sorted(set(groups)) and all(folds)
    dev = sorted(set(groups) & event_heads.DEV_EVENTS)
    assert (folds[0] == dev) if dev else not (set(folds[0]) & event_heads.DEV_EVENTS)
    others = sorted(set(groups) - event_heads.DEV_EVENTS)
    if k <= 1:  # every other group alone, as leave-one-event-out
        assert folds[1 if dev else 0 :] == [[g] for g in others]
    else:
        assert len(folds) <= k


def test_each_fold_is_scored_with_its_own_encoder():
    """With per-fold embeddings the heads of a fold are fitted and scored on that fold's
    encoder: here the texts and the shared embeddings carry no label, only the folds'
    embeddings do. The comparisons that assume one encoder for all folds are left out."""
    msgs = [
        Message(m.uid, m.source, m.event, f"update {m.event} {i % 7}", m.labels)
        for i, m in enumerate(_messages())
    ]
    noise = np.random.default_rng(5).normal(size=(len(msgs), 8))
    asked: list[tuple[str, ...]] = []

    def per_fold(fold):  # type: ignore[no-untyped-def]
        asked.append(tuple(fold))
        return _embed(msgs, seed=len(asked))

    def run(inputs: cv.CrossvalInputs) -> dict:  # type: ignore[type-arg]
        return cv.crossval(inputs, lambda _: None, folds=3, tasks=["informative"], baseline=False)

    report = run(
        cv.CrossvalInputs(
            msgs,
            noise,
            lambda t: np.eye(len(t), 8),
            noise.copy(),
            ["en"] * len(msgs),
            fold_embeddings=per_fold,
        )
    )
    assert asked == [tuple(f) for f in report["folds"]] and report["fold_encoders"]
    task = report["tasks"]["informative"]
    assert task["mean_over_events"]["macro_f1"] > 0.8
    assert task["zero_shot"] is None and task["fp32_encoder"] is None
    assert "fine-tuned without it" in report["protocol"]
    alone = run(cv.CrossvalInputs(msgs, noise, lambda t: np.eye(len(t), 8)))
    assert alone["tasks"]["informative"]["mean_over_events"]["macro_f1"] < 0.7


def test_a_fold_whose_groups_lack_a_task_is_skipped_for_that_task():
    """Folds are drawn over every group, but a task is scored only where it has labels (Figure
    Eight has no humanitarian labels): a fold's other groups are still scored."""
    msgs = _messages(events=6)
    msgs += [
        Message(f"f{i}", "figure8", "figure8_news", "update", {"other": "x"}) for i in range(30)
    ]
    x = np.vstack([_embed(msgs[:240]), np.zeros((30, 8))])
    inputs = cv.CrossvalInputs(msgs, x, lambda t: np.eye(len(t), 8))
    report = cv.crossval(inputs, lambda _: None, folds=6, tasks=["informative"], baseline=False)
    assert ["event0", "figure8_news"] in report["folds"]
    assert set(report["tasks"]["informative"]["groups"]) == {f"event{i}" for i in range(6)}
