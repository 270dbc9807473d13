"""Bounded range reader: every partition of a topic from a start bound to an end bound.

Replays must never disturb live consumer groups, so the reader uses ``assign()`` (no group
membership, no rebalance) with auto-commit off and never commits. Per-partition start and end
offsets are fixed up front (``offsets_for_times`` for time bounds, the high watermark *at start*
for ``end``); the end is exclusive. While reading, the end is detected from the consumer's own
position, never from the watermark (which tansu reports wrongly), with an idle timeout as the
last resort.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from stream.errors import ConfigError
from stream.schemas import Origin
from stream.sources.base import Record, Source

__all__ = ["Bound", "PartitionRange", "ReplaySource", "parse_bound", "parse_time", "read_range"]

log = logging.getLogger(__name__)

BoundKind = Literal["offset", "ts", "beginning", "end"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Bound:
    """One end of a replay range: an offset (per partition), a time (epoch ms), or the
    beginning / end of the log."""

    kind: BoundKind
    value: int = 0

    def __str__(self) -> str:
        return self.kind if self.kind in ("beginning", "end") else f"{self.kind}:{self.value}"


def parse_time(text: str) -> int:
    """Epoch milliseconds from ``1700000000000`` or an ISO 8601 time (naive = UTC)."""
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"not an ISO 8601 time or epoch milliseconds: {text!r}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)  # exact: float seconds lose a ms


def parse_bound(spec: str) -> Bound:
    """``beginning`` | ``end`` | ``offset:N`` | ``ts:ISO8601`` | ``ts:EPOCH_MS``."""
    spec = spec.strip()
    if spec in ("beginning", "end"):
        return Bound(spec)  # type: ignore[arg-type]
    kind, _, rest = spec.partition(":")
    if kind == "offset" and re.fullmatch(r"\d+", rest):
        return Bound("offset", int(rest))
    if kind == "ts" and rest:
        return Bound("ts", parse_time(rest))
    raise ConfigError(
        f"bad range bound {spec!r}: use beginning, end, offset:N, ts:ISO8601 or ts:EPOCH_MS"
    )


@dataclass
class PartitionRange:
    """Offsets ``[start, end)`` of one partition and how far reading got."""

    partition: int
    start: int
    end: int
    position: int

    @property
    def done(self) -> bool:
        return self.position >= self.end


def _is_data(msg: Message) -> bool:
    """Whether the message is a record; a consumer error (other than a partition's end) is
    logged."""
    err = msg.error()
    if err is None:
        return True
    if err.code() != KafkaError._PARTITION_EOF:
        log.warning("replay consumer error: %s", err)
    return False


class ReplaySource(Source):
    """A bounded :class:`Source` over ``[start, end)`` of every partition of ``topic``;
    ``exhausted`` turns true once every partition reached its end (or nothing came for
    ``idle_timeout_s``, in which case ``complete`` stays false)."""

    def __init__(
        self,
        conf: dict[str, Any],
        topic: str,
        start: Bound,
        end: Bound,
        idle_timeout_s: float = 30.0,
        timeout_s: float = 30.0,
    ) -> None:
        if start.kind == "end" or end.kind == "beginning":
            raise ConfigError("a replay runs from a start bound to a later end bound")
        self.topic = topic
        self.start_bound, self.end_bound = start, end
        self.idle_timeout_s = idle_timeout_s
        base: dict[str, Any] = {
            "group.id": f"crisis-replay-{uuid.uuid4().hex[:12]}",  # never joined nor committed
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            "log_level": 3,
        }
        self._consumer = Consumer({**conf, **base}, logger=log)
        try:
            self.ranges = self._plan(timeout_s)
        except BaseException:
            self._consumer.close()
            raise
        self.skipped_out_of_window = 0
        self._paused = False
        self._last_data = time.monotonic()
        self._timed_out = False
        todo = [r for r in self.ranges.values() if not r.done]
        if todo:
            self._consumer.assign([TopicPartition(topic, r.partition, r.start) for r in todo])

    # -- planning ----------------------------------------------------------------------------
    def _plan(self, timeout_s: float) -> dict[int, PartitionRange]:
        md = self._consumer.list_topics(self.topic, timeout=timeout_s).topics.get(self.topic)
        if md is None or md.error is not None or not md.partitions:
            err = md.error if md is not None else "unknown topic"
            raise ConfigError(f"cannot replay topic {self.topic!r}: {err}")
        plan: dict[int, PartitionRange] = {}
        for p in sorted(md.partitions):
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=timeout_s, cached=False
            )
            start = self._resolve(self.start_bound, p, low, high, timeout_s)
            end = self._resolve(self.end_bound, p, low, high, timeout_s)
            end = max(end, start)
            plan[p] = PartitionRange(p, start, end, start)
        log.info(
            "replay plan for %s: %s",
            self.topic,
            {p: (r.start, r.end) for p, r in plan.items()},
        )
        return plan

    def _resolve(self, bound: Bound, p: int, low: int, high: int, timeout_s: float) -> int:
        if bound.kind == "beginning":
            return low
        if bound.kind == "end":
            return high
        if bound.kind == "offset":
            return min(max(bound.value, low), high)
        found = self._consumer.offsets_for_times(
            [TopicPartition(self.topic, p, bound.value)], timeout=timeout_s
        )[0]
        if found.error is not None:
            raise ConfigError(f"offsets_for_times failed on {self.topic}[{p}]: {found.error}")
        # -1: no record at or after that time -> the end of the partition
        return high if found.offset < 0 else min(max(found.offset, low), high)

    # -- reading -----------------------------------------------------------------------------
    @property
    def total(self) -> int:
        """Offsets in the range (records, unless compaction or transactions left gaps)."""
        return sum(r.end - r.start for r in self.ranges.values())

    @property
    def consumed(self) -> int:
        """Offsets of the range read so far."""
        return sum(min(r.position, r.end) - r.start for r in self.ranges.values())

    @property
    def complete(self) -> bool:
        return all(r.done for r in self.ranges.values())

    @property
    def exhausted(self) -> bool:
        return self.complete or self._timed_out

    def _in_window(self, ts: int | None) -> bool:
        """Time bounds also filter records, so out-of-order producer timestamps inside the
        offset range never leak into a time window."""
        if ts is None:
            return True
        if self.start_bound.kind == "ts" and ts < self.start_bound.value:
            return False
        return not (self.end_bound.kind == "ts" and ts >= self.end_bound.value)

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        if self.exhausted:
            time.sleep(min(timeout_s, 0.01))
            return []
        out: list[Record] = []
        finished: list[PartitionRange] = []
        for msg in self._consumer.consume(max_records, timeout_s):
            if _is_data(msg):
                self._take(msg, out, finished)
        finished += self._after_poll(bool(out or finished))
        if finished:
            self._consumer.pause([TopicPartition(self.topic, r.partition) for r in finished])
        return out

    def _take(self, msg: Message, out: list[Record], finished: list[PartitionRange]) -> None:
        """Adds the message to ``out`` when it is in range, and its partition to ``finished``
        when it completes the range."""
        part, offset = msg.partition(), msg.offset()
        if part is None or offset is None or part not in self.ranges:
            return
        r = self.ranges[part]
        if r.done or offset >= r.end:
            r.position = max(r.position, r.end)
            finished.append(r)
            return
        r.position = offset + 1
        ts_type, ts = msg.timestamp()
        stamp = ts if ts_type else None
        if not self._in_window(stamp):
            self.skipped_out_of_window += 1
            return
        origin = Origin(topic=self.topic, partition=part, offset=offset, timestamp=stamp)
        out.append(Record(msg.value(), msg.key(), origin))
        if r.done:
            finished.append(r)

    def _after_poll(self, got_data: bool) -> list[PartitionRange]:
        """Partitions found finished by their position; notes activity, or stops a replay idle
        for longer than ``idle_timeout_s``."""
        now = time.monotonic()
        if got_data:
            self._last_data = now
            return []
        finished = self._catch_up_by_position()
        if self._paused or finished:
            self._last_data = now
        elif now - self._last_data > self.idle_timeout_s:
            self._timed_out = True
            log.warning(
                "replay of %s idle for %.0fs with %d of %d offsets read; stopping",
                self.topic,
                self.idle_timeout_s,
                self.consumed,
                self.total,
            )
        return finished

    def _catch_up_by_position(self) -> list[PartitionRange]:
        """Partitions whose fetch position passed the end without a record at ``end - 1``
        (compaction, transaction markers)."""
        todo = [r for r in self.ranges.values() if not r.done]
        if not todo:
            return []
        done = []
        for tp in self._consumer.position([TopicPartition(self.topic, r.partition) for r in todo]):
            r = self.ranges[tp.partition]
            if tp.offset >= r.end:
                r.position = r.end
                done.append(r)
        return done

    def pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._consumer.pause(self._active())

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._consumer.resume(self._active())

    def _active(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, r.partition) for r in self.ranges.values() if not r.done]

    def close(self) -> None:
        self._consumer.close()  # assign()ed, auto-commit off: leaves no trace in any group


def read_range(
    conf: dict[str, Any],
    topic: str,
    start: Bound | None = None,
    end: Bound | None = None,
    idle_timeout_s: float = 30.0,
) -> Iterator[Record]:
    """Every record of ``topic`` in ``[start, end)`` (default: the whole log as of now)."""
    src = ReplaySource(
        conf, topic, start or Bound("beginning"), end or Bound("end"), idle_timeout_s
    )
    try:
        while not src.exhausted:
            yield from src.poll(1000, 0.5)
    finally:
        src.close()
