"""An event-adapted head: the trained head plus a logistic correction fitted on feedback.

Why a correction and not a new head: a few dozen answers about a new disaster cannot teach a
classifier from scratch, but they can say where the trained head is wrong on *this* event. The
correction ``(dW, db)`` is fitted by multinomial logistic regression whose logits start from the
trained head's calibrated logits, ``z / T + dW·x + db``, with an L2 penalty ``l2/2 ||(dW, db)||²``
on a *summed* loss: with few answers the penalty keeps the head where it was, and the
correction's weight grows with every answer (weighted by how much feedback there is, without a
schedule to tune). Answers count with balanced class weights, because review queues are
dominated by one label and the figure that matters is macro-F1.

The result is folded into the head (``W' = W + T dW``, ``b' = b + T db``): still one linear
head over the mean-pooled embedding (plus the unchanged lexical part of a hybrid head), so the
runtime, calibration (``softmax(z' / T)``) and exact rationales are untouched.

numpy only (no scipy or scikit-learn): the service runs in the worker's image. The loss is
convex and smooth; accelerated gradient descent with step ``1 / L`` (embeddings are unit
vectors, so ``L <= sum of weights * 2 + l2``), restarted when it overshoots, converges in a
few hundred cheap steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.models.numeric import softmax

__all__ = ["DEFAULT_BALANCED", "DEFAULT_L2", "Correction", "fit_correction"]

#: penalty strength and class weights, chosen on the dev events' simulated feedback
#: (``models simulate-feedback --events dev --grid``; docs/adaptation.md): the largest mean
#: informative + humanitarian macro-F1 gain after 100 review-queue answers among L2 0.03-10,
#: balanced or not
DEFAULT_L2 = 0.1
DEFAULT_BALANCED = True


@dataclass(frozen=True)
class Correction:
    """``dW`` [classes, dim] and ``db`` [classes] in calibrated-logit units."""

    dw: np.ndarray
    db: np.ndarray
    loss: float
    steps: int

    def fold(
        self, weight: np.ndarray, bias: np.ndarray, temperature: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The adapted head's ``W``/``b``: ``softmax((W' x + b') / T)`` equals the corrected
        ``softmax(z / T + dW x + db)``."""
        w = np.asarray(weight, np.float64) + temperature * self.dw
        b = np.asarray(bias, np.float64) + temperature * self.db
        return w.astype(np.float32), b.astype(np.float32)


def _sample_weights(y: np.ndarray, classes: int) -> np.ndarray:
    counts = np.bincount(y, minlength=classes).astype(np.float64)
    present = counts > 0
    per_class = np.zeros(classes)
    per_class[present] = len(y) / (present.sum() * counts[present])
    return np.asarray(per_class[y])


def fit_correction(
    x: np.ndarray,
    base_logits: np.ndarray,
    y: np.ndarray,
    l2: float = DEFAULT_L2,
    balanced: bool = DEFAULT_BALANCED,
    steps: int = 3000,
    tol: float = 1e-6,
) -> Correction:
    """Fit the correction for embeddings ``x`` [n, dim] whose trained head gave the calibrated
    logits ``base_logits`` [n, classes] (already divided by the temperature), answers ``y``."""
    x = np.asarray(x, np.float64)
    z0 = np.asarray(base_logits, np.float64)
    y = np.asarray(y, np.int64)
    n, dim = x.shape
    classes = z0.shape[1]
    if n == 0:
        zero = np.zeros((classes, dim))
        return Correction(zero, np.zeros(classes), 0.0, 0)
    sw = _sample_weights(y, classes) if balanced else np.ones(n)
    onehot = np.eye(classes)[y]
    xa = np.hstack([x, np.ones((n, 1))])  # the intercept as one more column
    lipschitz = float(sw.sum() * (np.square(xa).sum(axis=1).max()) / 2 + l2)
    step = 1.0 / lipschitz
    theta = np.zeros((classes, dim + 1))
    prev = theta.copy()
    loss = np.inf
    done = 0
    momentum = 0
    for k in range(1, steps + 1):
        momentum += 1
        look = theta + (momentum - 1) / (momentum + 2) * (theta - prev)
        p = softmax(z0 + xa @ look.T)
        grad = ((p - onehot) * sw[:, None]).T @ xa + l2 * look
        prev, theta = theta, look - step * grad
        done = k
        if k % 25 == 0:
            new = _loss(theta, xa, z0, onehot, sw, l2)
            if new > loss:  # overshot: restart the momentum (adaptive restart)
                momentum, prev = 0, theta
            elif loss - new < tol * max(1.0, abs(new)):
                break
            loss = new
    loss = _loss(theta, xa, z0, onehot, sw, l2)
    return Correction(theta[:, :dim], theta[:, dim], loss, done)


def _loss(
    theta: np.ndarray,
    xa: np.ndarray,
    z0: np.ndarray,
    onehot: np.ndarray,
    sw: np.ndarray,
    l2: float,
) -> float:
    z = z0 + xa @ theta.T
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-(sw * (onehot * logp).sum(axis=1)).sum() + l2 / 2 * np.square(theta).sum())
