"""Function words: the closed-class words of a text (articles, pronouns, prepositions, ...).

Why: a mean-pooled encoder gives every token a share of the logit, so a faithful rationale often
names "in" or "the"; an analyst reading "why: 'in' +0.13" stops trusting it. This list, shipped
with the package (``data/function_words.json``: en, es, pt, fr, it, de, tl, id), is what the
faithfulness report counts among the rationale words, and what a bundle built with
content pooling leaves out of the pool. One union over the languages, no language detection:
tweets mix languages, and a short text's detected language is unreliable. Words that are
open-class in another of the languages (English "son", "die", "war") are not function words.

A word is a run of tokens whose character spans touch (:func:`stream.rationale.word_tokens`),
compared lowercased with the punctuation at its edges removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import orjson

from stream.rationale import trim, word_tokens

__all__ = ["PACKAGED", "FunctionWords", "function_words", "packaged_json"]

PACKAGED = "data/function_words.json"


class FunctionWords:
    """A set of function words and the token masks it implies."""

    def __init__(self, words: frozenset[str]) -> None:
        self.words = words

    def __contains__(self, word: object) -> bool:
        if not isinstance(word, str):
            return False
        s, e = trim(word, 0, len(word))
        return word[s:e].lower() in self.words

    def token_mask(
        self, text: str, offsets: Sequence[tuple[int, int]], word_ids: Sequence[int | None]
    ) -> np.ndarray:
        """True for each token of a function word of ``text`` (special tokens: False)."""
        mask = np.zeros(len(offsets), bool)
        for start, end, tokens in word_tokens(offsets, word_ids):
            if text[start:end] in self:
                mask[tokens] = True
        return mask

    @classmethod
    def from_json(cls, data: bytes) -> FunctionWords:
        """The union of every language's words in ``data`` less its ambiguous ones."""
        raw = orjson.loads(data)
        words = {w.lower() for ws in raw["languages"].values() for w in ws}
        return cls(frozenset(words - {w.lower() for w in raw["ambiguous"]}))

    @classmethod
    def load(cls, path: Path) -> FunctionWords:
        """A bundle's copy: the list its heads were fitted with, whatever the package ships."""
        return cls.from_json(path.read_bytes())


def packaged_json() -> bytes:
    """The list this package ships (what a new bundle copies)."""
    return resources.files("stream.models").joinpath(PACKAGED).read_bytes()


@cache
def function_words() -> FunctionWords:
    """The packaged list (:func:`packaged_json`)."""
    return FunctionWords.from_json(packaged_json())
