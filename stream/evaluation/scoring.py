"""Scoring a labeller on one task: the :class:`Evaluation` report (accuracy, macro-F1,
per-class scores, confusion matrix, ECE, reliability bins, bootstrap intervals) behind
``crisis-stream evaluate`` and backtests, and its plain-text form."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from stream.evaluation.intervals import RESAMPLES, Interval, bootstrap_intervals
from stream.evaluation.metrics import (
    ClassScore,
    ReliabilityBin,
    batch_scores,
    class_f1,
    confusion_matrix,
    expected_calibration_error,
    label_order,
)

__all__ = ["Evaluation", "evaluate_predictions", "format_evaluation"]


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
    codes = {lab: i for i, lab in enumerate(labels)}
    t = np.array([codes[v] for v in y_true], dtype=np.int64)
    p = np.array([codes[v] for v in y_pred], dtype=np.int64)
    f1 = class_f1(t, p, len(labels))
    acc, macro = batch_scores(t[None], p[None], len(labels))[0] if n else (0.0, 0.0)
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
        accuracy=float(acc),
        macro_f1=float(macro),
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
