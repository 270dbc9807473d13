"""Faithfulness of the text rationales, measured with ERASER (DeYoung et al., ACL 2020).

For each text the head's predicted label ``c`` and its calibrated probability ``p(c | x)``:

- comprehensiveness = ``p(c | x) - p(c | x without the rationale words)``: high when the words
  the rationale names really carried the decision;
- sufficiency = ``p(c | x) - p(c | only the rationale words)``: low when they suffice.

Both are compared with removing / keeping the same number of *random* words of the same text:
a faithful rationale must do much better than chance. The rationale is the ``k`` words with the
largest effect in favour of ``c`` (``LinearHead.effects``: what the output's rationale lists
first, a hybrid head's lexical shares included); the ranking by raw exact shares
(``token_shares``, the rationale before 0.1.0's change) is measured beside it. ``sweep``
adds other ``k``; random words are drawn as one permutation per text and repeat, so the random
sets of a smaller ``k`` nest in the larger.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.errors import ConfigError
from stream.models.bundle import Bundle
from stream.models.function_words import function_words
from stream.models.heads import LinearHead
from stream.rationale import published_order, word_shares

__all__ = ["faithfulness_report", "keep_words", "remove_words"]

_SPACES = re.compile(r"\s+")

Spans = list[list[tuple[int, int]]]


def remove_words(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """``text`` with the character spans cut out and whitespace collapsed."""
    parts, last = [], 0
    for s, e in sorted(spans):
        parts.append(text[last:s])
        last = max(last, e)
    parts.append(text[last:])
    return _SPACES.sub(" ", " ".join(parts)).strip()


def keep_words(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """Only the spans of ``text``, in text order, separated by single spaces."""
    return " ".join(text[s:e] for s, e in sorted(spans))


def _score(bundle: Bundle, head: LinearHead, texts: list[str], labels: np.ndarray) -> np.ndarray:
    """Calibrated probability of ``labels[i]`` for each text."""
    probs = head.predict(bundle.encoder.encode(texts).embeddings, bundle.analyse(texts)).probs
    return np.asarray(probs[np.arange(len(texts)), labels], dtype=np.float64)


def function_share(texts: Sequence[str], sets: Spans, k: int) -> float:
    """Share of function words (:mod:`stream.models.function_words`) among the first ``k``
    words of each text's set: what an analyst reads as the reasons, pooled over texts."""
    fw = function_words()
    picked = [t[s:e] for t, spans in zip(texts, sets, strict=True) for s, e in spans[:k]]
    return sum(w in fw for w in picked) / len(picked) if picked else 0.0


def _ranked(words: list[tuple[int, int, float]]) -> list[tuple[int, int]]:
    """Word spans, largest value in favour of the label first."""
    return [w[:2] for w in sorted(words, key=lambda w: -w[2])]


def faithfulness_report(
    bundle: Bundle,
    texts: Sequence[str],
    labels: Sequence[str] | None = None,
    k: int = 5,
    seed: int = 0,
    task: str = "informative",
    repeats: int = 3,
    sweep: Sequence[int] = (),
) -> dict[str, Any]:
    """ERASER comprehensiveness and sufficiency of the top-``k`` rationale words of ``task``
    (and of every ``k`` in ``sweep``), against ``repeats`` draws of as many random words per
    text (``labels``: gold, for accuracy)."""
    head = next((h for h in bundle.heads if h.task == task), None)
    if head is None:
        raise ConfigError(f"bundle has no head for task {task!r}")
    texts = list(texts)
    enc = bundle.encoder.encode(texts)
    analyses = bundle.analyse(texts)
    out = head.predict(enc.embeddings, analyses)
    pred = out.pred
    base = out.probs[np.arange(len(texts)), pred].astype(np.float64)
    rng = np.random.default_rng(seed)
    effects: list[list[tuple[int, int]]] = []
    listed: list[list[tuple[int, int]]] = []  # the output's order, for the function-word share
    raw: list[list[tuple[int, int]]] = []
    permutations: list[list[list[tuple[int, int]]]] = [[] for _ in range(repeats)]
    n_words = []
    for i in range(len(texts)):
        analysis = analyses[i] if analyses is not None else None
        shares = head.effects(enc, i, int(pred[i]), analysis)  # what the output's rationale uses
        words = word_shares(enc.offsets[i], enc.word_ids[i], shares)
        effects.append(_ranked(words))
        listed.append([w[:2] for w in published_order(words)])
        # raw: the encoder's shares before centring on the text's mean token (+ lexical part)
        pooled = enc.pooled[i]
        token = head.token_shares(enc.tokens[i], float(enc.scale[i]), int(pred[i]), pooled)
        raw_shares = shares + token[pooled].mean() * pooled
        raw.append(_ranked(word_shares(enc.offsets[i], enc.word_ids[i], raw_shares)))
        n_words.append(len(words))
        for r in range(repeats):
            permutations[r].append([words[j][:2] for j in rng.permutation(len(words))])

    def measure(sets: Spans, kk: int) -> tuple[float, float]:
        pairs = [(t, s[:kk]) for t, s in zip(texts, sets, strict=True)]
        removed = _score(bundle, head, [remove_words(t, s) for t, s in pairs], pred)
        kept = _score(bundle, head, [keep_words(t, s) for t, s in pairs], pred)
        return float(np.mean(base - removed)), float(np.mean(base - kept))

    def at(kk: int) -> dict[str, Any]:
        comp, suff = measure(effects, kk)
        comp_raw, suff_raw = measure(raw, kk)
        rand = [measure(p, kk) for p in permutations]
        comp_rand = float(np.mean([r[0] for r in rand]))
        suff_rand = float(np.mean([r[1] for r in rand]))
        return {
            "k": kk,
            "function_word_share": round(function_share(texts, listed, kk), 4),
            "function_word_share_random": round(
                float(np.mean([function_share(texts, p, kk) for p in permutations])), 4
            ),
            "comprehensiveness": round(comp, 4),
            "sufficiency": round(suff, 4),
            "comprehensiveness_random": round(comp_rand, 4),
            "sufficiency_random": round(suff_rand, 4),
            "comprehensiveness_ratio": round(comp / comp_rand, 2) if comp_rand > 0 else None,
            "raw_shares": {
                "comprehensiveness": round(comp_raw, 4),
                "sufficiency": round(suff_raw, 4),
                "comprehensiveness_ratio": round(comp_raw / comp_rand, 2)
                if comp_rand > 0
                else None,
            },
        }

    headline = at(k)
    report: dict[str, Any] = {
        "task": task,
        "texts": len(texts),
        "seed": seed,
        "random_repeats": repeats,
        "mean_words": round(float(np.mean(n_words)), 2) if n_words else 0.0,
        **headline,
        "sweep": [headline if kk == k else at(kk) for kk in sorted({*sweep, k})],
    }
    if labels is not None:
        gold = np.array([head.labels.index(lab) if lab in head.labels else -1 for lab in labels])
        report["accuracy"] = round(float(np.mean(gold == pred)), 4)
    return report
