"""The Sink shape: hand over an output with a delivery callback; poll, flush, close.

The callback fires once the output is durable (a broker ack for Kafka, a flushed write for a
file); only then may the worker store the input offset."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from stream.connectivity import BrokerLink
from stream.headers import Headers

__all__ = ["DeliveryCallback", "Sink", "SinkFull", "SinkRejected", "SinkUnavailable"]

DeliveryCallback = Callable[[Exception | None], None]


class SinkFull(Exception):
    """The sink's local queue is full; poll and retry (backpressure)."""


class SinkRejected(Exception):
    """The sink refuses this one output for good (too large, invalid): re-sending cannot help,
    so the worker dead-letters its input instead. Raised by ``produce`` or passed to the
    delivery callback."""


class SinkUnavailable(Exception):
    """The sink cannot take this output now (a missing topic, a denied write, a non-fatal
    client error): a fault of the system, not of the event, so the worker re-sends it later
    and pauses its input meanwhile. Raised by ``produce``."""


class Sink(ABC):
    #: broker connectivity of a networked sink (None: always reachable)
    link: BrokerLink | None = None
    #: most outputs the sink can queue locally (None: unbounded); caps the worker's in-flight
    capacity: int | None = None

    @abstractmethod
    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        on_delivery: DeliveryCallback,
        headers: Headers | None = None,
    ) -> None:
        """Queue one output; raise :class:`SinkFull` when the queue is full."""

    def poll(self, timeout_s: float = 0.0) -> None:  # noqa: B027 - optional hook
        """Serve delivery callbacks."""

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; return how many are still pending."""
        return 0

    def check_topics(self, topics: list[str]) -> dict[str, str]:
        """Problems of the topics this sink is asked to write (topic -> error), checked before
        any event is taken in: at start and before a new bundle is served."""
        return {}

    @property
    def healthy(self) -> bool:
        return True

    def close(self, timeout_s: float = 10.0) -> None:  # noqa: B027 - optional hook
        """Release resources (waiting at most ``timeout_s`` for pending deliveries)."""
