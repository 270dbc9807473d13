"""Adaptation to a new disaster: analysts' feedback turned into an event-adapted bundle."""

from stream.adapt.answers import HELD_BACK_EVERY, held_back
from stream.adapt.correction import DEFAULT_BALANCED, DEFAULT_L2, Correction, fit_correction
from stream.adapt.gate import Verdict, judge

__all__ = [
    "DEFAULT_BALANCED",
    "DEFAULT_L2",
    "HELD_BACK_EVERY",
    "Correction",
    "Verdict",
    "fit_correction",
    "held_back",
    "judge",
]
