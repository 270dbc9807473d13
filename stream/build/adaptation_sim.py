"""Simulated analysts' feedback on a held-out event: does the adapted head get better, and faster
when analysts answer the review queue than when they answer random messages?

Protocol, per held-out event (its fold's head never saw it): the event's messages are split,
stratified and seeded, into a *pool* the analyst answers from and a fixed *test half*. Why a
fixed test half and not "the rest of the event": the queue draws the least confident messages,
so scoring on what was not drawn would leave the hardest messages out of the evaluation and
flatter the queue. Answers come from the gold labels, in two orders:

- ``queue``: least confident first (lowest top probability) by the *current* model, re-ranked
  after every adaptation step, so at each checkpoint the next answers are what the adapted
  head would route to review;
- ``random``: a seeded permutation of the pool (the control; several seeds, averaged).

As the service does, a round runs every ``ROUND`` (25) answers: the correction
(:func:`stream.adapt.correction.fit_correction`) is fitted on the answers so far minus those
held back (:func:`stream.adapt.answers.held_back`, by a hash of the text), the gate
(:func:`stream.adapt.gate.judge`) lets the candidate serve or keeps the head serving, and the
serving head is scored on the test half at each checkpoint. Pure numpy on each event's
embeddings and its fold head's calibrated logits, so it is tested on synthetic events;
:mod:`stream.build.adaptation_run` supplies the real ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.adapt.correction import DEFAULT_BALANCED, DEFAULT_L2, Correction, fit_correction
from stream.adapt.gate import judge, unjudged
from stream.evaluation.intervals import mean_interval
from stream.evaluation.metrics import macro_f1
from stream.models.numeric import softmax

__all__ = [
    "CHECKPOINTS",
    "HEADLINE_AT",
    "RANDOM_SEEDS",
    "ROUND",
    "EventScores",
    "Recipe",
    "pool_and_test",
    "simulate_event",
    "summarise",
]

#: numbers of answers at which the adapted head is scored
CHECKPOINTS = (0, 25, 50, 100, 200)
#: the checkpoint of the headline gain (and of the dev-grid criterion)
HEADLINE_AT = 100
#: answers per adaptation round (the service's ``--every``)
ROUND = 25
#: random-order draws per event (the control)
RANDOM_SEEDS = 5
SPLIT_SEED = 0
STRATEGIES = ("queue", "random")


@dataclass(frozen=True)
class EventScores:
    """One held-out event as its fold's head sees it: embeddings [n, dim], calibrated logits
    [n, classes] (``z / T``, a hybrid head's lexical term included), gold labels [n], and
    whether the service would hold each message's answer back [n]."""

    x: np.ndarray
    base: np.ndarray
    y: np.ndarray
    held: np.ndarray


@dataclass(frozen=True)
class Recipe:
    """The correction's settings under test."""

    l2: float = DEFAULT_L2
    balanced: bool = DEFAULT_BALANCED

    @property
    def name(self) -> str:
        return f"l2 {self.l2:g}, {'balanced' if self.balanced else 'unweighted'}"


def pool_and_test(y: np.ndarray, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the pool and the test half: each label's rows shuffled and halved."""
    rng = np.random.default_rng(seed)
    pool, test = [], []
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        half = len(rows) // 2
        pool.append(rows[:half])
        test.append(rows[half:])
    return np.sort(np.concatenate(pool)), np.sort(np.concatenate(test))


def _logits(ev: EventScores, rows: np.ndarray, corr: Correction | None) -> np.ndarray:
    z = ev.base[rows]
    if corr is None:
        return np.asarray(z)
    return np.asarray(z + ev.x[rows] @ corr.dw.T + corr.db)


def _adapt(
    ev: EventScores, answered: np.ndarray, serving: Correction | None, recipe: Recipe
) -> Correction | None:
    """One round of the service: the correction serving after it."""
    held = answered[ev.held[answered]]
    fitted = answered[~ev.held[answered]]
    if unjudged(len(answered), len(set(ev.y[held].tolist()))) or not len(fitted):
        return serving
    x, z, y = ev.x[fitted], ev.base[fitted], ev.y[fitted]
    candidate = fit_correction(x, z, y, recipe.l2, recipe.balanced)
    verdict = judge(
        ev.y[held],
        _logits(ev, held, None),
        _logits(ev, held, serving),
        _logits(ev, held, candidate),
    )
    return candidate if verdict.accepted else serving


def _score(ev: EventScores, test: np.ndarray, corr: Correction | None) -> float:
    return round(macro_f1(ev.y[test], _logits(ev, test, corr).argmax(axis=1)), 4)


def queue_curve(ev: EventScores, pool: np.ndarray, test: np.ndarray, recipe: Recipe) -> list[float]:
    """Test macro-F1 at each checkpoint, answers drawn least confident first by the head
    serving (re-ranked every round)."""
    answered, remaining = np.zeros(0, np.int64), pool
    serving: Correction | None = None
    scores = {0: _score(ev, test, None)}
    for n in range(ROUND, CHECKPOINTS[-1] + 1, ROUND):
        need = min(n, len(pool)) - len(answered)
        if need > 0:
            confidence = softmax(_logits(ev, remaining, serving)).max(axis=1)
            take = np.argsort(confidence, kind="stable")[:need]
            answered = np.concatenate([answered, remaining[take]])
            remaining = np.delete(remaining, take)
            serving = _adapt(ev, answered, serving, recipe)
        scores[n] = _score(ev, test, serving)
    return [scores[n] for n in CHECKPOINTS]


def random_curve(
    ev: EventScores, pool: np.ndarray, test: np.ndarray, recipe: Recipe, seed: int
) -> list[float]:
    """Test macro-F1 at each checkpoint, answers drawn in a seeded random order."""
    order = np.random.default_rng(seed).permutation(pool)
    serving: Correction | None = None
    scores = {0: _score(ev, test, None)}
    for n in range(ROUND, CHECKPOINTS[-1] + 1, ROUND):
        serving = _adapt(ev, order[:n], serving, recipe)
        scores[n] = _score(ev, test, serving)
    return [scores[n] for n in CHECKPOINTS]


def simulate_event(ev: EventScores, recipe: Recipe) -> dict[str, Any]:
    """One event's curves: ``queue``, ``random`` (mean over seeds) and each random seed's."""
    pool, test = pool_and_test(ev.y)
    draws = [random_curve(ev, pool, test, recipe, s) for s in range(RANDOM_SEEDS)]
    return {
        "n": len(ev.y),
        "pool": len(pool),
        "test": len(test),
        "queue": queue_curve(ev, pool, test, recipe),
        "random": [round(float(v), 4) for v in np.mean(draws, axis=0)],
        "random_seeds": draws,
    }


def _stat(values: np.ndarray) -> dict[str, Any]:
    iv = mean_interval(values)
    interval = [round(iv.low, 4), round(iv.high, 4)]
    return {"mean": round(float(values.mean()), 4), "interval": interval}


def summarise(per_event: Mapping[str, Mapping[str, Any]], events: Sequence[str]) -> dict[str, Any]:
    """Mean over ``events`` at every checkpoint, with 95 % bootstrap intervals over events:
    macro-F1 per strategy, its gain over no answers and queue minus random (both paired by
    event: every resample draws the same events for both sides)."""
    curves = {s: np.array([per_event[e][s] for e in events]) for s in STRATEGIES}
    out: dict[str, Any] = {"events": len(events), "checkpoints": list(CHECKPOINTS)}
    for s, c in curves.items():
        out[s] = [_stat(c[:, j]) for j in range(len(CHECKPOINTS))]
        out[f"{s}_gain"] = [_stat(c[:, j] - c[:, 0]) for j in range(len(CHECKPOINTS))]
    diff = curves["queue"] - curves["random"]
    out["queue_minus_random"] = [_stat(diff[:, j]) for j in range(len(CHECKPOINTS))]
    return out
