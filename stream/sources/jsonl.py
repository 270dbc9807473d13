"""JSONL file source: one event per line; the origin is (file name, 0, line number)."""

from __future__ import annotations

from pathlib import Path

from stream.schemas import Origin
from stream.sources.base import Record, Source

__all__ = ["JsonlSource"]


class JsonlSource(Source):
    """Read a JSON-lines file once (bounded: ``exhausted`` turns true at the end)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fh = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        self._line = 0
        self._done = False
        self.committed: dict[tuple[str, int], int] = {}

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        out: list[Record] = []
        while len(out) < max_records and not self._done:
            raw = self._fh.readline()
            if not raw:
                self._done = True
                break
            offset = self._line
            self._line += 1
            value = raw.rstrip(b"\r\n")
            if not value.strip():
                continue
            out.append(
                Record(value, None, Origin(topic=self.path.name, partition=0, offset=offset))
            )
        return out

    def store(self, offsets: dict[tuple[str, int], int]) -> None:
        self.committed.update(offsets)

    @property
    def exhausted(self) -> bool:
        return self._done

    def close(self) -> None:
        self._fh.close()
