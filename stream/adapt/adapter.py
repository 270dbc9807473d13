"""Fit each task's event-adapted head from the answers, and gate it before it serves.

Every adaptation starts again from the *base* bundle's trained head with all answers so far
(:func:`stream.adapt.correction.fit_correction` on the base head's calibrated logits): one
recipe, no drift from corrections stacked on corrections, and a result that depends only on
the answers. The encoder is the base bundle's, frozen, so an answer's embedding is computed
once and kept.

The gate (:mod:`stream.adapt.gate`) judges the candidate on the held-back answers
(:func:`stream.adapt.answers.held_back`) against the head serving now and the base head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.adapt.answers import Answers
from stream.adapt.correction import DEFAULT_L2, fit_correction
from stream.adapt.gate import MAX_DROP, MIN_ANSWERS, judge, unjudged
from stream.models.bundle import Bundle
from stream.models.heads import LinearHead
from stream.schemas import FeedbackEvent

__all__ = ["Adapter", "TaskAdaptation"]


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
        max_drop: float = MAX_DROP,
        min_answers: int = MIN_ANSWERS,
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
        why = unjudged(n_fit + n_held, len({a.label for a in held}), self.min_answers)
        if why is not None or not fitted:
            return TaskAdaptation(task, n_fit, n_held, False, why or "none fitted")
        index = {name: i for i, name in enumerate(head.labels)}
        x, analyses = self._features(fitted)
        y = np.array([index[str(a.label)] for a in fitted])
        base = self._logits(head, head.weight, head.bias, x, analyses)
        correction = fit_correction(x, base, y, self.l2)
        w, b = correction.fold(head.weight, head.bias, head.temperature)
        xh, ah = self._features(held)
        yh = np.array([index[str(a.label)] for a in held])
        verdict = judge(
            yh,
            self._logits(head, head.weight, head.bias, xh, ah),
            self._logits(head, *self.serving[task], xh, ah),
            self._logits(head, w, b, xh, ah),
            self.max_drop,
        )
        return TaskAdaptation(
            task, n_fit, n_held, verdict.accepted, verdict.reason, w, b, verdict.scores
        )
