"""Build time: linear heads on frozen sentence embeddings, calibrated and measured.

Trained heads are multinomial logistic regression (balanced class weights, C chosen on dev by
macro-F1), then a temperature fitted on dev (NLL) and a review threshold chosen on dev. Zero-shot
heads are label prototypes: the normalised embedding of a short English description per label,
times a fixed scale, so a bundle built without labelled data still labels events (and a new
label only needs a sentence). Both are plain ``W``/``b`` arrays, which keeps the token-level
rationale exact (see :mod:`stream.models.heads`).

Features are computed by the bundle's own int8 encoder, so the head is trained on exactly what
the worker will feed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from stream.build.calibration import fit_temperature
from stream.errors import MissingExtraError
from stream.evaluation.intervals import bootstrap_intervals
from stream.evaluation.metrics import accuracy, class_f1, expected_calibration_error, macro_f1
from stream.models.heads import LinearHead, save_head
from stream.models.lexicon import Analysis, LexicalPart
from stream.models.numeric import softmax
from stream.tasks import LABELS

__all__ = [
    "C_GRID",
    "DESCRIPTIONS",
    "LABELS",
    "ZERO_SHOT_REVIEW_THRESHOLD",
    "ZERO_SHOT_SCALE",
    "HeadResult",
    "Split",
    "choose_review_threshold",
    "class_rows",
    "evaluate",
    "fixed_head",
    "save_head",
    "train_head",
    "zero_shot_head",
]

# Chosen on the agreed dev splits (zero-shot macro-F1 and NLL); plain phrasing of what a tweet
# of each label says works better than an abstract definition.
_CHATTER = "a random personal tweet: jokes, memes, selfies, sports, celebrities, advertisements"
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "informative": {
        "informative": "useful information about a disaster: damage, casualties, people "
        "affected, rescue, donations, warnings",
        "not_informative": _CHATTER,
    },
    "humanitarian": {
        "affected_individuals": "people injured, killed, dead, missing, trapped or displaced "
        "by the disaster",
        "infrastructure_and_utility_damage": "collapsed buildings, destroyed houses, damaged "
        "roads and bridges, downed power lines, flooded cars",
        "not_humanitarian": _CHATTER,
        "other_relevant_information": "news and updates about the storm, earthquake or fire: "
        "weather, forecasts, warnings, maps and statistics",
        "rescue_volunteering_or_donation_effort": "rescue teams, volunteers, shelters, relief "
        "supplies, donations and fundraising",
    },
}

ZERO_SHOT_SCALE = 10.0  # cosine -> logit; lowest dev NLL of 6..50 for both tasks (fixed: a
# data-less build has nothing to fit it on)
ZERO_SHOT_REVIEW_THRESHOLD = 0.5  # untuned heads: send anything below an even bet to review
C_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
REVIEW_ACCURACY = 0.90  # events labelled automatically must be this accurate on dev
REVIEW_RANGE = (0.5, 0.9)


@dataclass(frozen=True)
class Split:
    """Embeddings [N, D], label indices [N] (into the head's ``labels``), for hybrid heads
    the texts' lexical analyses, and optional per-row training weights (None: all 1)."""

    x: np.ndarray
    y: np.ndarray
    analyses: Sequence[Analysis] | None = None
    weights: np.ndarray | None = None

    @classmethod
    def of(
        cls,
        x: np.ndarray,
        names: Sequence[str],
        labels: Sequence[str],
        analyses: Sequence[Analysis] | None = None,
        weights: np.ndarray | None = None,
    ) -> Split:
        index = {name: i for i, name in enumerate(labels)}
        unknown = sorted(set(names) - set(index))
        if unknown:
            raise ValueError(f"labels {unknown} are not in {list(labels)}")
        y = np.array([index[n] for n in names], dtype=np.int64)
        return cls(x, y, analyses, weights)


@dataclass
class HeadResult:
    """A head ready to be written: arrays, calibration, threshold and what was measured."""

    task: str
    kind: Literal["trained", "zero_shot"]
    labels: list[str]
    weight: np.ndarray
    bias: np.ndarray
    temperature: float = 1.0
    review_threshold: float = ZERO_SHOT_REVIEW_THRESHOLD
    descriptions: dict[str, str] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    lexical: LexicalPart | None = None

    def logits(self, split: Split) -> np.ndarray:
        """Uncalibrated logits, computed by the runtime's :class:`LinearHead` itself."""
        head = LinearHead(self.task, self.labels, self.weight, self.bias, lexical=self.lexical)
        return head.predict(split.x, split.analyses).logits

    def probs(self, split: Split) -> np.ndarray:
        """Calibrated probabilities."""
        return softmax(self.logits(split) / self.temperature)

    def measure(self, splits: dict[str, Split]) -> dict[str, Any]:
        return {
            name: evaluate(self.probs(s), s.y, self.labels, self.review_threshold)
            for name, s in splits.items()
        }

    def spec(self, file: str) -> dict[str, Any]:
        """The manifest's ``heads[]`` entry."""
        return {
            "task": self.task,
            "kind": self.kind,
            "labels": self.labels,
            "file": file,
            "temperature": round(self.temperature, 6),
            "review_threshold": self.review_threshold,
            "descriptions": self.descriptions,
            "lexical": self.lexical is not None,
            "metrics": self.metrics,
        }


def evaluate(
    probs: np.ndarray, y: np.ndarray, labels: Sequence[str], review_threshold: float
) -> dict[str, Any]:
    """Accuracy, macro-F1 (:mod:`stream.evaluation.metrics`), per-class F1, ECE, NLL, the share and
    accuracy of the events kept automatically (top probability >= ``review_threshold``), and
    95 % bootstrap intervals of accuracy and macro-F1 (:mod:`stream.evaluation.intervals`)."""
    pred = probs.argmax(axis=1)
    names = [labels[i] for i in y], [labels[i] for i in pred]
    intervals = bootstrap_intervals(*names, labels) if len(y) else {}
    f1 = class_f1(y, pred, len(labels))
    per_class = {name: round(float(f1[k]), 4) for k, name in enumerate(labels)}
    ece, _ = expected_calibration_error(probs.max(axis=1), pred == y)
    kept = probs.max(axis=1) >= review_threshold
    nll = -np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12)).mean()
    return {
        "n": len(y),
        "accuracy": round(accuracy(y, pred), 4),
        "macro_f1": round(macro_f1(y, pred), 4),
        "per_class_f1": per_class,
        "ece": round(ece, 4),
        "nll": round(float(nll), 4),
        "auto_share": round(float(kept.mean()), 4),
        "auto_accuracy": round(float((pred == y)[kept].mean()), 4) if kept.any() else None,
        "intervals": {m: [round(iv.low, 4), round(iv.high, 4)] for m, iv in intervals.items()},
    }


def choose_review_threshold(
    probs: np.ndarray,
    y: np.ndarray,
    accuracy: float = REVIEW_ACCURACY,
    bounds: tuple[float, float] = REVIEW_RANGE,
) -> float:
    """The lowest threshold (0.01 steps within ``bounds``) at which the events kept
    automatically are at least ``accuracy`` accurate on dev; the upper bound if none is."""
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == y
    lo, hi = bounds
    for t in np.round(np.arange(lo, hi + 1e-9, 0.01), 2):
        kept = conf >= t
        if kept.any() and float(correct[kept].mean()) >= accuracy:
            return float(t)
    return hi


def class_rows(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One weight row and bias per class from scikit-learn's ``coef_``/``intercept_``, which
    keep a single row for two classes: split it symmetrically (softmax = the sigmoid)."""
    coef, icpt = np.asarray(coef, np.float64), np.asarray(intercept, np.float64)
    if coef.shape[0] == 1:
        coef, icpt = np.stack([-coef[0] / 2, coef[0] / 2]), np.array([-icpt[0], icpt[0]]) / 2
    return coef, icpt


def train_head(
    task: str, labels: list[str], train: Split, dev: Split, grid: Sequence[float] = C_GRID
) -> HeadResult:
    """Logistic regression with C chosen on dev (macro-F1), then temperature and review
    threshold fitted on dev. Records the C search in ``metrics["selection"]``."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:
        raise MissingExtraError("sklearn", "build") from exc
    k = len(labels)
    if set(np.unique(train.y).tolist()) != set(range(k)):
        raise ValueError(f"{task}: train split lacks some of the labels {labels}")
    scores: dict[float, float] = {}
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for c in grid:
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
        model.fit(train.x, train.y, sample_weight=train.weights)
        coef, icpt = class_rows(model.coef_, model.intercept_)
        scores[c] = macro_f1(dev.y, (dev.x @ coef.T + icpt).argmax(axis=1))
        if best is None or scores[c] > scores[best[0]]:
            best = (c, coef, icpt)
    assert best is not None
    c, coef, icpt = best
    weight, bias = coef.astype(np.float32), icpt.astype(np.float32)
    temperature = fit_temperature(dev.x @ weight.T + bias, dev.y)
    head = HeadResult(task, "trained", labels, weight, bias, temperature)
    head.review_threshold = choose_review_threshold(head.probs(dev), dev.y)
    head.metrics["selection"] = {
        "C": c,
        "dev_macro_f1_by_C": {str(g): round(s, 4) for g, s in scores.items()},
        "class_weight": "balanced",
        "review_rule": f"lowest threshold with dev auto accuracy >= {REVIEW_ACCURACY}, "
        f"clipped to {list(REVIEW_RANGE)}",
    }
    return head


def fixed_head(
    task: str, labels: list[str], weight: np.ndarray, bias: np.ndarray, dev: Split
) -> HeadResult:
    """A head with given ``W``/``b`` (e.g. the fine-tuning heads), temperature and review
    threshold fitted on dev as :func:`train_head` does."""
    weight, bias = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
    temperature = fit_temperature(dev.x @ weight.T + bias, dev.y)
    head = HeadResult(task, "trained", labels, weight, bias, temperature)
    head.review_threshold = choose_review_threshold(head.probs(dev), dev.y)
    return head


def zero_shot_head(
    task: str,
    labels: list[str],
    descriptions: dict[str, str],
    description_embeddings: np.ndarray,
    scale: float = ZERO_SHOT_SCALE,
) -> HeadResult:
    """Prototype head: ``W = scale * normalised description embeddings``, ``b = 0``."""
    emb = np.asarray(description_embeddings, np.float32)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return HeadResult(
        task,
        "zero_shot",
        labels,
        (emb * scale).astype(np.float32),
        np.zeros(len(labels), np.float32),
        descriptions={name: descriptions[name] for name in labels},
    )
