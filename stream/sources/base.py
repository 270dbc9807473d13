"""The Source shape: read records with their origin, store/commit progress, pause for
backpressure. Kafka and JSONL sources share it, so the worker and replay run either."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from stream.connectivity import BrokerLink
from stream.headers import Headers
from stream.schemas import Origin

__all__ = ["Record", "RevokeCallback", "Source"]

RevokeCallback = Callable[[list[tuple[str, int]]], None]


@dataclass(frozen=True)
class Record:
    value: bytes | None
    key: bytes | None
    origin: Origin
    headers: Headers = ()


class Source(ABC):
    """A stream of input records."""

    #: called with (topic, partition) pairs before they are taken away (rebalance)
    on_revoke: RevokeCallback | None = None
    #: broker connectivity of a networked source (None: always reachable)
    link: BrokerLink | None = None

    @abstractmethod
    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to ``max_records`` records, waiting at most ``timeout_s``."""

    def store(self, offsets: dict[tuple[str, int], int]) -> None:  # noqa: B027 - optional hook
        """Mark ``offset`` (the next one to read) as done for each partition."""

    def commit(self, wait: bool = True) -> None:  # noqa: B027 - optional hook
        """Commit everything stored so far; ``wait=False`` may send it and return before the
        broker answers, so long as no earlier such commit is still unanswered."""

    def pause(self) -> None:  # noqa: B027 - optional hook
        """Stop fetching (backpressure); ``poll`` keeps the session alive."""

    def resume(self) -> None:  # noqa: B027 - optional hook
        """Fetch again after :meth:`pause`."""

    @property
    def exhausted(self) -> bool:
        """True when a bounded source has nothing more to give."""
        return False

    @property
    def ready(self) -> bool:
        """True when the source can deliver records (e.g. has joined its consumer group)."""
        return True

    @property
    def assignment(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this source reads now (one for unpartitioned ones)."""
        return {("local", 0)}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
