"""The feedback simulation and the correction it measures, on small synthetic events."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from stream.adapt.correction import fit_correction
from stream.build import adaptation_run, adaptation_sim
from stream.build.adaptation_chart import adaptation_svg
from stream.build.adaptation_run import fold_scores, format_report, simulation_report
from stream.build.adaptation_sim import CHECKPOINTS, EventScores, Recipe, pool_and_test
from stream.data.message import Message
from stream.evaluation.intervals import mean_interval
from stream.evaluation.metrics import macro_f1
from stream.models.numeric import softmax

LABELS = ["informative", "not_informative"]
WORDS = ["flood", "rescue", "lol", "pizza", "damage", "movie"]


def _shifted_event(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings whose label is ``x0 > 0.3`` on this event (the head learnt ``x0 > 0``
    elsewhere), with a few noisy axes."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)) * 0.3
    x[:, 0] = rng.uniform(-1, 1, size=n)
    y = (x[:, 0] <= 0.3).astype(np.int64)  # 0 = informative
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def test_a_round_keeps_the_serving_head_when_the_held_back_answers_refute_the_candidate():
    """The simulation runs the service's gate: answers whose held-back part says the opposite
    of the fitted part leave the base head serving, as the service would."""
    x, y = _shifted_event(200, 0)
    base = np.stack([x[:, 0] * 2, -x[:, 0] * 2], axis=1)
    held = np.arange(200) % 5 == 0
    answers = np.where(held, 1 - y, y)  # held-back answers contradict the fitted ones
    ev = EventScores(x, base, answers, held)
    assert adaptation_sim._adapt(ev, np.arange(200), None, Recipe()) is None
    honest = EventScores(x, base, y, held)
    assert adaptation_sim._adapt(honest, np.arange(200), None, Recipe()) is not None
    assert adaptation_sim._adapt(honest, np.arange(8), None, Recipe()) is None  # too few


def test_correction_lifts_macro_f1_on_a_shifted_event_and_folds_into_the_head():
    weight = np.array([[4.0, 0, 0, 0, 0, 0], [-4.0, 0, 0, 0, 0, 0]], np.float32)
    bias, temperature = np.zeros(2, np.float32), 2.0
    x, y = _shifted_event(200, 0)
    test_x, test_y = _shifted_event(2000, 1)

    def calibrated(rows: np.ndarray) -> np.ndarray:
        return np.asarray((rows @ weight.T + bias) / temperature)

    corr = fit_correction(x, calibrated(x), y, l2=0.3)
    corrected = calibrated(test_x) + test_x @ corr.dw.T + corr.db
    before = macro_f1(test_y, calibrated(test_x).argmax(axis=1))
    assert macro_f1(test_y, corrected.argmax(axis=1)) > before + 0.05
    w, b = corr.fold(weight, bias, temperature)
    folded = softmax((test_x @ w.T + b) / temperature)
    np.testing.assert_allclose(folded, softmax(corrected), atol=1e-5)


def test_pool_and_test_are_stratified_disjoint_halves():
    y = np.array([0] * 31 + [1] * 10 + [2] * 3)
    pool, test = pool_and_test(y)
    assert not set(pool) & set(test) and len(pool) + len(test) == len(y)
    assert np.bincount(y[pool]).tolist() == [15, 5, 1]
    assert pool_and_test(y)[0].tolist() == pool.tolist()  # seeded


GROUPS = ["event0", "figure8_a", "event1", "figure8_b", "event2"]


def _corpus(per_event: int = 160) -> tuple[list[Message], np.ndarray]:
    """Three events and two genre groups (held out by no fold) whose label boundary on the
    first axis sits at a different place each: a head fitted on the others is biased on the
    event held out."""
    rng = np.random.default_rng(0)
    messages, rows = [], []
    for e, group in enumerate(GROUPS):
        shift = 0.6 * (e - 2)
        for i in range(per_event):
            v = rng.normal(size=8) * 0.4
            v[0] = rng.uniform(-2, 2) + shift
            label = LABELS[0] if v[0] > shift else LABELS[1]
            text = " ".join(rng.choice(WORDS, size=3).tolist())
            messages.append(Message(f"m{e}-{i}", "synthetic", group, text, {"informative": label}))
            rows.append(v / np.linalg.norm(v))
    return messages, np.array(rows)


@pytest.fixture(scope="module")
def scores() -> dict[str, dict[str, EventScores]]:
    messages, x = _corpus()
    with threadpool_limits(1):  # tiny fits: BLAS threads only contend for the cores
        return {"informative": fold_scores("informative", messages, x, "all", lambda _: None)}


def test_simulated_answers_lift_the_held_out_events(scores, monkeypatch):
    monkeypatch.setattr(adaptation_sim, "RANDOM_SEEDS", 2)
    report = simulation_report(scores, "all", False, lambda _: None)
    block = report["tasks"]["informative"]
    summary = block["summary"]
    assert set(block["events"]) == {"event0", "event1", "event2"}
    assert summary["events"] == 3 and summary["checkpoints"] == list(CHECKPOINTS)
    for strategy in ("queue", "random"):
        assert len(summary[strategy]) == len(CHECKPOINTS)
        gain = summary[f"{strategy}_gain"]
        assert gain[0]["mean"] == 0 and gain[3]["mean"] > 0.05
        lo, hi = gain[3]["interval"]
        assert lo <= gain[3]["mean"] <= hi
    row = block["events"]["event0"]
    assert row["pool"] + row["test"] == row["n"] == 160
    assert len(row["random_seeds"]) == 2
    assert report["acceptance"]["gain"] == summary["queue_gain"][CHECKPOINTS.index(100)]
    text = format_report(report)
    assert "event2" in text and "queue - random" in text
    svg = adaptation_svg({"informative": summary}, "adapted head")
    assert svg.startswith("<svg") and svg.count("<polyline") == 2 and "analysts' answers" in svg


def test_the_grid_reports_each_setting_and_its_criterion(scores, monkeypatch):
    monkeypatch.setattr(adaptation_sim, "RANDOM_SEEDS", 1)
    monkeypatch.setattr(adaptation_run, "GRID", (Recipe(0.3, True), Recipe(10.0, False)))
    report = simulation_report(scores, "dev", True, lambda _: None)
    assert [(r["l2"], r["balanced"]) for r in report["grid"]] == [(0.3, True), (10.0, False)]
    at = CHECKPOINTS.index(100)
    for row in report["grid"]:
        assert row["criterion"] == row["tasks"]["informative"]["queue_gain"][at]["mean"]
    assert "l2 10, unweighted" in format_report(report)


def test_mean_interval_covers_the_mean_and_pairs_by_seed():
    gains = np.array([0.02, 0.05, 0.08, 0.03, 0.06])
    iv = mean_interval(gains)
    assert iv.low <= gains.mean() <= iv.high and iv.low >= gains.min()
    assert mean_interval(gains + 1.0).low == pytest.approx(iv.low + 1.0)  # same resamples
