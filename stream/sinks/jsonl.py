"""JSONL sink: each topic becomes ``<dir>/<topic>.jsonl``; a write is acked once flushed."""

from __future__ import annotations

from pathlib import Path
from typing import IO

from stream.sinks.base import DeliveryCallback, Sink

__all__ = ["JsonlSink"]


class JsonlSink(Sink):
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, IO[bytes]] = {}
        self._pending: list[DeliveryCallback] = []

    def path(self, topic: str) -> Path:
        return self.directory / f"{topic}.jsonl"

    def produce(
        self, topic: str, key: bytes | None, value: bytes, on_delivery: DeliveryCallback
    ) -> None:
        fh = self._files.get(topic)
        if fh is None:
            fh = self._files[topic] = open(self.path(topic), "ab")  # noqa: SIM115
        fh.write(value + b"\n")
        self._pending.append(on_delivery)

    def poll(self, timeout_s: float = 0.0) -> None:
        self.flush()

    def flush(self, timeout_s: float = 30.0) -> int:
        for fh in self._files.values():
            fh.flush()
        pending, self._pending = self._pending, []
        for cb in pending:
            cb(None)
        return 0

    def close(self) -> None:
        self.flush()
        for fh in self._files.values():
            fh.close()
        self._files.clear()
