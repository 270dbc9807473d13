"""Fit each task's event-adapted head from the answers, and gate it before it serves.

Every adaptation starts again from the *base* bundle's trained head with all answers so far
(:func:`stream.adapt.correction.fit_correction` on the base head's calibrated logits): one
recipe, no drift from corrections stacked on corrections, and a result that depends only on
the answers. The encoder is the base bundle's, frozen, so an answer's embedding is computed
once and kept.

The gate is the backtest's, on feedback nobody trained on (:func:`stream.adapt.answers.
held_back`): the candidate must not score a macro-F1 more than ``max_drop`` below the head
serving now, nor below the base head (so that small allowed drops cannot add up over rounds).
A task is not adapted yet with fewer than ``min_answers`` counting answers, or while its
held-back answers carry fewer than two labels: a candidate that gives every event one label
would score perfectly on held-back answers of that one label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.adapt.answers import Answers
from stream.adapt.correction import DEFAULT_L2, fit_correction
from stream.models.bundle import Bundle
from stream.models.heads import LinearHead
from stream.models.numeric import softmax
from stream.schemas import FeedbackEvent

__all__ = ["Adapter", "TaskAdaptation"]


def _macro_f1(y: np.ndarray, pred: np.ndarray, classes: int) -> float:
    """Macro-F1 over the classes present in ``y`` or ``pred`` (a held-back set rarely has
    every label; absent ones would only add zeros)."""
    scores = []
    for c in range(classes):
        tp = float(np.sum((pred == c) & (y == c)))
        fp = float(np.sum((pred == c) & (y != c)))
        fn = float(np.sum((pred != c) & (y == c)))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


@dataclass
class TaskAdaptation:
    """One task's outcome: the candidate head, and whether the gate let it serve."""

    task: str
    fitted: int
    held_back: int
    accepted: bool
    reason: str
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    gate: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "fitted": self.fitted,
            "held_back": self.held_back,
            "accepted": self.accepted,
            "reason": self.reason,
            **{k: round(v, 4) for k, v in self.gate.items()},
        }


class Adapter:
    """Adapted heads of ``bundle``'s tasks; ``serving`` holds the ``W``/``b`` now served."""

    def __init__(
        self,
        bundle: Bundle,
        l2: float = DEFAULT_L2,
        max_drop: float = 0.02,
        min_answers: int = 10,
    ) -> None:
        self.bundle = bundle
        self.heads = {h.task: h for h in bundle.heads}
        self.l2 = l2
        self.max_drop = max_drop
        self.min_answers = min_answers
        self.serving: dict[str, tuple[np.ndarray, np.ndarray]] = {
            t: (h.weight, h.bias) for t, h in self.heads.items()
        }
        self._embedded: dict[str, np.ndarray] = {}

    def _features(self, answers: list[FeedbackEvent]) -> tuple[np.ndarray, list[Any] | None]:
        texts = [a.text for a in answers]
        missing = sorted({t for t in texts if t not in self._embedded})
        if missing:
            emb = self.bundle.encoder.encode(missing).embeddings
            self._embedded.update(zip(missing, np.asarray(emb, np.float32), strict=True))
        x = np.stack([self._embedded[t] for t in texts]) if texts else np.zeros((0, 1))
        return x, self.bundle.analyse(texts)

    def _logits(
        self, head: LinearHead, w: np.ndarray, b: np.ndarray, x: np.ndarray, analyses: Any
    ) -> np.ndarray:
        """Calibrated logits of ``head`` with ``W``/``b`` replaced (its lexical part kept)."""
        swapped = LinearHead(head.task, head.labels, w, b, head.temperature, 0.5, head.lexical)
        return swapped.predict(x, analyses).logits / head.temperature

    def adapt(self, answers: Answers) -> list[TaskAdaptation]:
        """One outcome per task that has answers; accepted heads become ``serving``."""
        out = []
        for task, head in self.heads.items():
            fitted, held = answers.split(task)
            if not fitted and not held:
                continue
            result = self._task(head, fitted, held)
            if result.accepted and result.weight is not None and result.bias is not None:
                self.serving[task] = (result.weight, result.bias)
            out.append(result)
        return out

    def _task(
        self, head: LinearHead, fitted: list[FeedbackEvent], held: list[FeedbackEvent]
    ) -> TaskAdaptation:
        task, n_fit, n_held = head.task, len(fitted), len(held)
        if n_fit + n_held < self.min_answers:
            why = f"{n_fit + n_held} answers, {self.min_answers} needed"
            return TaskAdaptation(task, n_fit, n_held, False, why)
        kinds = len({a.label for a in held})
        if kinds < 2 or not fitted:
            why = f"held-back answers carry {kinds} label(s), 2 needed to judge"
            return TaskAdaptation(task, n_fit, n_held, False, why if fitted else "none fitted")
        index = {name: i for i, name in enumerate(head.labels)}
        x, analyses = self._features(fitted)
        y = np.array([index[str(a.label)] for a in fitted])
        base = self._logits(head, head.weight, head.bias, x, analyses)
        correction = fit_correction(x, base, y, self.l2)
        w, b = correction.fold(head.weight, head.bias, head.temperature)
        xh, ah = self._features(held)
        yh = np.array([index[str(a.label)] for a in held])
        classes = len(head.labels)

        def score(weight: np.ndarray, bias: np.ndarray) -> float:
            logits = self._logits(head, weight, bias, xh, ah)
            return _macro_f1(yh, softmax(logits).argmax(1), classes)

        gate = {
            "macro_f1_base": score(head.weight, head.bias),
            "macro_f1_serving": score(*self.serving[task]),
            "macro_f1_candidate": score(w, b),
        }
        floor = max(gate["macro_f1_base"], gate["macro_f1_serving"]) - self.max_drop
        if gate["macro_f1_candidate"] < floor:
            why = (
                f"held-back macro-F1 {gate['macro_f1_candidate']:.3f} < "
                f"{floor + self.max_drop:.3f} (serving or base) - {self.max_drop}"
            )
            return TaskAdaptation(task, n_fit, n_held, False, why, w, b, gate)
        return TaskAdaptation(task, n_fit, n_held, True, "gate passed", w, b, gate)
