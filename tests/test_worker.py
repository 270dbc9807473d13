"""The worker with in-memory and JSONL sources/sinks (no broker): routing and accounting."""

from __future__ import annotations

from pathlib import Path

import orjson

from stream.local.demo import BAD_RECORDS, sample_events
from stream.models.bundle import Bundle
from stream.pipeline import Pipeline
from stream.schemas import DeadLetter, LabeledEvent
from stream.settings import Settings
from stream.sinks import JsonlSink, MemorySink
from stream.sources import JsonlSource, MemorySource
from stream.sources.base import Record
from stream.worker import Worker

from .conftest import BUNDLE


def _settings(**kw: object) -> Settings:
    return Settings(bundle=BUNDLE, **kw)  # type: ignore[arg-type]


def test_every_record_comes_out_once_labelled_or_dead(bundle: Bundle):
    good = sample_events()
    records = good[:10] + BAD_RECORDS + good[10:]
    source, sink = MemorySource(records, topic="in"), MemorySink()
    settings = _settings(review_threshold=0.99, batch_max_events=7)
    stats = Worker(settings, source, sink, Pipeline(bundle, review_threshold=0.99)).run()
    labeled = [LabeledEvent.model_validate_json(v) for v in sink.topic(settings.output_topic)]
    dead = [DeadLetter.model_validate_json(v) for v in sink.topic(settings.dlq_topic)]
    assert sorted(e.id for e in labeled) == sorted(orjson.loads(v)["id"] for v in good)
    assert {d.origin.offset for d in dead} == {10, 11, 12}
    assert {e.origin.offset for e in labeled} == set(range(len(records))) - {10, 11, 12}
    review = sink.topic(settings.review_topic or "")
    assert len(review) == stats.review == sum(e.needs_review for e in labeled)
    assert source.committed == {("in", 0): len(records)}
    assert max(stats.batch_sizes) <= 7
    for e in labeled:
        assert e.model.sha256 == bundle.sha256
        assert e.labels["informative"].label in {"informative", "not_informative"}


def test_route_labels_publishes_per_label_topics(bundle: Bundle):
    sink = MemorySink()
    settings = _settings(route_labels=True, review_topic=None)
    Worker(settings, MemorySource(sample_events()), sink, Pipeline(bundle)).run()
    topics = {t for t, _, _ in sink.messages}
    assert topics <= {
        settings.output_topic,
        f"{settings.output_topic}.informative.informative",
        f"{settings.output_topic}.informative.not_informative",
    }
    routed = [t for t, _, _ in sink.messages if t.count(".") > settings.output_topic.count(".")]
    assert len(routed) == len(sample_events())


def test_jsonl_file_source_and_sink(bundle: Bundle, tmp_path: Path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join([*sample_events(), b"{broken"]) + b"\n")
    settings = _settings()
    Worker(settings, JsonlSource(src), JsonlSink(tmp_path / "out"), Pipeline(bundle)).run()
    out = (tmp_path / "out" / f"{settings.output_topic}.jsonl").read_bytes().splitlines()
    dlq = (tmp_path / "out" / f"{settings.dlq_topic}.jsonl").read_bytes().splitlines()
    assert len(out) == len(sample_events()) and len(dlq) == 1


class _CommitLog(MemorySource):
    """Records what was stored at every synchronous commit."""

    def __init__(self, values: list[bytes]) -> None:
        super().__init__(values, topic="in")
        self.commits: list[int] = []

    def commit(self, wait: bool = True) -> None:
        self.commits.append(self.committed.get(("in", 0), 0))


def test_commit_every_batch_commits_each_delivered_batch(bundle: Bundle):
    """Per-batch mode: each batch's offsets are committed once its outputs are acked, so a
    crash re-labels at most the batch in progress; interval mode leaves it to librdkafka."""
    events = sample_events()[:20]
    per_batch = _CommitLog(events)
    Worker(_settings(batch_max_events=7), per_batch, MemorySink(), Pipeline(bundle)).run()
    assert per_batch.commits[:2] == [7, 14] and per_batch.commits[-1] == 20
    interval = _CommitLog(events)
    settings = _settings(batch_max_events=7, commit_every_batch=False)
    Worker(settings, interval, MemorySink(), Pipeline(bundle)).run()
    assert interval.commits == [20]  # only the synchronous commit at shutdown


def test_bad_input_that_decodes_late_is_dead_lettered_not_a_crash(bundle: Bundle):
    """Records that used to crash the worker after decoding (and again after every restart, on
    the same offset): ``meta`` nested past what orjson/pydantic serialise, and a labelled
    output larger than a producer accepts. Both become dead letters; nothing else is lost."""
    deep = b'{"a":' * 300 + b'"x"' + b"}" * 300  # orjson itself refuses to write this
    huge_meta = {"blob": "y" * 1_000_000}
    records = [
        orjson.dumps({"id": "g1", "text": "bridge collapsed in the flood"}),
        b'{"id": "deep", "text": "flood", "meta": ' + deep + b"}",
        orjson.dumps({"id": "huge", "text": "flood", "meta": huge_meta}),
        orjson.dumps({"id": "g2", "text": "volunteers bring water"}),
    ]
    source, sink = MemorySource(records, topic="in"), MemorySink()
    settings = _settings(review_topic=None)
    stats = Worker(settings, source, sink, Pipeline(bundle)).run()
    dead = {d.id: d for d in map(DeadLetter.model_validate_json, sink.topic(settings.dlq_topic))}
    assert dead["deep"].error.kind == "schema" and "nested deeper" in dead["deep"].error.message
    assert (
        dead["huge"].error.kind == "too_large" and "labelled output" in dead["huge"].error.message
    )
    assert dead["huge"].raw_truncated and dead["huge"].raw_bytes == len(records[2])
    labeled = [orjson.loads(v)["id"] for v in sink.topic(settings.output_topic)]
    assert labeled == ["g1", "g2"] and stats.dead_letters == 2
    assert source.committed == {("in", 0): 4}


def test_batch_sizes_stay_bounded(bundle: Bundle):
    worker = Worker(_settings(), MemorySource([]), MemorySink(), Pipeline(bundle))
    assert worker.stats.batch_sizes.maxlen == 1000


class _HeldSink(MemorySink):
    """An output broker that answers only when told: outputs stay in flight across a revoke."""

    def poll(self, timeout_s: float = 0.0) -> None:
        pass

    def flush(self, timeout_s: float = 30.0) -> int:
        return len(self._pending)

    def answer(self, i: int, err: Exception | None = None) -> None:
        self._pending[i](err)


class _ReassignedSource(MemorySource):
    """Revokes partition 0 on the next poll and hands it straight back (an eager rebalance):
    reading restarts at the committed offset, as a consumer group does."""

    rebalance = False

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        if self.rebalance:
            self.rebalance = False
            assert self.on_revoke is not None
            self.on_revoke([("in", 0)])
            self._pos = self.committed.get(("in", 0), 0)
        return super().poll(max_records, timeout_s)


def test_late_reports_from_before_a_rebalance_do_not_commit_the_re_read(bundle: Bundle):
    """Outputs of offset 0 still in flight when its partition is revoked; it comes back, offset
    0 is read and published again, then the old reports arrive (old labelled output failed, old
    review copy acked). The offset must wait for the new outputs, and the old failure must not
    be re-sent by this worker (the record was never committed: it is re-read anyway)."""
    source = _ReassignedSource([orjson.dumps({"id": "e0", "text": "bridge collapsed"})], "in")
    sink = _HeldSink()
    settings = _settings(batch_max_events=1, commit_every_batch=False, review_threshold=0.99)
    worker = Worker(settings, source, sink, Pipeline(bundle, review_threshold=0.99))
    worker.step()  # labelled #0 and review #1 in flight
    source.rebalance = True
    worker.step()  # revoked (flush times out), handed back, re-read: labelled #2, review #3
    assert [t for t, _, _ in sink.messages] == [settings.output_topic, settings.review_topic] * 2
    sink.answer(0, RuntimeError("old labelled output: timed out"))
    sink.answer(1)
    sink.answer(3)
    worker._store()
    assert source.committed == {} and not worker.delivery.retry
    assert worker.tracker.in_flight_outputs == 1  # the new labelled output, #2
    sink.answer(2)
    worker._store()
    assert source.committed == {("in", 0): 1} and worker.tracker.in_flight_outputs == 0


def test_review_threshold_zero_is_honoured(bundle: Bundle, monkeypatch):
    """CRISIS_REVIEW_THRESHOLD=0 means: never send an event to review (not: the bundle's)."""
    monkeypatch.setenv("CRISIS_REVIEW_THRESHOLD", "0")
    settings = _settings()
    assert settings.review_threshold == 0.0
    source, sink = MemorySource(sample_events()[:12], topic="in"), MemorySink()
    pipeline = Pipeline(bundle, review_threshold=settings.review_threshold)
    stats = Worker(settings, source, sink, pipeline).run()
    labeled = [LabeledEvent.model_validate_json(v) for v in sink.topic(settings.output_topic)]
    assert len(labeled) == 12 and stats.review == 0
    assert not any(e.needs_review for e in labeled if e.text.strip())


def test_batch_timings_feed_the_encoder_histograms(bundle: Bundle):
    source, sink = MemorySource(sample_events()[:5], topic="in"), MemorySink()
    worker = Worker(_settings(), source, sink, Pipeline(bundle))
    worker.run()
    text = worker.metrics.registry.get_sample_value(
        "crisis_encoder_seconds_count", {"modality": "text"}
    )
    assert text is not None and text >= 1


def _stats(lags: dict[int, int]) -> str:
    parts = {str(p): {"consumer_lag": lag} for p, lag in lags.items()}
    parts["-1"] = {"consumer_lag": -1}
    return orjson.dumps({"topics": {"in": {"partitions": parts}}}).decode()


def test_lag_of_revoked_partitions_is_removed(bundle: Bundle):
    """Summed lag used to double-count: a revoked partition kept its last lag for ever."""
    from stream.ops.prometheus import WorkerMetrics

    metrics = WorkerMetrics()
    source = _ReassignedSource([orjson.dumps({"id": "e0", "text": "bridge collapsed"})], "in")
    worker = Worker(_settings(), source, MemorySink(), Pipeline(bundle), metrics=metrics)
    metrics.on_kafka_stats(_stats({0: 7, 1: 5}))
    text = metrics.render().decode()
    assert 'partition="0"' in text and 'partition="1"' in text
    source.rebalance = True
    worker.step()  # partition 0 revoked (and handed back: its lag comes with the next stats)
    lags = [
        ln for ln in metrics.render().decode().splitlines() if ln.startswith("crisis_consumer_lag{")
    ]
    assert not any('partition="0"' in ln for ln in lags)
    assert any('partition="1"' in ln for ln in lags)
