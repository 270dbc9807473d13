"""Bootstrap confidence intervals for accuracy and macro-F1, and for the difference between two
labellers scored on the same events.

Why: a test split of a few hundred tweets carries several points of noise in macro-F1 (one
CrisisMMD humanitarian class has 9 test tweets), so a backtest that prints a single number invites
choosing a model on noise. These are percentile bootstrap intervals over events, seeded, so the
same inputs always print the same interval.

Assumption: events are exchangeable. The interval says how the figure would move on other tweets
like these; it does not cover a different disaster (tweets of one disaster are correlated, and
resampling disasters would need far more of them than a split holds).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from stream.evaluation.metrics import batch_scores

__all__ = [
    "LEVEL",
    "RESAMPLES",
    "Difference",
    "Interval",
    "bootstrap_difference",
    "bootstrap_intervals",
    "mean_interval",
]

#: resamples per interval: the 2.5 % / 97.5 % quantiles move by about 0.002 between seeds
RESAMPLES = 1000
#: two-sided coverage of the intervals
LEVEL = 0.95
#: cap on resample x event cells held at once (int64 codes: about 32 MB)
_CELLS = 4_000_000
METRICS = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class Interval:
    """A two-sided percentile interval at ``level``."""

    low: float
    high: float
    level: float = LEVEL
    resamples: int = RESAMPLES


@dataclass(frozen=True)
class Difference:
    """B minus A on the same events: the observed difference, its interval, and the share of
    resamples in which B scored higher than A."""

    delta: float
    low: float
    high: float
    b_better: float
    level: float = LEVEL
    resamples: int = RESAMPLES


def _codes(y: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    index = {lab: i for i, lab in enumerate(labels)}
    try:
        return np.fromiter((index[v] for v in y), dtype=np.int64, count=len(y))
    except KeyError as e:
        raise ValueError(f"label {e.args[0]!r} is not in labels") from None


def _index_chunks(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Resample indices, ``(chunk, n)`` at a time, the same for a given ``(n, resamples, seed)``."""
    rng = np.random.default_rng(seed)
    step = max(1, _CELLS // max(n, 1))
    for start in range(0, resamples, step):
        yield rng.integers(0, n, size=(min(step, resamples - start), n))


def _quantiles(stats: np.ndarray, level: float) -> np.ndarray:
    tail = (1.0 - level) / 2.0
    return np.asarray(np.quantile(stats, [tail, 1.0 - tail], axis=0))


def _check(n: int, resamples: int, level: float) -> None:
    if n == 0:
        raise ValueError("no events to resample")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    if not 0.0 < level < 1.0:
        raise ValueError("level must be in (0, 1)")


def bootstrap_intervals(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    labels: Sequence[str],
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> dict[str, Interval]:
    """Percentile intervals of ``accuracy`` and ``macro_f1``; ``labels`` must hold every label
    in ``y_true`` and ``y_pred``."""
    if len(y_true) != len(y_pred):
        raise ValueError("y_true and y_pred differ in length")
    _check(len(y_true), resamples, level)
    t, p = _codes(y_true, labels), _codes(y_pred, labels)
    stats = np.concatenate(
        [batch_scores(t[i], p[i], len(labels)) for i in _index_chunks(len(t), resamples, seed)]
    )
    q = _quantiles(stats, level)
    return {
        m: Interval(float(q[0, k]), float(q[1, k]), level, resamples) for k, m in enumerate(METRICS)
    }


def bootstrap_difference(
    y_true: Sequence[str],
    pred_a: Sequence[str],
    pred_b: Sequence[str],
    labels: Sequence[str],
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> dict[str, Difference]:
    """Paired bootstrap of B minus A (both resampled with the same events) for ``accuracy``
    and ``macro_f1``: tighter than comparing two separate intervals, since both labellers
    meet the same easy and hard tweets in every resample."""
    if not len(y_true) == len(pred_a) == len(pred_b):
        raise ValueError("y_true, pred_a and pred_b differ in length")
    _check(len(y_true), resamples, level)
    t, a, b = (_codes(y, labels) for y in (y_true, pred_a, pred_b))
    n_labels = len(labels)
    whole = (
        batch_scores(t[None], b[None], n_labels)[0] - batch_scores(t[None], a[None], n_labels)[0]
    )
    diffs = np.concatenate(
        [
            batch_scores(t[i], b[i], n_labels) - batch_scores(t[i], a[i], n_labels)
            for i in _index_chunks(len(t), resamples, seed)
        ]
    )
    q = _quantiles(diffs, level)
    better = (diffs > 0).mean(axis=0)
    return {
        m: Difference(
            float(whole[k]), float(q[0, k]), float(q[1, k]), float(better[k]), level, resamples
        )
        for k, m in enumerate(METRICS)
    }


def mean_interval(
    values: Sequence[float] | np.ndarray,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
    """Percentile interval of the mean of per-event ``values`` (e.g. each event's macro-F1, or
    its gain between two settings: the same seed resamples the same events, so intervals of
    paired differences are paired)."""
    v = np.asarray(values, np.float64)
    _check(len(v), resamples, level)
    means = np.concatenate([v[i].mean(axis=1) for i in _index_chunks(len(v), resamples, seed)])
    q = _quantiles(means, level)
    return Interval(float(q[0]), float(q[1]), level, resamples)
