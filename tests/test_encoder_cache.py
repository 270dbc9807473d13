"""The exact-text encoder cache: hits are byte-identical to the uncached first encoding."""

from __future__ import annotations

import numpy as np

from stream.models.bundle import Bundle
from stream.models.cache import CachedText, EncoderCache
from stream.models.text import TextEncoder, TextEncoding

TEXTS = [
    "Bridge on Highway 1 collapsed after the earthquake",
    "Volunteers needed at the shelter, bring blankets",
    "lol my cat is scared of the thunder",
    "Bridge on Highway 1 collapsed after the earthquake",  # a duplicate inside the batch
    "Power outages across Puerto Rico",
]


def _cached(bundle: Bundle, size: int) -> TextEncoder:
    e = bundle.encoder
    enc = TextEncoder.__new__(TextEncoder)
    enc.__dict__.update(e.__dict__)
    enc.cache = EncoderCache(size)
    return enc


def _same(a: TextEncoding, b: TextEncoding, rows: list[int] | None = None) -> None:
    rows = rows if rows is not None else list(range(len(b.tokens)))
    assert a.embeddings.tobytes() == b.embeddings[rows].tobytes()
    assert a.scale.tobytes() == b.scale[rows].tobytes()
    for i, j in enumerate(rows):
        assert a.tokens[i].tobytes() == b.tokens[j].tobytes()
        assert a.offsets[i] == b.offsets[j]
        assert a.word_ids[i] == b.word_ids[j]


def test_cached_outputs_are_byte_identical_to_uncached(bundle: Bundle) -> None:
    unique = list(dict.fromkeys(TEXTS))
    plain = bundle.encoder.encode(unique)
    enc = _cached(bundle, 16)
    first = enc.encode(unique)
    _same(first, plain)
    assert enc.cache is not None and enc.cache.misses == len(unique)
    again = enc.encode(TEXTS)  # all hits, in another order and with a duplicate
    rows = [unique.index(t) for t in TEXTS]
    _same(again, plain, rows)
    assert enc.cache.hits == len(TEXTS)


def test_lru_evicts_the_least_recently_used() -> None:
    c = EncoderCache(2)
    item = CachedText(
        np.zeros(2, np.float32), np.zeros((1, 2), np.float32), 1.0, [], [], np.ones(1, bool)
    )
    c.put("a", item)
    c.put("b", item)
    assert c.get("a") is item
    c.put("c", item)
    assert c.get("b") is None and c.get("a") is item and c.get("c") is item
    assert len(c) == 2
