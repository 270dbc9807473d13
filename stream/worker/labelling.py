"""Labelling a micro-batch, telling a bad event from a broken model.

A batch that fails is labelled again one event at a time. Events that fail alone are bad
events (dead letters) only while the model labels others. When the built-in texts
(:data:`stream.pipeline.CANARY_TEXTS`) fail too, the fault is the system's and the events are
held (:class:`~stream.worker.guard.Guard`); when most fail alone but the built-in texts pass,
they are held for :data:`HOLD_ATTEMPTS` attempts (a transient fault, such as memory) before
they are taken for bad events, so a flood of poison events cannot hold the stream for ever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from stream.headers import Headers
from stream.pipeline import BatchResult, Pipeline
from stream.schemas import InputEvent, Origin
from stream.worker.guard import Guard

__all__ = ["HOLD_ATTEMPTS", "Labeller", "Outcome", "Queued"]

log = logging.getLogger(__name__)

#: attempts (about a minute of backoff) before events that most fail while the built-in texts
#: pass are taken for bad events
HOLD_ATTEMPTS = 6


@dataclass(frozen=True)
class Queued:
    event: InputEvent
    origin: Origin
    received: float
    raw: bytes | None  # the record as read: what a dead letter of this event carries
    key: bytes | None = None
    headers: Headers = ()


@dataclass
class Outcome:
    """What became of a batch: labelled parts (in input order), bad events; the rest is held
    by :attr:`Labeller.guard`."""

    labelled: list[tuple[list[Queued], BatchResult]] = field(default_factory=list)
    bad: list[tuple[Queued, Exception]] = field(default_factory=list)


class Labeller:
    """Labels batches with ``pipeline`` (swapped by hot reload between batches)."""

    def __init__(
        self,
        pipeline: Pipeline,
        clock: Callable[[], float],
        progress: Callable[[], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.clock = clock
        self.progress = progress  # called during long image work: keeps liveness fresh
        self.guard: Guard[Queued] = Guard()

    def label(self, batch: list[Queued]) -> Outcome:
        try:
            result = self._run(batch)
        except Exception:
            log.exception("labelling failed for a batch of %d; retrying one by one", len(batch))
            return self._one_by_one(batch)
        self.guard.ok()
        return Outcome([(batch, result)])

    def due(self) -> list[Queued]:
        """While labelling is failing and the backoff delay is over: the held events to try
        again (with none held, the built-in texts are tried here)."""
        if not self.guard.due(self.clock()):
            return []
        held = self.guard.take()
        if held:
            log.info("retrying %d held events", len(held))
        elif self._canary_passes():
            self.guard.ok()
        else:
            self.guard.fail(self.guard.reason or "built-in texts fail", self.clock())
        return held

    def _run(self, batch: list[Queued]) -> BatchResult:
        return self.pipeline.label_batch(
            [q.event for q in batch],
            [q.origin for q in batch],
            [q.received for q in batch],
            progress=self.progress,
        )

    def _one_by_one(self, batch: list[Queued]) -> Outcome:
        outcome = Outcome()
        for q in batch:
            try:
                outcome.labelled.append(([q], self._run([q])))
            except Exception as exc:
                outcome.bad.append((q, exc))
        failed = outcome.bad
        if not failed:
            self.guard.ok()
            return outcome
        most = len(batch) > 1 and 2 * len(failed) > len(batch)
        if not self._canary_passes() or (most and self.guard.attempts < HOLD_ATTEMPTS):
            reason = f"{type(failed[-1][1]).__name__}: {failed[-1][1]}"[:300]
            log.error(
                "labelling fails for %d of %d events alone: holding them (%s)",
                len(failed),
                len(batch),
                reason,
            )
            self.guard.fail(reason, self.clock(), [q for q, _ in failed])
            outcome.bad = []
            return outcome
        self.guard.ok()
        return outcome

    def _canary_passes(self) -> bool:
        try:
            self.pipeline.canary()
        except Exception as exc:
            log.error("the bundle fails its built-in texts too: %s", exc)
            return False
        return True
