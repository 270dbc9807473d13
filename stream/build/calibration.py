"""Build-time calibration: per-modality temperatures, a temperature with per-class biases for
heads that meet new events, and the late-fusion weights that :func:`stream.fusion.fuse` applies
at runtime, all fitted by negative log-likelihood on held-out rows."""

from __future__ import annotations

import numpy as np

from stream.errors import MissingExtraError
from stream.models.manifest import FusionWeights
from stream.models.numeric import softmax

__all__ = ["fit_temperature", "fit_temperature_and_bias", "fit_weights", "nll"]


def nll(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of integer labels ``y`` under ``softmax(logits)``."""
    p = softmax(logits)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray, offset: np.ndarray | None = None) -> float:
    """The temperature T minimising ``nll(logits / T + offset, y)`` (log-spaced search with a
    golden-section refinement; NLL is unimodal in 1/T)."""
    off = np.zeros(logits.shape[1]) if offset is None else offset

    def loss(log_t: float) -> float:
        return nll(logits / np.exp(log_t) + off, y)

    grid = np.linspace(np.log(1e-4), np.log(1e3), 57)
    best = int(np.argmin([loss(g) for g in grid]))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if loss(a) < loss(b):
            hi = b
        else:
            lo = a
    return float(np.exp((lo + hi) / 2))


def fit_temperature_and_bias(
    logits: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None, l2: float = 0.0
) -> tuple[float, np.ndarray]:
    """The temperature T and per-class bias c (mean zero) minimising the ``weights``-weighted
    mean NLL of ``softmax(logits / T + c)`` plus ``l2 * |c|^2``.

    Convex in (1/T, c), so L-BFGS finds the optimum. ``l2`` shrinks c towards zero: c moves
    labels (the argmax) as well as confidences, and a held-out label mix is itself noisy. A
    head ``z = W x + b`` calibrated this way is the head ``W x + (b + T c)`` at temperature T.
    """
    try:
        from scipy.optimize import minimize
    except ImportError as exc:
        raise MissingExtraError("scipy", "build") from exc
    z = np.asarray(logits, np.float64)
    n, k = z.shape
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    onehot = np.eye(k)[y]

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        inv_t, c = params[0], params[1:]
        s = inv_t * z + c
        top = s.max(axis=1, keepdims=True)
        logp = s - top - np.log(np.exp(s - top).sum(axis=1, keepdims=True))
        p = np.exp(logp)
        g = (p - onehot) * w[:, None]
        value = float(-(w * (logp * onehot).sum(axis=1)).sum() + l2 * (c**2).sum())
        return value, np.concatenate([[(g * z).sum()], g.sum(axis=0) + 2 * l2 * c])

    start = np.concatenate([[1.0 / fit_temperature(z, y)], np.zeros(k)])
    bounds = [(1e-3, 1e4)] + [(None, None)] * k
    res = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds)
    c = res.x[1:] - res.x[1:].mean()
    return float(1.0 / res.x[0]), c


def fit_weights(
    text: np.ndarray,
    image: np.ndarray,
    y: np.ndarray,
    grid: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0),
) -> tuple[FusionWeights, float]:
    """Pick (w_text, w_image) on a grid by NLL of the fused logits on rows with both
    modalities; ties prefer the text-heavier pair (the better-tested modality)."""
    best: tuple[float, float, float] | None = None
    for wt in grid:
        for wi in grid:
            if wt == 0.0 and wi == 0.0:
                continue
            loss = nll(wt * text + wi * image, y)
            key = (round(loss, 6), -wt, wi)
            if best is None or key < (round(best[0], 6), -best[1], best[2]):
                best = (loss, wt, wi)
    assert best is not None
    return FusionWeights(text=best[1], image=best[2]), best[0]
