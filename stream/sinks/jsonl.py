"""JSONL sink: each topic becomes a file; a write is acknowledged once flushed.

Two layouts: a directory (``<dir>/<topic>.jsonl``, appended to, any topic) for ``run --sink
dir:PATH``, or fixed files per topic (truncated on open: one replay, one file) for replays.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import IO

from stream.errors import ConfigError
from stream.headers import Headers
from stream.sinks.base import DeliveryCallback, Sink

__all__ = ["JsonlSink"]


class JsonlSink(Sink):
    def __init__(
        self, directory: Path | None = None, *, paths: Mapping[str, Path] | None = None
    ) -> None:
        if (directory is None) == (paths is None):
            raise ConfigError("JsonlSink needs a directory or a topic -> file mapping")
        self.directory = Path(directory) if directory is not None else None
        self._files: dict[str, IO[bytes]] = {}
        self._pending: list[DeliveryCallback] = []
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        for topic, path in (paths or {}).items():
            path.parent.mkdir(parents=True, exist_ok=True)
            self._files[topic] = open(path, "wb")  # noqa: SIM115 - closed in close()

    def path(self, topic: str) -> Path:
        if self.directory is None:
            raise ConfigError(f"file sink has no file for topic {topic!r}")
        return self.directory / f"{topic}.jsonl"

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        on_delivery: DeliveryCallback,
        headers: Headers | None = None,
    ) -> None:
        """One JSON line per output; a file has no place for the key or headers."""
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

    def close(self, timeout_s: float = 10.0) -> None:
        self.flush()
        for fh in self._files.values():
            fh.close()
        self._files.clear()
