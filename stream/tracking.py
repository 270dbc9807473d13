"""Offset tracking: an input offset becomes committable only when every output it produced
(labelled, review, per-label, dead-letter) has been acknowledged by the broker.

Outputs of different inputs are acknowledged out of order (they land on different output
partitions), so per input partition we advance a low watermark over a contiguous run of
finished offsets; nothing past a gap is ever committed.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["OffsetTracker", "TopicPartitionKey"]

TopicPartitionKey = tuple[str, int]


@dataclass
class _Entry:
    pending: int = 0
    sealed: bool = False


class OffsetTracker:
    """Track in-flight input records and yield the next offsets that are safe to commit."""

    def __init__(self) -> None:
        self._parts: dict[TopicPartitionKey, OrderedDict[int, _Entry]] = {}
        self._safe: dict[TopicPartitionKey, int] = {}
        self._dirty: set[TopicPartitionKey] = set()
        self.in_flight_outputs = 0

    def register(self, topic: str, partition: int, offset: int) -> None:
        """Note that a record was read; it blocks commits past it until sealed and acked."""
        part = self._parts.setdefault((topic, partition), OrderedDict())
        part.setdefault(offset, _Entry())

    def expect(self, topic: str, partition: int, offset: int, n: int = 1) -> None:
        """``n`` more outputs of this record were handed to the producer."""
        self._parts[(topic, partition)][offset].pending += n
        self.in_flight_outputs += n

    def seal(self, topic: str, partition: int, offset: int) -> None:
        """All outputs of the record have been handed over; it is done once they are acked."""
        key = (topic, partition)
        entry = self._parts[key].get(offset)
        if entry is not None:
            entry.sealed = True
            self._advance(key)

    def ack(self, topic: str, partition: int, offset: int) -> None:
        """One output of the record was acknowledged by the broker."""
        key = (topic, partition)
        entry = self._parts.get(key, OrderedDict()).get(offset)
        if entry is None:  # partition was revoked meanwhile; nothing to do
            return
        entry.pending -= 1
        self.in_flight_outputs -= 1
        self._advance(key)

    def _advance(self, key: TopicPartitionKey) -> None:
        part = self._parts[key]
        moved = False
        while part:
            offset, entry = next(iter(part.items()))
            if not (entry.sealed and entry.pending == 0):
                break
            part.popitem(last=False)
            self._safe[key] = offset + 1
            moved = True
        if moved:
            self._dirty.add(key)

    def take_committable(self) -> dict[TopicPartitionKey, int]:
        """Next offsets to store/commit that advanced since the last call."""
        out = {k: self._safe[k] for k in self._dirty}
        self._dirty.clear()
        return out

    def committable(self) -> dict[TopicPartitionKey, int]:
        """All safe next offsets known (for a final synchronous commit)."""
        return dict(self._safe)

    def pending_records(self) -> int:
        return sum(len(p) for p in self._parts.values())

    def forget(self, keys: list[TopicPartitionKey]) -> None:
        """Drop state of revoked partitions (their uncommitted records are re-read elsewhere)."""
        for key in keys:
            part = self._parts.pop(key, OrderedDict())
            self.in_flight_outputs -= sum(e.pending for e in part.values())
            self._safe.pop(key, None)
            self._dirty.discard(key)
