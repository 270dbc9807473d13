"""The answers received, kept on disk before their offsets are committed.

Why a journal and not only the bundle: the gate may refuse an adaptation, and a refused round
writes no bundle, yet its answers must survive a crash. Each answer is appended (one JSON line)
and the file fsynced before the consumer commits the offsets that carried it; a restart reads
the journal back, and records re-read from the topic after a crash are recognised by their
answer id. The next bundle version copies the journal as its lineage.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import orjson

from stream.schemas import FeedbackEvent

__all__ = ["Journal"]


class Journal:
    """Append-only JSON lines at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> list[FeedbackEvent]:
        """Every answer written so far (a last line cut by a crash is dropped: its offset was
        never committed, so the topic delivers it again)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_bytes().splitlines():
            try:
                out.append(FeedbackEvent.model_validate(orjson.loads(line)))
            except (orjson.JSONDecodeError, ValueError):
                continue
        return out

    def append(self, answers: Iterable[FeedbackEvent]) -> int:
        """Write ``answers`` and fsync; returns how many were written."""
        lines = [orjson.dumps(a.model_dump(mode="json")) + b"\n" for a in answers]
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            if f.tell() and not self._ends_with_newline():
                f.write(b"\n")  # after a torn last line
            f.write(b"".join(lines))
            f.flush()
            os.fsync(f.fileno())
        return len(lines)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
