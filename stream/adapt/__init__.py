"""Adaptation to a new disaster: analysts' feedback turned into an event-adapted bundle."""

from stream.adapt.correction import DEFAULT_L2, Correction, fit_correction
from stream.adapt.holdout import HELD_BACK_EVERY, held_back, split_answers

__all__ = [
    "DEFAULT_L2",
    "HELD_BACK_EVERY",
    "Correction",
    "fit_correction",
    "held_back",
    "split_answers",
]
