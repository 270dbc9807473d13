"""The gate an adapted head passes before it serves, on answers nobody trained on.

One function for the service (:mod:`stream.adapt.adapter`) and the simulation of the docs
(:mod:`stream.build.adaptation_sim`), so that what is measured is what ships. The candidate
must not score a macro-F1 more than ``max_drop`` below the head serving now, nor below the base
head (small allowed drops cannot add up over rounds). Nothing is judged with fewer than
``min_answers`` counting answers, or while the held-back answers carry fewer than two labels:
a candidate that gives every event one label would score perfectly on held-back answers of
that one label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stream.evaluation.metrics import macro_f1

__all__ = ["MAX_DROP", "MIN_ANSWERS", "Verdict", "judge", "unjudged"]

MAX_DROP = 0.02
MIN_ANSWERS = 10


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str
    scores: dict[str, float] = field(default_factory=dict)


def unjudged(answers: int, held_labels: int, min_answers: int = MIN_ANSWERS) -> str | None:
    """Why nothing can be judged yet, or None."""
    if answers < min_answers:
        return f"{answers} answers, {min_answers} needed"
    if held_labels < 2:
        return f"held-back answers carry {held_labels} label(s), 2 needed to judge"
    return None


def judge(
    y: np.ndarray,
    base: np.ndarray,
    serving: np.ndarray,
    candidate: np.ndarray,
    max_drop: float = MAX_DROP,
) -> Verdict:
    """The verdict on the held-back answers ``y`` from each head's logits of them (macro-F1
    over the labels present in ``y`` or the predictions: a held-back set rarely has them all)."""
    scores = {
        "macro_f1_base": macro_f1(y, base.argmax(1)),
        "macro_f1_serving": macro_f1(y, serving.argmax(1)),
        "macro_f1_candidate": macro_f1(y, candidate.argmax(1)),
    }
    floor = max(scores["macro_f1_base"], scores["macro_f1_serving"]) - max_drop
    if scores["macro_f1_candidate"] < floor:
        why = (
            f"held-back macro-F1 {scores['macro_f1_candidate']:.3f} < "
            f"{floor + max_drop:.3f} (serving or base) - {max_drop}"
        )
        return Verdict(False, why, scores)
    return Verdict(True, "gate passed", scores)
