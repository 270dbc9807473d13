"""Build time: a TF-IDF + logistic-regression baseline, measured on the same splits as the heads.

Word 1-2 grams (sublinear tf, lowercased, ``min_df`` 2) of the ftfy-repaired text, one row per
tweet; multinomial logistic regression with balanced class weights and C chosen on dev by
macro-F1. This baseline itself is not shipped: its figures go into the manifest
(``metrics.tfidf_baseline``) so every bundle says how much it buys over bag-of-words. (The
hybrid heads' lexical term, :mod:`stream.build.hybrid`, is a separate fit on other texts.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.data.crisismmd import CrisisRow
from stream.errors import MissingExtraError
from stream.evaluation.metrics import accuracy, macro_f1

__all__ = ["C_GRID", "tfidf_baseline"]

C_GRID = (1.0, 2.0, 4.0, 8.0)  # dev optimum of 0.5..16 was 2 (informative), 4 (all), 8 (hum)


def _scores(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    return {
        "n": len(y),
        "accuracy": round(accuracy(y, pred), 4),
        "macro_f1": round(macro_f1(y, pred), 4),
    }


def tfidf_baseline(
    labels: Sequence[str],
    train: Sequence[CrisisRow],
    dev: Sequence[CrisisRow],
    evals: dict[str, Sequence[CrisisRow]],
    grid: Sequence[float] = C_GRID,
) -> dict[str, Any]:
    """Fit on ``train``, choose C on ``dev``; accuracy and macro-F1 on ``dev`` and each of
    ``evals`` (name -> rows), plus the C search."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:
        raise MissingExtraError("sklearn", "build") from exc
    index = {name: i for i, name in enumerate(labels)}

    def ys(rows: Sequence[CrisisRow]) -> np.ndarray:
        return np.array([index[r.label] for r in rows], np.int64)

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=True)
    x_train = vec.fit_transform([r.text for r in train])
    x_dev = vec.transform([r.text for r in dev])
    y_train, y_dev = ys(train), ys(dev)
    by_c: dict[str, float] = {}
    best: tuple[float, Any] | None = None
    for c in grid:
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
        model.fit(x_train, y_train)
        score = _scores(y_dev, model.predict(x_dev))["macro_f1"]
        by_c[str(c)] = score
        if best is None or score > best[0]:
            best = (score, model)
    assert best is not None
    model = best[1]
    out: dict[str, Any] = {
        "features": "word 1-2 gram TF-IDF (sublinear tf, min_df 2)",
        "model": "logistic regression, balanced class weights",
        "C": float(model.C),
        "dev_macro_f1_by_C": by_c,
        "dev": _scores(y_dev, model.predict(x_dev)),
    }
    for name, rows in evals.items():
        out[name] = _scores(ys(rows), model.predict(vec.transform([r.text for r in rows])))
    return out
