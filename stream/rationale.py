"""Text rationales: merge per-token effects into words with character spans.

A "word" is a maximal run of tokens whose character spans touch (so ``don't``, ``#flood`` and a
URL stay whole); its weight is the sum of its tokens' values (``LinearHead.token_effects`` in
the output: the word's first-order effect on the label's calibrated logit). ``top_words``
lists the words in favour of the label first, strongest first, then the ones against it, so the
first words an analyst reads are the ones whose deletion would lower the score most.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stream.schemas import TextSpan

__all__ = ["published_order", "spread", "top_words", "trim", "word_shares", "word_tokens"]

_EDGE = ".,;:!?()[]{}\"'…“”‘’"


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Drop punctuation at a word's edges from its span (its share stays in the weight)."""
    while end - start > 1 and text[end - 1] in _EDGE:
        end -= 1
    while end - start > 1 and text[start] in _EDGE:
        start += 1
    return start, end


def word_tokens(
    offsets: Sequence[tuple[int, int]], word_ids: Sequence[int | None]
) -> list[tuple[int, int, list[int]]]:
    """(start, end, token indices) per word, in text order; special tokens are left out. A
    word piece with an empty span (XLM-R's lone ``▁`` before a word) belongs to the next word,
    or to the last one at the end."""
    words: list[tuple[int, int, list[int]]] = []
    pending: list[int] = []
    for t, ((start, end), wid) in enumerate(zip(offsets, word_ids, strict=True)):
        if wid is None:
            continue
        if end <= start:
            pending.append(t)
            continue
        if words and start <= words[-1][1]:
            s, e, tokens = words[-1]
            words[-1] = (s, max(end, e), [*tokens, *pending, t])
        else:
            words.append((start, end, [*pending, t]))
        pending = []
    if pending and words:
        words[-1][2].extend(pending)
    return words


def word_shares(
    offsets: Sequence[tuple[int, int]], word_ids: Sequence[int | None], shares: np.ndarray
) -> list[tuple[int, int, float]]:
    """(start, end, weight) per word of :func:`word_tokens`: the sum of its tokens' shares, so
    the words' weights add up to the text's shares (special tokens aside)."""
    values = np.asarray(shares, np.float64)
    return [(s, e, float(values[t].sum())) for s, e, t in word_tokens(offsets, word_ids)]


def spread(
    offsets: Sequence[tuple[int, int]],
    word_ids: Sequence[int | None],
    spans: np.ndarray,
    values: np.ndarray,
) -> np.ndarray:
    """Per-token values from character ``spans`` [S, 2] carrying ``values`` [S]: each value
    split evenly over the (non-special) tokens overlapping its span. A span no token covers
    (text cut off at the encoder's max length) is left out."""
    if not len(spans) or not len(offsets):
        return np.zeros(len(offsets), np.float64)
    bounds = np.asarray(offsets, np.int64).reshape(-1, 2)
    real = np.fromiter((w is not None for w in word_ids), bool, len(word_ids))
    real &= bounds[:, 1] > bounds[:, 0]
    hit = (
        real[None, :] & (bounds[None, :, 0] < spans[:, 1:2]) & (bounds[None, :, 1] > spans[:, 0:1])
    )
    n = hit.sum(axis=1)
    per = np.where(n > 0, np.asarray(values, np.float64) / np.maximum(n, 1), 0.0)
    return np.asarray(per @ hit, np.float64)


def published_order(words: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    """``words`` in the order an output lists them: in favour of the label (largest weight
    first), then against it (most negative first). A word of weight exactly zero is no reason
    and is left out: with content pooling, every function word."""
    return sorted((w for w in words if w[2] != 0.0), key=lambda w: (w[2] <= 0, -abs(w[2])))


def top_words(
    text: str,
    offsets: Sequence[tuple[int, int]],
    word_ids: Sequence[int | None],
    shares: np.ndarray,
    task: str,
    label: str,
    k: int,
) -> list[TextSpan]:
    """At most ``k`` words (:func:`published_order`): those in favour of ``label`` (largest
    weight first), then, if fewer than ``k`` are, those against it (most negative first)."""
    spans = []
    for s, e, w in published_order(word_shares(offsets, word_ids, shares))[:k]:
        s, e = trim(text, s, e)
        spans.append(
            TextSpan(task=task, label=label, start=s, end=e, token=text[s:e], weight=round(w, 5))
        )
    return spans
