"""Build time: turn a trained encoder head into a hybrid head (encoder + TF-IDF lexical term).

Why: on the CrisisMMD agreed dev splits, mixing the calibrated encoder head with logistic
regressions on word 1-2 gram and char_wb 2-5 gram TF-IDF features beats the encoder head alone
(hashtags, place names and donation phrasing are what MiniLM's mean pooling blurs). The mix is a
sum of logits, so the head stays linear in its features and every word's share stays exact.

Recipe (all choices on dev, nothing on test): the lexicon (vocabulary, idf) is fitted on the
texts both tasks may train on (every dev/test text of either task left out), links blanked
(:mod:`stream.models.links`); per task one
multinomial logistic regression per analyzer, balanced class weights, C by dev macro-F1; then
weights ``a`` (words) and ``b`` (chars) on a 0.1 grid, ``a + b <= 0.8``, by dev macro-F1 of
``(1 - a - b) * z_encoder / T + a * z_words + b * z_chars``; a new temperature and review
threshold on dev. ``a = b = 0`` keeps the plain encoder head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.build.calibration import fit_temperature
from stream.build.train import HeadResult, Split, choose_review_threshold, class_rows
from stream.errors import MissingExtraError
from stream.evaluation.metrics import macro_f1
from stream.models.function_words import FunctionWords
from stream.models.lexicon import Analysis, LexicalPart, Lexicon
from stream.models.links import mask_links

__all__ = ["C_GRID", "fit_lexicon", "hybridize", "matrix"]

C_GRID = (1.0, 2.0, 4.0, 8.0, 16.0)
WEIGHT_GRID = tuple(round(0.1 * i, 1) for i in range(7))
MAX_LEXICAL = 0.8
WORD_NGRAMS, CHAR_NGRAMS, MIN_DF = (1, 2), (2, 5), 2


def _preprocess(text: str) -> str:
    """scikit-learn's lowercasing, after blanking links (what :meth:`Lexicon.analyse` does)."""
    return mask_links(text).lower()


def _word_terms(vec: Any, skip: FunctionWords | None) -> tuple[list[str], np.ndarray]:
    """The word vocabulary in column order and its idf, less the n-grams made of ``skip``
    words only."""
    terms = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
    keep = [skip is None or not all(w in skip.words for w in t.split()) for t in terms]
    return [t for t, k in zip(terms, keep, strict=True) if k], vec.idf_[np.asarray(keep, bool)]


def fit_lexicon(
    texts: Sequence[str], chars: bool = True, skip: FunctionWords | None = None
) -> Lexicon:
    """Vocabularies and idf of both analyzers (``chars=False``: words only), fitted with
    scikit-learn on ``texts``. With ``skip`` (content pooling's function words) the word
    n-grams made of function words only ("in", "of the") are left out: no feature is theirs
    alone. A bigram with one content word ("flood in") stays, its share split between both
    words as always, so deleting either really removes it; on the dev events' folds dropping
    those bigrams too cost 0.007 humanitarian macro-F1 (docs/rationales.md)."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
    except ImportError as exc:
        raise MissingExtraError("sklearn", "build") from exc
    opts: dict[str, Any] = {"min_df": MIN_DF, "sublinear_tf": True, "preprocessor": _preprocess}
    words, idf = _word_terms(TfidfVectorizer(ngram_range=WORD_NGRAMS, **opts).fit(texts), skip)
    if not chars:
        return Lexicon(words, idf, [], np.zeros(0), WORD_NGRAMS, CHAR_NGRAMS, drop_links=True)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, **opts).fit(texts)
    chars_ = sorted(char.vocabulary_, key=char.vocabulary_.get)
    return Lexicon(words, idf, chars_, char.idf_, WORD_NGRAMS, CHAR_NGRAMS, drop_links=True)


def matrix(analyses: Sequence[Analysis], size: int) -> Any:
    from scipy.sparse import csr_matrix

    indptr = np.cumsum([0, *(len(a.ids) for a in analyses)])
    ids = np.concatenate([a.ids for a in analyses]) if analyses else np.zeros(0, np.int64)
    vals = np.concatenate([a.values for a in analyses]) if analyses else np.zeros(0)
    return csr_matrix((vals.astype(np.float64), ids, indptr), shape=(len(analyses), size))


def _fit(
    x: Any, y: np.ndarray, w: np.ndarray | None, x_dev: Any, y_dev: np.ndarray, k: int
) -> tuple[Any, ...]:
    """(dev macro-F1, C, V [k, features], c [k]) of the best C (``w``: row weights)."""
    from sklearn.linear_model import LogisticRegression

    best: tuple[Any, ...] | None = None
    for c in C_GRID:
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
        model.fit(x, y, sample_weight=w)
        coef, icpt = class_rows(model.coef_, model.intercept_)
        score = macro_f1(y_dev, np.asarray(x_dev @ coef.T + icpt).argmax(axis=1))
        if best is None or score > best[0]:
            best = (score, c, coef, icpt)
    assert best is not None
    return best


def hybridize(
    head: HeadResult,
    lexicon: Lexicon,
    train: Split,
    dev: Split,
) -> HeadResult:
    """The hybrid of ``head`` (an encoder head fitted on ``train``), or ``head`` itself when
    dev prefers no lexical term. ``train``/``dev`` must carry their texts' analyses."""
    if train.analyses is None or dev.analyses is None:
        raise ValueError("hybridize needs the splits' lexical analyses")
    k, n_words = len(head.labels), lexicon.n_words
    x_tr, x_dev = matrix(train.analyses, lexicon.size), matrix(dev.analyses, lexicon.size)
    parts = {}
    for name, cols in (("words", slice(0, n_words)), ("chars", slice(n_words, None))):
        score, c, coef, icpt = _fit(x_tr[:, cols], train.y, train.weights, x_dev[:, cols], dev.y, k)
        full = np.zeros((k, lexicon.size))
        full[:, cols] = coef
        parts[name] = {"dev_macro_f1": round(score, 4), "C": c, "V": full, "c": icpt}
    z_enc = (dev.x @ head.weight.T + head.bias) / head.temperature
    z_lex = {name: np.asarray(x_dev @ p["V"].T + p["c"]) for name, p in parts.items()}
    scores: dict[str, float] = {}
    encoder_f1 = macro_f1(dev.y, z_enc.argmax(axis=1))
    best = (encoder_f1, 0.0, 0.0)
    for a in WEIGHT_GRID:
        for b in WEIGHT_GRID:
            if a + b > MAX_LEXICAL + 1e-9:
                continue
            z = (1 - a - b) * z_enc + a * z_lex["words"] + b * z_lex["chars"]
            scores[f"{a},{b}"] = s = round(macro_f1(dev.y, z.argmax(axis=1)), 4)
            if s > round(best[0], 4):
                best = (s, a, b)
    _, a, b = best
    selection = {
        "rule": "word/char weights on a 0.1 grid (sum <= 0.8) by dev macro-F1; strict "
        "improvements only, so ties keep the smaller lexical weights",
        "weights": {"encoder": round(1 - a - b, 1), "words": a, "chars": b},
        "lexical_C": {name: p["C"] for name, p in parts.items()},
        "dev_macro_f1": {
            "encoder": round(encoder_f1, 4),
            **{name: p["dev_macro_f1"] for name, p in parts.items()},
            "hybrid": scores.get(f"{a},{b}"),
        },
    }
    if a == 0 and b == 0:
        head.metrics["hybrid"] = {**selection, "kept": "encoder head (no lexical gain on dev)"}
        return head
    scale = (1 - a - b) / head.temperature
    lexical = LexicalPart(
        lexicon,
        (a * parts["words"]["V"] + b * parts["chars"]["V"]).astype(np.float32),
        (a * parts["words"]["c"] + b * parts["chars"]["c"]).astype(np.float32),
    )
    out = HeadResult(
        head.task,
        head.kind,
        head.labels,
        (head.weight * scale).astype(np.float32),
        (head.bias * scale).astype(np.float32),
        lexical=lexical,
        metrics=dict(head.metrics),
    )
    out.temperature = fit_temperature(out.logits(dev), dev.y)
    out.review_threshold = choose_review_threshold(out.probs(dev), dev.y)
    out.metrics["hybrid"] = selection
    return out
