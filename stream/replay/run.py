"""Replay driver: a bounded range of a topic through the live worker's code path into a sink.

The replay builds a :class:`~stream.worker.Worker` exactly like production does (same decode,
micro-batching, :class:`~stream.pipeline.Pipeline`, dead letters), only with a bounded
:class:`~stream.replay.reader.ReplaySource` and a sink of its own, so a backtest measures what
the live worker would have published.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from stream.errors import ConfigError
from stream.ops.admin import ensure_topics
from stream.pipeline import Pipeline
from stream.replay.reader import Bound, ReplaySource
from stream.runtime import build_pipeline
from stream.schemas import LabeledEvent
from stream.settings import Settings
from stream.sinks import JsonlSink, KafkaSink, Sink
from stream.worker import Worker, WorkerStats

__all__ = ["Progress", "ReplayResult", "SinkTarget", "parse_sink", "replay"]


@dataclass(frozen=True)
class SinkTarget:
    """``topic:NAME`` (labelled events to NAME, dead letters to NAME.dlq) or ``file:PATH``
    (labelled events to PATH, dead letters to PATH + ``.dlq.jsonl``)."""

    kind: str
    name: str

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq" if self.kind == "topic" else f"{self.name}.dlq.jsonl"


def parse_sink(spec: str) -> SinkTarget:
    kind, _, name = spec.partition(":")
    if kind not in ("topic", "file") or not name:
        raise ConfigError(f"bad sink {spec!r}: use topic:NAME or file:PATH")
    return SinkTarget(kind, name)


class Progress:
    """``done/total, rate, ETA`` on stderr, at most every ``every_s`` seconds; ``done`` counts
    records whose outputs are all delivered."""

    def __init__(
        self,
        done: Callable[[], int],
        total: int,
        out: TextIO | None = None,
        every_s: float | None = None,
    ) -> None:
        self.done = done
        self.total = total
        self.out = out if out is not None else sys.stderr
        self._tty = hasattr(self.out, "isatty") and self.out.isatty()
        # a terminal redraws one line; a log file gets a line every 10 s
        self.every_s = every_s if every_s is not None else (1.0 if self._tty else 10.0)
        self.t0 = time.monotonic()
        self._last = time.monotonic()

    def line(self) -> str:
        done, total = self.done(), self.total
        elapsed = max(time.monotonic() - self.t0, 1e-6)
        rate = done / elapsed
        eta = f"{(total - done) / rate:5.0f}s" if rate > 0 else "    ?"
        pct = 100.0 * done / total if total else 100.0
        return f"replay {done}/{total} ({pct:5.1f}%)  {rate:6.1f} ev/s  ETA {eta}"

    def __call__(self, _batch: list[LabeledEvent] | None = None, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < self.every_s:
            return
        self._last = now
        end = "\n" if final or not self._tty else "\r"
        self.out.write(self.line() + end)
        self.out.flush()


@dataclass(frozen=True)
class ReplayResult:
    stats: WorkerStats
    total: int
    consumed: int
    complete: bool
    skipped_out_of_window: int
    seconds: float
    output: str
    dead_letters: str


def replay(
    settings: Settings,
    topic: str,
    start: Bound,
    end: Bound,
    sink: SinkTarget,
    pipeline: Pipeline | None = None,
    idle_timeout_s: float = 30.0,
    progress: TextIO | None = None,
    quiet: bool = False,
) -> ReplayResult:
    """Label ``topic[start:end)`` with ``pipeline`` (default: built from ``settings``) and
    publish to ``sink``; returns when the range is done."""
    if sink.kind == "topic" and topic in (sink.name, sink.dlq):
        raise ConfigError(f"a replay of {topic!r} cannot write into {topic!r}")
    s = settings.model_copy(
        update={
            "input_topic": topic,
            "output_topic": sink.name,
            "dlq_topic": sink.dlq,
            "review_topic": None,
            "route_labels": False,
            "reload_interval_s": 0.0,
        }
    )
    source = ReplaySource(s.kafka_common(), topic, start, end, idle_timeout_s)
    try:
        out: Sink
        if sink.kind == "topic":
            ensure_topics(s.kafka_common(), {sink.name: len(source.ranges), sink.dlq: 1})
            out = KafkaSink(s.kafka_common())
        else:
            out = JsonlSink(paths={sink.name: Path(sink.name), sink.dlq: Path(sink.dlq)})
        pipe = pipeline if pipeline is not None else build_pipeline(s)
    except BaseException:
        source.close()
        raise
    worker = Worker(s, source, out, pipe)
    report = None
    if not quiet:
        report = Progress(
            lambda: worker.stats.completed + source.skipped_out_of_window, source.total, progress
        )
        worker.on_batch = report
    t0 = time.monotonic()
    stats = worker.run()  # the source is bounded: returns at the end of the range
    if report is not None:
        report(final=True)
    return ReplayResult(
        stats=stats,
        total=source.total,
        consumed=source.consumed,
        complete=source.complete,
        skipped_out_of_window=source.skipped_out_of_window,
        seconds=time.monotonic() - t0,
        output=sink.name,
        dead_letters=sink.dlq,
    )
