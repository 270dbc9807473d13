"""The adaptation service: feedback in, event-adapted bundle versions out.

It consumes the feedback topic; an answer that cannot count (not JSON, not the contract, a task
or label the bundle lacks, a retraction of an unknown answer) goes to the dead-letter topic with
its reason. Good answers go to the journal (:mod:`stream.adapt.journal`); only then are their
offsets committed, so a crash loses no feedback. Every ``every`` new answers, or ``interval_s``
after the first answer not yet adapted to, it fits and gates the adapted heads
(:mod:`stream.adapt.adapter`) and, when a task's head changed, publishes a new bundle version
(:mod:`stream.adapt.versions`) that workers running on ``<out>/current`` hot-reload. One
service per output directory (the journal and the versions are its own).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from stream.adapt.adapter import Adapter, TaskAdaptation
from stream.adapt.answers import Answers, InvalidFeedback, parse_feedback
from stream.adapt.correction import DEFAULT_L2
from stream.adapt.journal import Journal
from stream.adapt.versions import BundleVersions
from stream.decode import dead_letter
from stream.errors import BrokerError, InvalidEvent
from stream.headers import dead_letter_headers, normalise
from stream.models.bundle import load_bundle
from stream.models.heads import save_head
from stream.schemas import FeedbackEvent, Origin
from stream.settings import Settings
from stream.sources.kafka import close_consumer

__all__ = ["AdaptService"]

log = logging.getLogger(__name__)


class AdaptService:
    """Adapt ``base``'s heads to the answers on ``settings.feedback_topic``, under ``out``."""

    def __init__(
        self,
        settings: Settings,
        base: Path,
        out: Path,
        every: int = 25,
        interval_s: float = 15.0,
        group: str = "crisis-adapt",
        instance_id: str | None = None,
        l2: float = DEFAULT_L2,
        max_drop: float = 0.02,
        min_answers: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.base = Path(base)
        self.versions = BundleVersions(Path(out))
        self.journal = Journal(Path(out) / "feedback.jsonl")
        self.every = every
        self.interval_s = interval_s
        self.group = group
        self.instance_id = instance_id or f"{group}-{socket.gethostname()}"
        self._clock = clock
        self.bundle = load_bundle(self.base, precision="int8")
        self.adapter = Adapter(self.bundle, l2, max_drop, min_answers)
        self.answers = Answers()
        self._new = 0
        self._first_new_at: float | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._refused: list[str] = []  # dead letters the broker refused in this batch
        self._backoff_s = 0.0
        self.source = self.base  # the private copy versions link to, once started
        self.last: dict[str, Any] = {}

    # -- start -------------------------------------------------------------------------------

    def start(self) -> AdaptService:
        """Read the journal back, copy the base next to the versions, publish it as a version
        when there is none or the base bundle changed, restore the heads serving now, and join
        the consumer group."""
        self._read_journal()
        self.source = self.versions.seed(self.base)
        current = self.versions.current()
        if current is None or _base_sha(current) != self.bundle.sha256:
            number = self.versions.next_number()
            current = self.versions.publish(self.source, {}, self._lineage_edit({}, number, 0))
            log.info("serving the base bundle", extra={"version_dir": str(current)})
        else:
            self._restore_serving(current)
        adapted = self._adapted_count(current)
        if len(self.answers) > adapted:  # answers journaled, no version yet: adapt soon
            self._new = len(self.answers) - adapted
            self._first_new_at = self._clock() - self.interval_s
        conf = {
            **self.settings.kafka_common(),
            "group.id": self.group,
            # static membership: a restarted service gets its partitions back at once
            "group.instance.id": self.instance_id,
            "session.timeout.ms": self.settings.session_timeout_ms,
            "heartbeat.interval.ms": self.settings.heartbeat_interval_ms,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "log_level": 3,
        }
        self._consumer = Consumer(conf)
        self._consumer.subscribe([self.settings.feedback_topic])
        self._producer = Producer({**self.settings.kafka_common(), "log_level": 3})
        return self

    def _read_journal(self) -> None:
        """The journaled answers that still fit the bundle (a new base may have other labels:
        the others stay in the journal, counted and logged, not used)."""
        unfit = 0
        for answer in self.journal.read():
            labels = self.bundle.labels.get(answer.task)
            if labels is None or (answer.label is not None and answer.label not in labels):
                unfit += 1
                continue
            try:
                self.answers.add(answer)
            except InvalidFeedback:
                unfit += 1
        if unfit:
            log.warning("journaled answers that do not fit this bundle", extra={"count": unfit})

    def _restore_serving(self, current: Path) -> None:
        manifest = orjson.loads((current / "manifest.json").read_bytes())
        for head in manifest["heads"]:
            if head.get("adapted") and head["task"] in self.adapter.serving:
                with np.load(current / head["file"]) as data:
                    self.adapter.serving[head["task"]] = (data["W"], data["b"])

    @staticmethod
    def _adapted_count(current: Path) -> int:
        manifest = orjson.loads((current / "manifest.json").read_bytes())
        return int(manifest.get("adaptation", {}).get("answers_received", 0))

    # -- loop --------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Poll, journal, commit and adapt until ``stop`` is set."""
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.close()

    def step(self, timeout_s: float = 0.5) -> Path | None:
        """One poll; returns the directory of a version published in this step, if any."""
        assert self._consumer is not None, "start() first"
        records = self._consumer.consume(num_messages=500, timeout=timeout_s)
        if records:
            self._take(records)
        if self._due():
            return self.adapt_now()
        return None

    def _take(self, records: list[Message]) -> None:
        assert self._consumer is not None and self._producer is not None
        fresh: list[FeedbackEvent] = []
        self._refused.clear()
        for msg in records:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise BrokerError(f"feedback consumer: {err}")
                log.warning("feedback consumer: %s", err)
                continue
            try:
                answer = parse_feedback(msg.value(), self.bundle.labels)
                if self.answers.add(answer):
                    fresh.append(answer)
            except InvalidFeedback as exc:
                self._dead_letter(msg, exc)
        self.journal.append(fresh)
        self._producer.flush(30)
        offsets = _next_offsets(records)
        if self._refused or len(self._producer):
            self._rewind(records, f"dead letters not delivered: {self._refused[:1]}")
            return
        self._backoff_s = 0.0
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        if fresh:
            self._new += len(fresh)
            if self._first_new_at is None:
                self._first_new_at = self._clock()

    def _rewind(self, records: list[Message], reason: str) -> None:
        """A fault of the system (the dead-letter topic refuses): nothing is committed, the
        batch is read again after a doubling delay; its good answers are journaled already and
        recognised by their ids."""
        assert self._consumer is not None
        first: dict[tuple[str, int], int] = {}
        for msg in records:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if msg.error() is None and topic and partition is not None and offset is not None:
                first[(topic, partition)] = min(first.get((topic, partition), offset), offset)
        for (topic, partition), offset in first.items():
            self._consumer.seek(TopicPartition(topic, partition, offset))
        self._backoff_s = min(max(self._backoff_s * 2, 0.5), 30.0)
        log.error("feedback batch held: %s; again in %.1f s", reason, self._backoff_s)
        time.sleep(self._backoff_s)

    def _dead_letter(self, msg: Message, exc: InvalidFeedback) -> None:
        assert self._producer is not None
        origin = Origin(
            topic=str(msg.topic()), partition=msg.partition() or 0, offset=msg.offset() or 0
        )
        letter = dead_letter(msg.value(), InvalidEvent(exc.kind, exc.message), origin)
        headers = dead_letter_headers(normalise(msg.headers()), exc.kind, exc.message, origin)
        try:
            self._producer.produce(
                self.settings.dlq_topic,
                key=msg.key(),
                value=letter.model_dump_json().encode(),
                headers=list(headers),
                on_delivery=self._delivered,
            )
        except (KafkaException, BufferError) as err:  # e.g. a topic librdkafka knows is missing
            self._refused.append(str(err))
        log.warning("feedback dead-lettered", extra={"kind": exc.kind, "reason": exc.message})

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._refused.append(str(err))

    def _due(self) -> bool:
        if self._new <= 0 or self._first_new_at is None:
            return False
        return self._new >= self.every or self._clock() - self._first_new_at >= self.interval_s

    # -- adapt -------------------------------------------------------------------------------

    def adapt_now(self) -> Path | None:
        """Fit and gate every task now; publish a version when a head changed."""
        t0 = time.perf_counter()
        results = self.adapter.adapt(self.answers)
        self._new, self._first_new_at = 0, None
        accepted = [r for r in results if r.accepted]
        published = None
        if accepted:
            published = self._publish(results)
        self.last = {
            "at": datetime.now(UTC).isoformat(),
            "answers_received": len(self.answers),
            "tasks": {r.task: r.summary() for r in results},
            "version_dir": str(published) if published else None,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        log.info("adaptation round", extra={"adaptation": self.last})
        return published

    def _publish(self, results: list[TaskAdaptation]) -> Path:
        heads = {h.task: h for h in self.bundle.heads}
        files: dict[str, Callable[[Path], None]] = {}
        manifest = self.bundle.manifest
        for spec in manifest.heads:
            w, b = self.adapter.serving.get(spec.task, (None, None))
            head = heads.get(spec.task)
            if w is None or b is None or head is None or w is head.weight:
                continue  # never adapted: the base file stays linked

            def write(path: Path, w: Any = w, b: Any = b, lexical: Any = head.lexical) -> None:
                save_head(path, w, b, lexical)

            files[spec.file] = write
        journal = self.journal.path

        def copy_journal(path: Path) -> None:
            path.write_bytes(journal.read_bytes() if journal.is_file() else b"")

        files["feedback.jsonl"] = copy_journal
        number = self.versions.next_number()
        summary = {r.task: r.summary() for r in results}
        return self.versions.publish(
            self.source, files, self._lineage_edit(summary, number, len(self.answers))
        )

    def _lineage_edit(
        self, summary: dict[str, Any], number: int, received: int
    ) -> Callable[[dict[str, Any]], None]:
        base = self.bundle.info
        previous = self.versions.current()
        adapted = {t for t, (w, _) in self.adapter.serving.items() if w is not self._base_w(t)}

        def edit(manifest: dict[str, Any]) -> None:
            if adapted:
                manifest["version"] = f"{base['version']}+adapt.{number}"
            manifest["adaptation"] = {
                "base": {k: base[k] for k in ("bundle", "version", "sha256")},
                "parent": previous.name if previous else None,
                "number": number,
                "answers_received": received,
                "tasks": summary,
                "l2": self.adapter.l2,
                "max_drop": self.adapter.max_drop,
                "at": datetime.now(UTC).isoformat(),
                "journal": "feedback.jsonl" if adapted else None,
            }
            for head in manifest["heads"]:
                if head["task"] in adapted:
                    head["adapted"] = True
                    head["metrics"] = {"note": "adapted to analysts' answers; see adaptation"}

        return edit

    def _base_w(self, task: str) -> np.ndarray | None:
        return next((h.weight for h in self.bundle.heads if h.task == task), None)

    def close(self, timeout_s: float = 10.0) -> None:
        """Leave the group and flush dead letters, giving up after ``timeout_s`` each: a
        broker that never answers the leave must not hold a SIGTERM for ever (the offsets of
        journaled answers are committed already; nothing is lost by not waiting)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            closing = threading.Thread(
                target=close_consumer, args=(consumer,), daemon=True, name="adapt-close"
            )
            closing.start()
            closing.join(timeout_s)
            if closing.is_alive():
                log.warning("the feedback consumer did not close in %.0f s", timeout_s)
        if self._producer is not None:
            self._producer.flush(timeout_s)
            self._producer = None


def _base_sha(version: Path) -> str | None:
    """The sha256 of the base bundle ``version`` was made from."""
    manifest = orjson.loads((version / "manifest.json").read_bytes())
    base = manifest.get("adaptation", {}).get("base", {})
    return base.get("sha256") if isinstance(base, dict) else None


def _next_offsets(records: list[Message]) -> list[TopicPartition]:
    """The offset after the last record of each partition in ``records``."""
    last: dict[tuple[str, int], int] = {}
    for msg in records:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if (
            msg.error() is None
            and topic is not None
            and partition is not None
            and offset is not None
        ):
            key = (topic, partition)
            last[key] = max(last.get(key, -1), offset)
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
