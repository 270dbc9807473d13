"""Linear classification heads with temperature calibration and exact token shares.

With mean pooling and a linear head, the centred logit of class c decomposes exactly:
``z_c - mean(z) = sum_t (w_c - mean(w)) . h_t * s + (b_c - mean(b))`` where ``s`` is the
pooling/normalisation scale. The per-token terms are the text rationale (DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["HeadOutput", "LinearHead", "softmax"]


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class HeadOutput:
    """Per-event results of one head: label indices, calibrated probabilities, raw logits."""

    pred: np.ndarray
    probs: np.ndarray
    logits: np.ndarray


class LinearHead:
    """``logits = W @ e + b``; probabilities are ``softmax(logits / temperature)``."""

    def __init__(
        self,
        task: str,
        labels: list[str],
        weight: np.ndarray,
        bias: np.ndarray,
        temperature: float = 1.0,
        review_threshold: float = 0.5,
    ) -> None:
        if weight.shape[0] != len(labels) or bias.shape != (len(labels),):
            raise ValueError(
                f"head {task}: W {weight.shape} / b {bias.shape} vs {len(labels)} labels"
            )
        self.task = task
        self.labels = labels
        self.weight = weight.astype(np.float32)
        self.bias = bias.astype(np.float32)
        self.temperature = float(temperature)
        self.review_threshold = float(review_threshold)

    @classmethod
    def from_npz(
        cls, path: Path, task: str, labels: list[str], temperature: float, review_threshold: float
    ) -> LinearHead:
        with np.load(path) as data:
            return cls(task, labels, data["W"], data["b"], temperature, review_threshold)

    def predict(self, embeddings: np.ndarray) -> HeadOutput:
        logits = embeddings @ self.weight.T + self.bias
        probs = softmax(logits / self.temperature)
        return HeadOutput(pred=probs.argmax(axis=1), probs=probs, logits=logits)

    def token_shares(self, tokens: np.ndarray, scale: float, label: int) -> np.ndarray:
        """Exact share of each token in the centred, calibrated logit of ``label``."""
        direction = self.weight[label] - self.weight.mean(axis=0)
        return np.asarray(tokens @ direction * (scale / self.temperature), dtype=np.float32)
