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

__all__ = ["spread", "top_words", "word_shares"]

_EDGE = ".,;:!?()[]{}\"'…“”‘’"


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Drop punctuation at a word's edges from its span (its share stays in the weight)."""
    while end - start > 1 and text[end - 1] in _EDGE:
        end -= 1
    while end - start > 1 and text[start] in _EDGE:
        start += 1
    return start, end


def word_shares(
    offsets: Sequence[tuple[int, int]], word_ids: Sequence[int | None], shares: np.ndarray
) -> list[tuple[int, int, float]]:
    """(start, end, weight) per word, in text order; special tokens are left out. A word piece
    with an empty span (XLM-R's lone ``▁`` before a word) adds its share to the next word, or
    to the last one at the end, so the words' weights still add up to the text's shares."""
    words: list[tuple[int, int, float]] = []
    pending = 0.0
    for (start, end), wid, share in zip(offsets, word_ids, shares, strict=True):
        if wid is None:
            continue
        if end <= start:
            pending += float(share)
            continue
        if words and start <= words[-1][1]:
            s, _, w = words[-1]
            words[-1] = (s, max(end, words[-1][1]), w + float(share) + pending)
        else:
            words.append((start, end, float(share) + pending))
        pending = 0.0
    if pending and words:
        s, e, w = words[-1]
        words[-1] = (s, e, w + pending)
    return words


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


def top_words(
    text: str,
    offsets: Sequence[tuple[int, int]],
    word_ids: Sequence[int | None],
    shares: np.ndarray,
    task: str,
    label: str,
    k: int,
) -> list[TextSpan]:
    """At most ``k`` words: those in favour of ``label`` (largest weight first), then, if
    fewer than ``k`` are, those against it (most negative first)."""
    words = word_shares(offsets, word_ids, shares)
    words.sort(key=lambda w: (w[2] <= 0, -abs(w[2])))
    spans = []
    for s, e, w in words[:k]:
        s, e = _trim(text, s, e)
        spans.append(
            TextSpan(task=task, label=label, start=s, end=e, token=text[s:e], weight=round(w, 5))
        )
    return spans
