"""In-memory sink for tests: keeps (topic, key, value) and acks on poll."""

from __future__ import annotations

from stream.headers import Headers
from stream.sinks.base import DeliveryCallback, Sink

__all__ = ["MemorySink"]


class MemorySink(Sink):
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes | None, bytes]] = []
        self.headers: list[list[tuple[str, bytes | None]]] = []  # per message
        self._pending: list[DeliveryCallback] = []

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        on_delivery: DeliveryCallback,
        headers: Headers | None = None,
    ) -> None:
        self.messages.append((topic, key, value))
        self.headers.append(list(headers or []))
        self._pending.append(on_delivery)

    def poll(self, timeout_s: float = 0.0) -> None:
        self.flush()

    def flush(self, timeout_s: float = 30.0) -> int:
        pending, self._pending = self._pending, []
        for cb in pending:
            cb(None)
        return 0

    def topic(self, name: str) -> list[bytes]:
        return [v for t, _, v in self.messages if t == name]
