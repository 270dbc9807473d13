"""Lexical features of a hybrid head: TF-IDF of word 1-2 grams and char_wb 2-5 grams, in numpy.

Why: a sentence encoder of MiniLM's size blurs rare but decisive surface cues (hashtags,
place names, "#PrayFor…", donation links). A linear model on TF-IDF features keeps them, and on
the CrisisMMD dev splits mixing its logits with the encoder head's beats either alone (see
:mod:`stream.build.hybrid`). The worker must not need scikit-learn, so this module reproduces
scikit-learn's ``TfidfVectorizer`` (lowercase; ``token_pattern`` ``\\b\\w\\w+\\b`` n-grams
joined by a space; ``char_wb`` n-grams of each whitespace-separated word padded with spaces;
sublinear tf, smooth idf, L2 per analyzer) from the vocabulary and idf the build saved; a test
checks it against scikit-learn on real tweets. Links are blanked first (``drop_links``, see
:mod:`stream.models.links`), so no link is a feature and none ends up in a rationale.

Every feature comes from one word (``char_wb``), one word (unigram) or two (bigram), so its
share of the logit is attributed to character spans exactly; the rationale adds these shares to
the encoder's token effects.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream.models.links import mask_links

__all__ = ["Analysis", "LexicalPart", "Lexicon", "analyse_all"]

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_PIECE = re.compile(r"\S+")
_NO_IDS = np.zeros(0, np.int64)
_CACHE_SIZE = 50_000  # distinct whitespace pieces whose char features are kept


@dataclass(frozen=True)
class Analysis:
    """One text's features: unique feature ids and their tf-idf values, plus every occurrence
    (which feature, which span of ``spans``, what fraction of one count: 1/2 per word of a
    bigram) so a feature's share can be put back on the text."""

    ids: np.ndarray
    values: np.ndarray
    occ_feature: np.ndarray  # index into ids
    occ_span: np.ndarray  # index into spans
    occ_weight: np.ndarray  # fraction of the feature's value this occurrence carries
    spans: np.ndarray  # [S, 2] character start/end


class Lexicon:
    """Vocabularies and idf of the two analyzers; ids of char features follow the word ones."""

    def __init__(
        self,
        words: Sequence[str],
        word_idf: np.ndarray,
        chars: Sequence[str],
        char_idf: np.ndarray,
        word_ngrams: tuple[int, int] = (1, 2),
        char_ngrams: tuple[int, int] = (2, 5),
        drop_links: bool = False,
    ) -> None:
        if len(words) != len(word_idf) or len(chars) != len(char_idf):
            raise ValueError("lexicon: vocabulary and idf lengths differ")
        self.words = {t: i for i, t in enumerate(words)}
        self.chars = {t: i + len(words) for i, t in enumerate(chars)}
        self.idf = np.concatenate([word_idf, char_idf]).astype(np.float64)
        self.n_words = len(words)
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.drop_links = drop_links  # False: bundles built before links were dropped
        self._cache: dict[str, np.ndarray] = {}

    @property
    def size(self) -> int:
        return len(self.idf)

    def to_dict(self) -> dict[str, Any]:
        return {
            "word_ngrams": list(self.word_ngrams),
            "char_ngrams": list(self.char_ngrams),
            "words": list(self.words),
            "word_idf": self.idf[: self.n_words].tolist(),
            "chars": list(self.chars),
            "char_idf": self.idf[self.n_words :].tolist(),
            "drop_links": self.drop_links,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Lexicon:
        return cls(
            d["words"],
            np.asarray(d["word_idf"], np.float64),
            d["chars"],
            np.asarray(d["char_idf"], np.float64),
            tuple(d["word_ngrams"]),
            tuple(d["char_ngrams"]),
            bool(d.get("drop_links", False)),
        )

    def save(self, path: Path) -> None:
        path.write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY))

    @classmethod
    def load(cls, path: Path) -> Lexicon:
        return cls.from_dict(orjson.loads(path.read_bytes()))

    def _char_ids(self, piece: str) -> np.ndarray:
        """Char feature ids of one whitespace-separated piece (cached: words repeat)."""
        hit = self._cache.get(piece)
        if hit is not None:
            return hit
        if not self.chars:  # a words-only lexicon
            return _NO_IDS
        padded, (lo, hi), ids = f" {piece.lower()} ", self.char_ngrams, []
        for n in range(lo, hi + 1):
            for off in range(max(1, len(padded) - n + 1)):
                fid = self.chars.get(padded[off : off + n])
                if fid is not None:
                    ids.append(fid)
            if n >= len(padded):  # scikit-learn counts a word shorter than n once
                break
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[piece] = found = np.asarray(ids, np.int64)
        return found

    def analyse(self, text: str) -> Analysis:
        """Features of ``text`` (tf counts occurrences, as scikit-learn does)."""
        if self.drop_links:
            text = mask_links(text)
        feats: list[int] = []
        where: list[int] = []
        frac: list[float] = []
        spans: list[tuple[int, int]] = []
        toks = []
        for m in _TOKEN.finditer(text):
            toks.append(m.group().lower())
            spans.append(m.span())
        lo, hi = self.word_ngrams
        for n in range(lo, hi + 1):
            for i in range(len(toks) - n + 1):
                fid = self.words.get(" ".join(toks[i : i + n]))
                if fid is not None:
                    feats += [fid] * n
                    where += range(i, i + n)
                    frac += [1.0 / n] * n
        chars, owners = [], []
        for m in _PIECE.finditer(text):
            piece_ids = self._char_ids(m.group())
            if len(piece_ids):
                chars.append(piece_ids)
                owners.append(len(spans))
            spans.append(m.span())
        n_char = [len(c) for c in chars]
        f = np.concatenate([np.asarray(feats, np.int64), *chars])
        occ_span = np.concatenate([np.asarray(where, np.int64), np.repeat(owners, n_char)])
        weight = np.concatenate([np.asarray(frac, np.float64), np.ones(sum(n_char))])
        ids, inv = np.unique(f, return_inverse=True)
        tf = np.bincount(inv, weights=weight, minlength=len(ids))
        values = (1.0 + np.log(np.maximum(tf, 1.0))) * self.idf[ids]
        for part in (ids < self.n_words, ids >= self.n_words):  # L2 per analyzer
            norm = float(np.sqrt(np.sum(values[part] ** 2)))
            if norm > 0:
                values[part] /= norm
        return Analysis(
            ids,
            values.astype(np.float32),
            inv.astype(np.int64),
            occ_span.astype(np.int64),
            weight / np.maximum(tf[inv], 1e-12),
            np.asarray(spans, np.int64).reshape(-1, 2),
        )


def analyse_all(lexicon: Lexicon | None, texts: Sequence[str]) -> list[Analysis] | None:
    """The texts' analyses, or None without a lexicon (no head is hybrid)."""
    return None if lexicon is None else [lexicon.analyse(t) for t in texts]


class LexicalPart:
    """The lexical term of a hybrid head's logits: ``V @ tfidf(text) + c``."""

    def __init__(self, lexicon: Lexicon, weight: np.ndarray, bias: np.ndarray) -> None:
        if weight.shape[1] != lexicon.size or weight.shape[0] != bias.shape[0]:
            raise ValueError(
                f"lexical part: V {weight.shape} / c {bias.shape} vs {lexicon.size} features"
            )
        self.lexicon = lexicon
        self.weight = weight.astype(np.float32)
        self.bias = bias.astype(np.float32)
        self._centred = (self.weight - self.weight.mean(axis=0)).astype(np.float64)

    def logits(self, analyses: Sequence[Analysis]) -> np.ndarray:
        out = np.tile(self.bias, (len(analyses), 1))
        for r, a in enumerate(analyses):
            if len(a.ids):
                out[r] += self.weight[:, a.ids] @ a.values
        return out

    def span_shares(self, analysis: Analysis, label: int) -> tuple[np.ndarray, np.ndarray]:
        """Character spans [S, 2] of ``analysis`` and each one's share of the centred logit of
        ``label``: every feature's ``(V[label] - mean V) * value`` split over its occurrences."""
        a = analysis
        if not len(a.ids):
            return a.spans, np.zeros(len(a.spans))
        shares = self._centred[label, a.ids] * a.values
        per_span = np.bincount(
            a.occ_span, weights=shares[a.occ_feature] * a.occ_weight, minlength=len(a.spans)
        )
        return a.spans, per_span
