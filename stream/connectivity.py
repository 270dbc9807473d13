"""Broker connectivity as one client (consumer or producer) sees it, for readiness and logs.

librdkafka never raises when the cluster goes away: it retries forever and only reports through
callbacks. ``_ALL_BROKERS_DOWN`` (error callback) marks the link down at once; it comes back up on
the first sign of life: a statistics report with a broker in state ``UP``, a consumed record or
an acknowledged delivery. An idle producer with sparse connections may have no broker connected
at all, so the absence of ``UP`` alone never marks a link down.

While a link is down librdkafka retries connecting many times a second; those repeats are
counted, not logged, so an outage costs two log lines (lost, restored) instead of thousands.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import KafkaError

__all__ = ["BrokerLink"]

log = logging.getLogger(__name__)

_DOWN_CODES = frozenset({KafkaError._ALL_BROKERS_DOWN})


class BrokerLink:
    """Up/down state of one client's connection to the cluster, with logged transitions."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self.up = True
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.outages = 0
        self.suppressed = 0

    def on_error(self, err: KafkaError) -> None:
        """librdkafka ``error_cb``: all brokers down marks the link down; others are logged."""
        self.last_error = str(err)
        if err.code() in _DOWN_CODES:
            self.mark_down(str(err))
        elif not self.up:
            self.suppressed += 1
        elif err.fatal():
            log.error("%s: fatal Kafka error: %s", self.name, err)
        else:
            log.warning("%s: Kafka error: %s", self.name, err)

    def on_stats(self, stats_json: str) -> None:
        """librdkafka ``stats_cb``: any broker in state UP proves the link is back."""
        stats: dict[str, Any] = orjson.loads(stats_json)
        brokers = stats.get("brokers", {}).values()
        if any(b.get("state") == "UP" for b in brokers):
            self.mark_up()

    def mark_down(self, why: str) -> None:
        if self.up:
            self.up = False
            self.down_since = self._clock()
            self.outages += 1
            log.warning("%s: lost connection to all brokers (%s)", self.name, why)

    def mark_up(self) -> None:
        if not self.up:
            down_for = self._clock() - (self.down_since or self._clock())
            self.up = True
            self.down_since = None
            log.info(
                "%s: broker connection restored after %.1fs (%d connection errors not logged)",
                self.name,
                down_for,
                self.suppressed,
            )
            self.suppressed = 0

    def quiet(self, logger: logging.Logger) -> logging.LoggerAdapter[logging.Logger]:
        """``logger`` for librdkafka's own log lines, muting its connect failures while down."""
        return _QuietWhileDown(logger, self)

    def describe(self) -> str:
        if self.up:
            return f"{self.name}: connected"
        down_for = self._clock() - (self.down_since or self._clock())
        return f"{self.name}: no broker reachable for {down_for:.0f}s ({self.last_error})"


class _QuietWhileDown(logging.LoggerAdapter[logging.Logger]):
    def __init__(self, logger: logging.Logger, link: BrokerLink) -> None:
        super().__init__(logger)
        self.link = link

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if not self.link.up and any(str(a).startswith("FAIL") for a in (msg, *args[:1])):
            self.link.suppressed += 1
            return
        super().log(level, msg, *args, **kwargs)
