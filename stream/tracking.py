"""Offset tracking: an input offset becomes committable only when every output it produced
(labelled, review, per-label, dead-letter) has been acknowledged by the broker.

Outputs of different inputs are acknowledged out of order (they land on different output
partitions), so per input partition we advance a low watermark over a contiguous run of
finished offsets; nothing past a gap is ever committed.

Acknowledgements go to the record *read*, not to its offset: :meth:`OffsetTracker.expect`
returns the entry, and a delivery report counts against that entry only. A partition revoked
with outputs still in flight and assigned back re-reads the same offsets; a late report for the
old read must not complete the new one (it would commit the offset before the new outputs are
acknowledged, or drive its count negative and stall the partition).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = ["Entry", "OffsetTracker", "TopicPartitionKey"]

TopicPartitionKey = tuple[str, int]


@dataclass(eq=False)
class Entry:
    """One read of one input record; ``live`` turns False when its partition is revoked;
    ``rejected`` once one of its outputs was refused for good and the input dead-lettered;
    ``bytes``: the size of its outputs still in flight; ``since``: when it was read."""

    pending: int = 0
    sealed: bool = False
    live: bool = True
    rejected: bool = False
    bytes: int = 0
    since: float = field(default_factory=time.monotonic)


class OffsetTracker:
    """Track in-flight input records and yield the next offsets that are safe to commit."""

    def __init__(self) -> None:
        self._parts: dict[TopicPartitionKey, OrderedDict[int, Entry]] = {}
        self._safe: dict[TopicPartitionKey, int] = {}
        self._dirty: set[TopicPartitionKey] = set()
        self.in_flight_outputs = 0
        self.in_flight_bytes = 0

    def register(self, topic: str, partition: int, offset: int) -> None:
        """Note that a record was read; it blocks commits past it until sealed and acked."""
        part = self._parts.setdefault((topic, partition), OrderedDict())
        part.setdefault(offset, Entry())

    def expect(self, topic: str, partition: int, offset: int, n: int = 1, nbytes: int = 0) -> Entry:
        """``n`` more outputs (of ``nbytes`` in all) of this record were handed to the
        producer; their delivery reports go to the returned entry (:meth:`ack`)."""
        entry = self._parts[(topic, partition)][offset]
        entry.pending += n
        entry.bytes += nbytes
        self.in_flight_outputs += n
        self.in_flight_bytes += nbytes
        return entry

    def seal(self, topic: str, partition: int, offset: int) -> None:
        """All outputs of the record have been handed over; it is done once they are acked."""
        key = (topic, partition)
        entry = self._parts[key].get(offset)
        if entry is not None:
            entry.sealed = True
            self._advance(key)

    def ack(
        self,
        topic: str,
        partition: int,
        offset: int,
        entry: Entry | None = None,
        nbytes: int = 0,
    ) -> bool:
        """One output (of ``nbytes``) of the record was acknowledged by the broker. With
        ``entry`` (from :meth:`expect`) the report counts only against that read of the record;
        False when that read was forgotten on revocation (a stale report, nothing to do)."""
        key = (topic, partition)
        current = self._parts.get(key, OrderedDict()).get(offset)
        if current is None or (entry is not None and entry is not current):
            return False
        current.pending -= 1
        current.bytes -= nbytes
        self.in_flight_outputs -= 1
        self.in_flight_bytes -= nbytes
        self._advance(key)
        return True

    def settled(self, topic: str, partition: int, offset: int) -> bool:
        """Whether every output handed over for this record so far was acknowledged (or the
        record is done, or was forgotten)."""
        entry = self._parts.get((topic, partition), OrderedDict()).get(offset)
        return entry is None or entry.pending == 0

    def oldest_pending_age(self, now: float | None = None) -> dict[TopicPartitionKey, float]:
        """Per partition, seconds since the oldest record not yet committable was read: a
        growing age is a stuck offset even while other partitions move."""
        now = time.monotonic() if now is None else now
        return {k: now - next(iter(p.values())).since for k, p in self._parts.items() if p}

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
            self.in_flight_bytes -= sum(e.bytes for e in part.values())
            for entry in part.values():
                entry.live = False
            self._safe.pop(key, None)
            self._dirty.discard(key)
