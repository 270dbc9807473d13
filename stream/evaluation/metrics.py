"""The one implementation of the classification metrics (pure numpy): accuracy, per-class and
macro F1, confusion matrix, expected calibration error. The build, ``crisis-stream evaluate``,
backtests and the bootstrap intervals all score with these, so their figures agree.

Label-set rule: macro-F1 averages the F1 of the labels present in the gold labels or the
predictions (scikit-learn's ``f1_score(average="macro")`` without ``labels=``); a label in
neither has no F1 and does not count. F1 is 0 where precision and recall are both 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "N_BINS",
    "ClassScore",
    "ReliabilityBin",
    "accuracy",
    "batch_scores",
    "class_f1",
    "confusion_matrix",
    "expected_calibration_error",
    "label_order",
    "macro_f1",
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


def batch_scores(t: np.ndarray, p: np.ndarray, n_labels: int) -> np.ndarray:
    """Accuracy and macro-F1 of each row of ``t``/``p`` (``(r, n)`` label codes below
    ``n_labels``), shape ``(r, 2)``; vectorised over rows for the bootstrap."""
    r, n = t.shape
    cells = (np.arange(r)[:, None] * n_labels * n_labels + t * n_labels + p).ravel()
    cm = np.bincount(cells, minlength=r * n_labels * n_labels).reshape(r, n_labels, n_labels)
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(np.float64)
    true_tot = cm.sum(axis=2).astype(np.float64)
    pred_tot = cm.sum(axis=1).astype(np.float64)
    denom = true_tot + pred_tot
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    present = denom > 0
    macro = f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    return np.stack([tp.sum(axis=1) / max(n, 1), macro], axis=1)


def _as_codes(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    t, p = np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError("y and pred differ in length")
    return t, p, int(max(t.max(initial=-1), p.max(initial=-1))) + 1


def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Share of equal label codes (0 for no events)."""
    t, p, _ = _as_codes(y, pred)
    return float(np.mean(t == p)) if t.size else 0.0


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Macro-F1 of integer label codes over the labels present in ``y`` or ``pred``."""
    t, p, k = _as_codes(y, pred)
    if not t.size:
        return 0.0
    return float(batch_scores(t[None], p[None], k)[0, 1])


def class_f1(y: np.ndarray, pred: np.ndarray, n_labels: int) -> np.ndarray:
    """F1 of each label code ``0..n_labels-1`` (0 for a label in neither ``y`` nor ``pred``)."""
    t, p, _ = _as_codes(y, pred)
    tp = np.bincount(t[t == p], minlength=n_labels).astype(np.float64)
    denom = (np.bincount(t, minlength=n_labels) + np.bincount(p, minlength=n_labels)).astype(
        np.float64
    )
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
