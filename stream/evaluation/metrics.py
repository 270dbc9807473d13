"""Classification metrics at runtime (pure numpy): accuracy, macro-F1, per-class F1, confusion
matrix, expected calibration error, and bootstrap intervals of the first two.

The worker image carries no scikit-learn, yet ``crisis-stream evaluate`` and backtests must score
labelled events where they run; these follow scikit-learn's definitions (macro-F1 over the labels
present in truth or prediction, F1 = 0 where precision and recall are both 0) so the numbers
match the build-time ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from stream.evaluation.intervals import RESAMPLES, Interval, bootstrap_intervals

__all__ = [
    "N_BINS",
    "ClassScore",
    "Evaluation",
    "ReliabilityBin",
    "confusion_matrix",
    "evaluate_predictions",
    "expected_calibration_error",
    "format_evaluation",
    "label_order",
]

#: equal-width confidence bins of the ECE and the reliability diagram
N_BINS = 10


@dataclass(frozen=True)
class ClassScore:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin ``[lo, hi)``: how many predictions, their mean confidence, accuracy."""

    lo: float
    hi: float
    count: int
    confidence: float
    accuracy: float


@dataclass(frozen=True)
class Evaluation:
    """Scores of one labeller on one task; ``confusion[i][j]`` = true ``labels[i]``, predicted
    ``labels[j]``."""

    n: int
    labels: list[str]
    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassScore]
    confusion: list[list[int]]
    ece: float
    reliability: list[ReliabilityBin] = field(default_factory=list)
    #: bootstrap intervals of ``accuracy`` and ``macro_f1`` (empty when not computed)
    intervals: dict[str, Interval] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_order(preferred: Sequence[str], *seen: Sequence[str]) -> list[str]:
    """``preferred`` (the model's label order) first, then any other label seen, sorted."""
    present = {lab for labs in seen for lab in labs}
    extra = sorted(present - set(preferred))
    return [lab for lab in preferred if lab in present] + extra


def confusion_matrix(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> np.ndarray:
    """Counts ``[true, pred]`` over ``labels``; pairs with a label outside ``labels`` are
    ignored."""
    index = {lab: i for i, lab in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        if t in index and p in index:
            cm[index[t], index[p]] += 1
    return cm


def expected_calibration_error(
    confidence: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    n_bins: int = N_BINS,
) -> tuple[float, list[ReliabilityBin]]:
    """ECE over ``n_bins`` equal-width bins ``[k/n, (k+1)/n)`` (a confidence of 1 joins the
    last; the binning of ``stream.build.train`` and scikit-learn's ``calibration_curve``):
    sum over bins of ``count/N * |accuracy - mean confidence|``."""
    conf = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    ok = np.asarray(correct, dtype=bool)
    if conf.shape != ok.shape:
        raise ValueError("confidence and correct differ in length")
    idx = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    bins: list[ReliabilityBin] = []
    ece = 0.0
    for b in range(n_bins):
        sel = idx == b
        count = int(sel.sum())
        c = float(conf[sel].mean()) if count else 0.0
        a = float(ok[sel].mean()) if count else 0.0
        if count:
            ece += count / conf.size * abs(a - c)
        bins.append(ReliabilityBin(b / n_bins, (b + 1) / n_bins, count, c, a))
    return float(ece), bins


def evaluate_predictions(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    confidence: Sequence[float] | None = None,
    model_labels: Sequence[str] = (),
    resamples: int = RESAMPLES,
) -> Evaluation:
    """Score predictions against gold labels; ``confidence`` is the predicted label's
    probability (for the ECE; omitted -> ECE 0 and no reliability bins); ``resamples`` > 0
    adds 95 % bootstrap intervals (:mod:`stream.evaluation.intervals`)."""
    if len(y_true) != len(y_pred):
        raise ValueError("y_true and y_pred differ in length")
    labels = label_order(model_labels, y_true, y_pred)
    cm = confusion_matrix(y_true, y_pred, labels)
    n = len(y_true)
    tp = np.diag(cm).astype(np.float64)
    pred_tot = cm.sum(axis=0).astype(np.float64)
    true_tot = cm.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, pred_tot, out=np.zeros_like(tp), where=pred_tot > 0)
    recall = np.divide(tp, true_tot, out=np.zeros_like(tp), where=true_tot > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    per_class = {
        lab: ClassScore(float(precision[i]), float(recall[i]), float(f1[i]), int(true_tot[i]))
        for i, lab in enumerate(labels)
    }
    ece, bins = 0.0, list[ReliabilityBin]()
    if confidence is not None:
        correct = [t == p for t, p in zip(y_true, y_pred, strict=True)]
        ece, bins = expected_calibration_error(confidence, correct)
    intervals = bootstrap_intervals(y_true, y_pred, labels, resamples) if resamples and n else {}
    return Evaluation(
        n=n,
        labels=labels,
        accuracy=float(tp.sum() / n) if n else 0.0,
        macro_f1=float(f1.mean()) if labels else 0.0,
        per_class=per_class,
        confusion=cm.tolist(),
        ece=ece,
        reliability=bins,
        intervals=intervals,
    )


def format_evaluation(ev: Evaluation, title: str = "") -> str:
    """A plain-text report: headline scores, per-class table, confusion matrix."""
    lines = [title] if title else []
    lines.append(
        f"n={ev.n}  accuracy={ev.accuracy:.4f}  macro-F1={ev.macro_f1:.4f}  ECE={ev.ece:.4f}"
    )
    if ev.intervals:
        acc, f1 = ev.intervals["accuracy"], ev.intervals["macro_f1"]
        lines.append(
            f"{acc.level:.0%} interval (bootstrap over events, {acc.resamples} resamples): "
            f"accuracy [{acc.low:.4f}, {acc.high:.4f}]  macro-F1 [{f1.low:.4f}, {f1.high:.4f}]"
        )
    width = max([len(lab) for lab in ev.labels] + [5])
    lines.append(f"{'class':<{width}}  precision  recall      f1  support")
    for lab, s in ev.per_class.items():
        lines.append(
            f"{lab:<{width}}  {s.precision:9.4f}  {s.recall:6.4f}  {s.f1:6.4f}  {s.support:7d}"
        )
    lines.append("confusion (rows: gold, columns: predicted)")
    short = [lab[:10] for lab in ev.labels]
    lines.append(" " * width + "  " + " ".join(f"{s:>10}" for s in short))
    for lab, row in zip(ev.labels, ev.confusion, strict=True):
        lines.append(f"{lab:<{width}}  " + " ".join(f"{v:>10d}" for v in row))
    return "\n".join(lines)
