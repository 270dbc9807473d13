"""Micro-batching: group events until a size, a token budget or a deadline is reached.

Pure and clock-injected so its invariants (nothing lost, arrival order kept, bounds respected)
are property-tested; the encoder sorts each batch by length and restores order itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["MicroBatcher"]

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    """Collect items; a batch closes at ``max_events`` items, ``max_cost`` summed cost, or when
    its oldest item has waited ``max_wait_s``.

    An item whose own cost exceeds ``max_cost`` forms a batch by itself rather than stalling.
    """

    def __init__(self, max_events: int, max_wait_s: float, max_cost: int | None = None) -> None:
        if max_events < 1:
            raise ValueError("max_events must be >= 1")
        self.max_events = max_events
        self.max_wait_s = max_wait_s
        self.max_cost = max_cost
        self._items: deque[tuple[T, int, float]] = deque()
        self._cost = 0

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        """The queued items, oldest first."""
        return (item for item, _cost, _at in self._items)

    def add(self, item: T, now: float, cost: int = 1) -> list[list[T]]:
        """Add one item; return any batches that became full."""
        full: list[list[T]] = []
        if self.max_cost is not None and self._items and self._cost + cost > self.max_cost:
            full.append(self._take(len(self._items)))
        self._items.append((item, cost, now))
        self._cost += cost
        if len(self._items) >= self.max_events or (
            self.max_cost is not None and self._cost >= self.max_cost
        ):
            full.append(self._take(len(self._items)))
        return full

    def deadline(self) -> float | None:
        """When the oldest pending item must be flushed, or None when empty."""
        return self._items[0][2] + self.max_wait_s if self._items else None

    def due(self, now: float) -> list[list[T]]:
        """Return the pending batch if its oldest item has waited long enough."""
        d = self.deadline()
        if d is not None and now >= d:
            return [self._take(len(self._items))]
        return []

    def drain(self) -> list[list[T]]:
        """Everything pending, e.g. on shutdown."""
        return [self._take(len(self._items))] if self._items else []

    def discard(self, keep: Callable[[T], bool]) -> list[T]:
        """Drop pending items for which ``keep`` is false (revoked partitions); return them."""
        kept = deque(e for e in self._items if keep(e[0]))
        dropped = [e[0] for e in self._items if not keep(e[0])]
        self._items = kept
        self._cost = sum(c for _, c, _ in kept)
        return dropped

    def _take(self, n: int) -> list[T]:
        out = [self._items.popleft() for _ in range(n)]
        self._cost -= sum(c for _, c, _ in out)
        return [i for i, _, _ in out]
