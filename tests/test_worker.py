"""The worker with in-memory and JSONL sources/sinks (no broker): routing and accounting."""

from __future__ import annotations

from pathlib import Path

import orjson

from stream.demo import BAD_RECORDS, sample_events
from stream.models.bundle import Bundle
from stream.pipeline import Pipeline
from stream.schemas import DeadLetter, LabeledEvent
from stream.settings import Settings
from stream.sinks import JsonlSink, MemorySink
from stream.sources import JsonlSource, MemorySource
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

    def commit(self) -> None:
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
