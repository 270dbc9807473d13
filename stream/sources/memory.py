"""In-memory source for tests and notebooks (bytewax's TestingSource, in spirit)."""

from __future__ import annotations

from collections.abc import Iterable

from stream.schemas import Origin
from stream.sources.base import Record, Source

__all__ = ["MemorySource"]


class MemorySource(Source):
    def __init__(self, values: Iterable[bytes | None], topic: str = "memory") -> None:
        self._records = [
            Record(v, None, Origin(topic=topic, partition=0, offset=i))
            for i, v in enumerate(values)
        ]
        self._pos = 0
        self.committed: dict[tuple[str, int], int] = {}
        self.paused = False

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        if self.paused:  # as a paused Kafka consumer: nothing until resumed
            return []
        out = self._records[self._pos : self._pos + max_records]
        self._pos += len(out)
        return out

    def store(self, offsets: dict[tuple[str, int], int]) -> None:
        self.committed.update(offsets)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    @property
    def exhausted(self) -> bool:
        return self._pos >= len(self._records)
