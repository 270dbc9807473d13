"""Late fusion of calibrated per-modality logits, and how much each modality decided.

``z = w_text * z_text + w_image * z_image`` where each ``z_m`` is a modality's calibrated
logits (raw logits / its temperature). Centred logits add up the same way, so the decision
splits exactly into a text part and an image part: a modality's *reliance* is its share of the
absolute contributions to the chosen label's centred logit, and every text word's and image
cell's rationale weight (scaled by its modality weight) is an exact share of the fused logit.
The weights are chosen on dev rows that have both text and an image (:func:`fit_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Decision",
    "FusionWeights",
    "fit_temperature",
    "fit_weights",
    "fuse",
    "nll",
    "softmax",
]


@dataclass(frozen=True)
class FusionWeights:
    text: float = 1.0
    image: float = 1.0


@dataclass(frozen=True)
class Decision:
    """One task's decision for one event: fused probabilities, the label index, the weights
    actually applied (0 for a missing modality) and each modality's reliance (sums to 1)."""

    probs: np.ndarray
    pred: int
    text_weight: float
    image_weight: float
    reliance: dict[str, float]


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax (kept here so this module imports nothing from the model package)."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def _centred(z: np.ndarray, k: int) -> float:
    return float(z[k] - z.mean())


def fuse(text: np.ndarray | None, image: np.ndarray | None, weights: FusionWeights) -> Decision:
    """Fuse one event's calibrated logits; a missing modality (None) gets weight 0 and the
    other is used alone, unweighted, so single-modality probabilities stay calibrated."""
    if text is None and image is None:
        raise ValueError("fuse() needs at least one modality")
    if image is None:
        assert text is not None
        probs = softmax(text[None])[0]
        return Decision(probs, int(probs.argmax()), 1.0, 0.0, {"text": 1.0, "image": 0.0})
    if text is None:
        probs = softmax(image[None])[0]
        return Decision(probs, int(probs.argmax()), 0.0, 1.0, {"text": 0.0, "image": 1.0})
    z = weights.text * text + weights.image * image
    probs = softmax(z[None])[0]
    k = int(probs.argmax())
    ct = abs(weights.text * _centred(text, k))
    ci = abs(weights.image * _centred(image, k))
    if ct + ci == 0.0:  # a tie (or zero weights): share by weight, equally if both are 0
        ct, ci = (weights.text, weights.image) if weights.text + weights.image else (1.0, 1.0)
    total = ct + ci
    reliance = {"text": round(ct / total, 4), "image": round(ci / total, 4)}
    return Decision(probs, k, weights.text, weights.image, reliance)


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
