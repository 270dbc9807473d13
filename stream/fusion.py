"""Late fusion of calibrated per-modality logits, and how much each modality decided.

``z = w_text * z_text + w_image * z_image`` where each ``z_m`` is a modality's calibrated
logits (raw logits / its temperature). Centred logits add up the same way, so the decision
splits exactly into a text part and an image part: a modality's *reliance* is its share of the
absolute contributions to the chosen label's centred logit, and every text word's and image
cell's rationale weight (scaled by its modality weight) is an exact share of the fused logit.
The weights are chosen at build time on dev rows that have both text and an image
(:func:`stream.build.calibration.fit_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.models.manifest import FusionWeights
from stream.models.numeric import softmax

__all__ = ["Decision", "FusionWeights", "fuse"]


@dataclass(frozen=True)
class Decision:
    """One task's decision for one event: fused probabilities, the label index, the weights
    actually applied (0 for a missing modality) and each modality's reliance (sums to 1)."""

    probs: np.ndarray
    pred: int
    text_weight: float
    image_weight: float
    reliance: dict[str, float]


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
