"""An exact-text LRU cache of encoder outputs (one text's pooled embedding and token states).

A hit returns the very arrays computed the first time, so a cached output is byte-identical
to the uncached output of that first encoding. Note that with dynamic int8 quantization a
text's embedding shifts slightly with the batch it is padded into (activation scales are per
batch), so a repeat hit is not bit-equal to re-encoding the text in a *different* batch; it is
deterministic per text instead. Each entry holds ``[T, D]`` float32 token states (~70 KB for a
45-token tweet), so size the cache in entries with that in mind.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

__all__ = ["CachedText", "EncoderCache"]


@dataclass(frozen=True)
class CachedText:
    """Everything :class:`~stream.models.text.TextEncoding` keeps for one text."""

    embedding: np.ndarray
    tokens: np.ndarray
    scale: float
    offsets: list[tuple[int, int]]
    word_ids: list[int | None]
    pooled: np.ndarray


class EncoderCache:
    """Least-recently-used map text -> :class:`CachedText`, at most ``max_entries``."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._items: OrderedDict[str, CachedText] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, text: str) -> CachedText | None:
        item = self._items.get(text)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(text)
        self.hits += 1
        return item

    def put(self, text: str, item: CachedText) -> None:
        self._items[text] = item
        self._items.move_to_end(text)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
