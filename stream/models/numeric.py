"""Small numpy helpers shared by the runtime heads, fusion, the load-time self-check, the build
and evaluation; they live at the bottom of the model package so nothing here imports upwards."""

from __future__ import annotations

import numpy as np

__all__ = ["cosine_stats", "softmax"]


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise (last axis) softmax, shifted by the row maximum so large logits do not
    overflow."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def cosine_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean and min row-wise cosine of two embedding matrices."""
    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    cos = (na * nb).sum(axis=1)
    return {"mean": round(float(cos.mean()), 4), "min": round(float(cos.min()), 4)}
