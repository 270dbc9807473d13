"""A model-based test of the worker's delivery promise (hypothesis ``RuleBasedStateMachine``).

An adversarial in-memory source and sink stand in for the brokers (the worker, its delivery
core and the labelling pipeline are the real ones): delivery reports come reordered, late or
never; outputs are refused; the producer queue fills; the sink cannot take outputs for a
while; the producer is renewed (its pending reports answered, some as delivered, some as
failed); partitions are revoked and re-assigned at any step; the worker crashes at any step
and a new one resumes from the committed offsets.

After every step: per partition, no committed offset passes an input whose outputs are not
all durable; the in-flight caps hold, by count and by bytes. After a final drain: every input
id is in the output topic or the dead-letter topic.
"""

from __future__ import annotations

import itertools

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from stream.models.bundle import Bundle
from stream.pipeline import Pipeline
from stream.schemas import Origin
from stream.settings import Settings
from stream.sinks.base import DeliveryCallback, Sink, SinkFull, SinkRejected, SinkUnavailable
from stream.sinks.kafka import KafkaDeliveryError
from stream.sources.base import Record, Source
from stream.worker import Worker

from .conftest import BUNDLE

PARTITIONS = 2
PER_PARTITION = 14
STEPS = 40
EXAMPLES = 30

_WORDS = ["flood", "bridge", "shelter", "water", "rescue", "lol", "movie", "power", "road"]


def _value(p: int, i: int) -> bytes:
    if i % 9 == 4:  # not an event: its text is not a string
        return orjson.dumps({"id": f"bad-{p * 100 + i}", "text": ["not", "a", "string"]})
    text = " ".join(_WORDS[(i * 3 + k + p) % len(_WORDS)] for k in range(3 + i % 5))
    meta = {"pad": "x" * (2000 if i % 5 == 0 else 10)}  # some large events, for the byte cap
    return orjson.dumps({"id": f"p{p}-{i}", "text": text, "meta": meta})


def _id(p: int, i: int) -> str:
    return f"bad-{p * 100 + i}" if i % 9 == 4 else f"p{p}-{i}"


class PartitionedSource(Source):
    """Partitions read from the last commit on (re)assignment; ``store`` commits at once, the
    strictest reading of the promise."""

    def __init__(self, values: dict[int, list[bytes]]) -> None:
        self.values = values
        self.committed = dict.fromkeys(values, 0)
        self.position = dict.fromkeys(values, 0)
        self.paused = False

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        if self.paused:
            return []
        out: list[Record] = []
        for p in sorted(self.values):
            while len(out) < max_records and self.position[p] < len(self.values[p]):
                i = self.position[p]
                out.append(
                    Record(self.values[p][i], None, Origin(topic="in", partition=p, offset=i))
                )
                self.position[p] += 1
        return out

    def store(self, offsets: dict[tuple[str, int], int]) -> None:
        for (_topic, p), offset in offsets.items():
            assert offset >= self.committed[p], "a commit went backwards"
            self.committed[p] = offset

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def rebalance(self, p: int) -> None:
        if self.on_revoke is not None:
            self.on_revoke([("in", p)])
        self.position[p] = self.committed[p]

    def restart(self) -> None:
        self.position = dict(self.committed)
        self.paused = False


class AdversarialSink(Sink):
    """Delivery reports only when the test says so; a queue that fills; refusals."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, bytes | None, bytes, DeliveryCallback]] = []
        self.durable: list[tuple[str, bytes]] = []
        self.capacity = 10_000
        self.queue = 10_000
        self.unavailable = False
        self.refuse = 0  # refuse the next n outputs synchronously

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        on_delivery: DeliveryCallback,
        headers: object = None,
    ) -> None:
        if self.unavailable:
            raise SinkUnavailable("topic unavailable")
        if self.refuse:
            self.refuse -= 1
            raise SinkRejected("message too large")
        if len(self.pending) >= self.queue:
            raise SinkFull("queue full")
        self.pending.append((topic, key, value, on_delivery))

    def poll(self, timeout_s: float = 0.0) -> None:
        if len(self.pending) >= self.queue:  # the broker makes progress while the queue is full
            self.answer(0, "ack")

    def answer(self, index: int, how: str) -> None:
        topic, _key, value, callback = self.pending.pop(index % len(self.pending))
        if how in ("ack", "dup"):
            self.durable.append((topic, value))
        if how == "ack":
            callback(None)
        elif how == "reject":
            callback(SinkRejected("record too large"))
        else:  # "fail", or "dup": durable, yet reported as failed (a duplicate follows)
            callback(KafkaDeliveryError("timed out"))


class WorkerModel(RuleBasedStateMachine):
    bundle: Bundle

    @initialize(commit_every_batch=st.booleans())
    def start(self, commit_every_batch: bool = False) -> None:
        self.values = {p: [_value(p, i) for i in range(PER_PARTITION)] for p in range(PARTITIONS)}
        self.source = PartitionedSource(self.values)
        self.sink = AdversarialSink()
        self.now = itertools.count(step=0.4)
        self.settings = Settings(
            bundle=BUNDLE,
            batch_max_events=4,
            batch_max_wait_ms=500,
            poll_max_records=3,
            max_in_flight=12,
            max_in_flight_bytes=20_000,
            review_threshold=0.9,
            commit_every_batch=commit_every_batch,
            commit_wait_s=0.02,  # real seconds: withheld reports must not slow the test down
        )
        self.pipeline = Pipeline(self.bundle, top_k=1, review_threshold=0.9)
        self.worker = self._new_worker()

    def _new_worker(self) -> Worker:
        return Worker(
            self.settings,
            self.source,
            self.sink,
            self.pipeline,
            clock=lambda: float(next(self.now)),
        )

    @rule(n=st.integers(1, 3))
    def step(self, n: int) -> None:
        for _ in range(n):
            self.worker.step()

    @rule(
        i=st.integers(0, 10_000),
        how=st.sampled_from(["ack", "ack", "ack", "fail", "reject", "dup"]),
    )
    def report(self, i: int, how: str) -> None:
        if self.sink.pending:
            self.sink.answer(i, how)

    @rule()
    def report_all(self) -> None:
        while self.sink.pending:
            self.sink.answer(len(self.sink.pending) - 1, "ack")  # newest first: reordered

    @rule(down=st.booleans())
    def sink_unavailable(self, down: bool) -> None:
        self.sink.unavailable = down

    @rule(n=st.integers(1, 3))
    def refuse_next(self, n: int) -> None:
        self.sink.refuse = n

    @rule(queue=st.sampled_from([2, 5, 10_000]))
    def queue_size(self, queue: int) -> None:
        self.sink.queue = queue

    @rule(delivered=st.lists(st.booleans(), max_size=30))
    def renew_producer(self, delivered: list[bool]) -> None:
        """A fatal producer is replaced: each output it held is reported, delivered or not."""
        for ok in itertools.chain(delivered, itertools.repeat(False)):
            if not self.sink.pending:
                break
            self.sink.answer(0, "ack" if ok else "fail")

    @rule(p=st.integers(0, PARTITIONS - 1))
    def rebalance(self, p: int) -> None:
        self.source.rebalance(p)

    @rule(durable=st.lists(st.booleans(), max_size=30))
    def crash(self, durable: list[bool]) -> None:
        """kill -9: what the producer held reached the broker or not; nothing is reported."""
        for ok, (topic, _key, value, _cb) in zip(
            itertools.chain(durable, itertools.repeat(False)), self.sink.pending, strict=False
        ):
            if ok:
                self.sink.durable.append((topic, value))
        self.sink.pending.clear()
        self.source.restart()
        self.worker = self._new_worker()

    # -- invariants -----------------------------------------------------------------------
    def _delivered_ids(self) -> tuple[set[str], set[str]]:
        out: set[str] = set()
        dead: set[str] = set()
        review_needed: set[str] = set()
        review: set[str] = set()
        for topic, value in self.sink.durable:
            doc = orjson.loads(value)
            if topic == self.settings.output_topic:
                out.add(doc["id"])
                if doc["needs_review"]:
                    review_needed.add(doc["id"])
            elif topic == self.settings.review_topic:
                review.add(doc["id"])
            elif topic == self.settings.dlq_topic:
                dead.add(doc["id"])
        # an input whose labelled output needs review is done only with its review copy
        return out - (review_needed - review), dead

    @invariant()
    def committed_inputs_are_durable(self) -> None:
        out, dead = self._delivered_ids()
        for p, upto in self.source.committed.items():
            for i in range(upto):
                assert _id(p, i) in out | dead, f"offset {i} of partition {p} committed early"

    @invariant()
    def caps_hold(self) -> None:
        w = self.worker
        assert w.tracker.in_flight_outputs <= w.max_in_flight
        one_poll = self.settings.poll_max_records * max(len(v) for v in self.values[0]) * 3
        assert w.tracker.in_flight_bytes <= self.settings.max_in_flight_bytes + one_poll

    def teardown(self) -> None:
        if not hasattr(self, "worker"):
            return
        self.sink.unavailable, self.sink.refuse, self.sink.queue = False, 0, 10_000
        total = PARTITIONS * PER_PARTITION
        for _ in range(3000):
            if sum(self.source.committed.values()) == total:
                break
            self.worker.step()
            while self.sink.pending:
                self.sink.answer(0, "ack")
        assert sum(self.source.committed.values()) == total, "the stream did not drain"
        out, dead = self._delivered_ids()
        every = {_id(p, i) for p in range(PARTITIONS) for i in range(PER_PARTITION)}
        assert every <= out | dead
        assert not {i for i in every if i.startswith("bad-")} - dead


def test_worker_delivery_model(bundle: Bundle) -> None:
    WorkerModel.bundle = bundle
    run_state_machine_as_test(
        WorkerModel,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
