"""Which analysts' answers fit an adapted head and which are held back to gate it.

Why a fixed rule by arrival order: the answers that judge a new head must never have been seen
by its fit, and the simulation that chose the correction's settings
(``crisis-stream models simulate-feedback``) must fit on exactly the answers the service fits
on. Every :data:`HELD_BACK_EVERY`-th answer of a task (the 5th, 10th, ...) is held back; the
rule needs no random state, so a restarted service splits the same answers the same way.
"""

from __future__ import annotations

import numpy as np

__all__ = ["HELD_BACK_EVERY", "held_back", "split_answers"]

#: one answer in this many (by arrival order, per task) is held back to gate the new head
HELD_BACK_EVERY = 5


def held_back(position: int) -> bool:
    """Whether the answer at ``position`` (0-based, arrival order within its task) is held
    back for the gate: the 5th, 10th, ... answer."""
    return position % HELD_BACK_EVERY == HELD_BACK_EVERY - 1


def split_answers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions among a task's first ``n`` answers that fit the correction, and those held
    back (:func:`held_back`)."""
    position = np.arange(n)
    gate = position % HELD_BACK_EVERY == HELD_BACK_EVERY - 1
    return position[~gate], position[gate]
