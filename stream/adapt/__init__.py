"""Adaptation to a new disaster: analysts' feedback turned into an event-adapted bundle."""

from stream.adapt.correction import DEFAULT_L2, Correction, fit_correction

__all__ = ["DEFAULT_L2", "Correction", "fit_correction"]
