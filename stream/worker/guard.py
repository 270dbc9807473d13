"""A fault of the system, not of an event: held, retried with backoff, reported.

A bundle that cannot label (a head that does not fit its encoder, memory exhausted) or an
output topic that does not exist fails *every* event. Dead-lettering them would drain the
stream into the DLQ and commit it; crashing would re-read and re-publish at every restart. So
while a fault lasts the worker keeps the affected events here, pauses its input, reports
not-ready with the reason, and tries again after a growing delay; no good event is lost or
dead-lettered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Guard"]

T = TypeVar("T")


class Guard(Generic[T]):
    """One kind of fault: its reason while it lasts, the items held for it, and when to try
    again (``min_s`` doubling up to ``max_s`` while attempts keep failing)."""

    def __init__(self, min_s: float = 1.0, max_s: float = 30.0) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self.reason: str | None = None
        self.held: list[T] = []
        #: failed attempts since the fault began
        self.attempts = 0
        self._delay = min_s
        self._next = 0.0

    @property
    def active(self) -> bool:
        return self.reason is not None

    def fail(self, reason: str, now: float, items: list[T] | None = None) -> None:
        """The fault (still) stands: hold ``items`` and schedule the next attempt."""
        self.reason = reason
        self.attempts += 1
        self.held.extend(items or [])
        self._next = now + self._delay
        self._delay = min(self._delay * 2, self.max_s)

    def due(self, now: float) -> bool:
        """Whether the fault stands and it is time to try again."""
        return self.active and now >= self._next

    def take(self) -> list[T]:
        """The held items, to be tried again (re-held by :meth:`fail` if they fail)."""
        items, self.held = self.held, []
        return items

    def ok(self) -> None:
        """An attempt succeeded: the fault is over, or, with items still held, they are tried
        again at once."""
        if self.held:
            self._next = 0.0
            return
        self.reason = None
        self.attempts = 0
        self._delay = self.min_s

    def discard(self, keep: Callable[[T], bool]) -> list[T]:
        """Drop the held items ``keep`` refuses (a revoked partition's); return them."""
        dropped = [i for i in self.held if not keep(i)]
        self.held = [i for i in self.held if keep(i)]
        if not self.held and self.reason is not None and dropped:
            self._next = 0.0
        return dropped
