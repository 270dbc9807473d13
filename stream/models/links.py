"""Links are not evidence: the lexical term never reads them, the encoder optionally not.

Why: a CrisisMMD tweet's ``https://t.co/…`` links are ~55 % of its wordpieces and are random
characters. Mean pooling over them dilutes the embedding and costs encoder time, and a link is
no reason an analyst can act on, yet 4.4 % of rationale spans on dev tweets were links. The
lexicon blanks them (:func:`mask_links`); a bundle built with ``--drop-links`` also gives the
encoder a tokenizer that drops them (:func:`stream.build.export.write_tokenizer`: ~3x faster,
but humanitarian dev macro-F1 fell 0.010, so not the default). Both keep character offsets into
the original text, so rationale spans still point at the event's own words.
"""

from __future__ import annotations

import re

__all__ = ["LINK_PATTERN", "mask_links"]

#: what counts as a link (also the tokenizer normaliser's regex: keep it valid for Oniguruma)
LINK_PATTERN = r"https?://\S+"
_LINK = re.compile(LINK_PATTERN)


def mask_links(text: str) -> str:
    """``text`` with every link replaced by as many spaces (offsets unchanged)."""
    return _LINK.sub(lambda m: " " * len(m.group()), text)
