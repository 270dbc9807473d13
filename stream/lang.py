"""Language identification for events that arrive without ``lang``.

Why: a crisis is tweeted in its own languages, and analysts (and ``evaluate --by-lang``) need to
know which; most sources do not say. py3langid (langid.py's model, 97 languages, shipped in its
wheel, no network) classifies the text with links, handles and ``#`` removed, since those carry
no language. A text with fewer than two letters-only words is too short to call: None.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

__all__ = ["detect_language"]

_NOISE = re.compile(r"https?://\S+|www\.\S+|@\w+|#", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]{2,}")


@lru_cache(maxsize=1)
def _model() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of ``text``'s language, or None when there is too little text."""
    clean = _NOISE.sub(" ", text)
    if len(_WORD.findall(clean)) < 2:
        return None
    code, _score = _model().classify(clean)
    return str(code)
