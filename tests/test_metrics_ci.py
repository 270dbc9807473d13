"""Bootstrap intervals: their invariants, agreement with the point metrics, and coverage on data
drawn from a known accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.evaluation import intervals
from stream.evaluation.intervals import bootstrap_difference, bootstrap_intervals
from stream.evaluation.metrics import batch_scores, macro_f1
from stream.evaluation.scoring import evaluate_predictions, format_evaluation

LABELS = ["a", "b", "c", "d"]
rows = st.lists(
    st.tuples(st.sampled_from("abc"), st.sampled_from("abcd"), st.sampled_from("abcd")),
    min_size=1,
    max_size=80,
)


@settings(max_examples=60, deadline=None)
@given(rows)
def test_intervals_are_ordered_bounded_and_reproducible(data: list[tuple[str, str, str]]):
    y_true, y_pred, _ = (list(c) for c in zip(*data, strict=True))
    first = bootstrap_intervals(y_true, y_pred, LABELS, resamples=200)
    assert first == bootstrap_intervals(y_true, y_pred, LABELS, resamples=200)
    for iv in first.values():
        assert 0.0 <= iv.low <= iv.high <= 1.0


@settings(max_examples=60, deadline=None)
@given(rows)
def test_vectorised_scores_equal_the_point_metrics(data: list[tuple[str, str, str]]):
    """``batch_scores`` on the identity resample is exactly ``evaluate_predictions`` (macro-F1
    over the labels present in truth or prediction), so the intervals are of the figure printed."""
    y_true, y_pred, _ = (list(c) for c in zip(*data, strict=True))
    ev = evaluate_predictions(y_true, y_pred, model_labels=LABELS, resamples=0)
    t = intervals._codes(y_true, LABELS)[None]
    p = intervals._codes(y_pred, LABELS)[None]
    acc, f1 = batch_scores(t, p, len(LABELS))[0]
    assert acc == pytest.approx(ev.accuracy) and f1 == pytest.approx(ev.macro_f1)
    assert ev.intervals == {}


@settings(max_examples=40, deadline=None)
@given(rows)
def test_difference_is_antisymmetric_and_zero_against_itself(data: list[tuple[str, str, str]]):
    y_true, a, b = (list(c) for c in zip(*data, strict=True))
    ab = bootstrap_difference(y_true, a, b, LABELS, resamples=200)
    ba = bootstrap_difference(y_true, b, a, LABELS, resamples=200)
    for m in ("accuracy", "macro_f1"):
        assert ab[m].delta == pytest.approx(-ba[m].delta)
        assert ab[m].low == pytest.approx(-ba[m].high) and ab[m].high == pytest.approx(-ba[m].low)
        assert ab[m].low <= ab[m].high
    same = bootstrap_difference(y_true, a, a, LABELS, resamples=50)["macro_f1"]
    assert (same.delta, same.low, same.high, same.b_better) == (0.0, 0.0, 0.0, 0.0)


def test_chunking_does_not_change_the_resamples(monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(3)
    y_true = [LABELS[i] for i in rng.integers(0, 4, 500)]
    y_pred = [y if rng.random() < 0.7 else "d" for y in y_true]
    whole = bootstrap_intervals(y_true, y_pred, LABELS, resamples=300)
    monkeypatch.setattr(intervals, "_CELLS", 7 * 500)  # 7 resamples per chunk
    assert bootstrap_intervals(y_true, y_pred, LABELS, resamples=300) == whole


def test_coverage_of_a_known_accuracy():
    """Draw 300 events right with probability 0.8, 150 times: the 95 % interval of accuracy
    should contain 0.8 in about 95 % of the draws (a percentile interval at n=300 is close)."""
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(150):
        right = rng.random(300) < 0.8
        y_pred = ["a" if r else "b" for r in right]
        iv = bootstrap_intervals(
            ["a"] * 300, y_pred, ["a", "b"], resamples=400, seed=int(rng.integers(1 << 30))
        )
        hits += iv["accuracy"].low <= 0.8 <= iv["accuracy"].high
    assert 0.88 <= hits / 150 <= 0.99


def test_a_real_gain_is_told_from_noise():
    rng = np.random.default_rng(5)
    y_true = [LABELS[i] for i in rng.integers(0, 3, 1000)]
    a = [y if rng.random() < 0.75 else "d" for y in y_true]
    b = [y if (p == y or rng.random() < 0.5) else p for y, p in zip(y_true, a, strict=True)]
    diff = bootstrap_difference(y_true, a, b, LABELS)
    assert diff["accuracy"].delta > 0.08 and diff["accuracy"].low > 0.0
    assert diff["accuracy"].b_better == 1.0 and diff["macro_f1"].low > 0.0
    # a perfect labeller has a degenerate interval at 1
    perfect = bootstrap_intervals(y_true, y_true, LABELS)
    assert perfect["macro_f1"].low == perfect["macro_f1"].high == 1.0


def test_evaluation_carries_and_prints_its_intervals():
    y_true = ["a", "b"] * 50
    y_pred = ["a", "a"] * 50
    ev = evaluate_predictions(y_true, y_pred, [0.9] * 100, ["a", "b"])
    iv = ev.intervals["accuracy"]
    assert iv.low < ev.accuracy == 0.5 < iv.high and iv.resamples == intervals.RESAMPLES
    assert "95% interval (bootstrap over events, 1000 resamples): accuracy [" in (
        format_evaluation(ev)
    )
    assert ev.to_dict()["intervals"]["macro_f1"]["level"] == 0.95


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_intervals(["a"], ["a", "b"], LABELS)
    with pytest.raises(ValueError, match="'z' is not in labels"):
        bootstrap_intervals(["a"], ["z"], LABELS)
    with pytest.raises(ValueError, match="no events"):
        bootstrap_difference([], [], [], LABELS)
    with pytest.raises(ValueError, match="level"):
        bootstrap_intervals(["a"], ["a"], LABELS, level=1.0)


def test_build_metrics_record_intervals():
    """``models build`` writes each split's intervals into the manifest beside the figures."""
    from stream.build.train import evaluate

    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 600)
    probs = np.full((600, 3), 0.1)
    probs[np.arange(600), np.where(rng.random(600) < 0.8, y, (y + 1) % 3)] = 0.8
    m = evaluate(probs, y, ["x", "y", "z"], 0.5)
    lo, hi = m["intervals"]["accuracy"]
    assert lo < m["accuracy"] < hi and hi - lo < 0.08
    lo, hi = m["intervals"]["macro_f1"]
    assert lo < m["macro_f1"] < hi


@given(rows)
def test_build_evaluate_and_bootstrap_agree_on_macro_f1(data: list[tuple[str, str, str]]):
    """The build's figure (``stream.build.train.evaluate`` on probabilities), ``crisis-stream
    evaluate``'s (``evaluate_predictions`` on label names) and the bootstrap's identity
    resample are one macro-F1, over the labels present in gold or predictions."""
    import numpy as np

    from stream.build.train import evaluate

    y_true, y_pred, _ = (list(c) for c in zip(*data, strict=True))
    y = np.array([LABELS.index(v) for v in y_true])
    pred = np.array([LABELS.index(v) for v in y_pred])
    probs = np.full((len(y), len(LABELS)), 0.1)
    probs[np.arange(len(y)), pred] = 0.7
    build = evaluate(probs, y, LABELS, 0.5)
    ev = evaluate_predictions(y_true, y_pred, model_labels=LABELS, resamples=0)
    identity = batch_scores(y[None], pred[None], len(LABELS))[0]
    assert build["macro_f1"] == round(ev.macro_f1, 4) == round(float(identity[1]), 4)
    assert build["accuracy"] == round(ev.accuracy, 4) == round(float(identity[0]), 4)
    assert macro_f1(y, pred) == ev.macro_f1
