"""Faults of the system (a bundle that cannot label, a missing topic, a refusing dead-letter
topic, a producer that never reports) pause the stream and report not-ready; they never crash
the worker and never turn good events into dead letters."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from stream.errors import BundleError
from stream.local.demo import sample_events
from stream.models.bundle import Bundle
from stream.models.manifest import sha256_file
from stream.ops.admin import ensure_topics
from stream.ops.reload import BundleReloader
from stream.pipeline import Pipeline
from stream.runtime import build_pipeline, make_sink, make_source
from stream.schemas import DeadLetter
from stream.settings import Settings
from stream.sinks import KafkaSink, MemorySink
from stream.sources import MemorySource
from stream.worker import Worker

from .conftest import BUNDLE, BrokerHandle
from .kafka_utils import TopicReader, make_events, read_all, seed


def _settings(**kw: object) -> Settings:
    return Settings(**{"bundle": BUNDLE, **kw})  # type: ignore[arg-type]


def _misfit_head(src: Path, dst: Path) -> Path:
    """A copy of ``src`` whose informative head takes 768 inputs (the encoder gives 384),
    with the manifest re-hashed: every hash verifies, yet no event can be labelled."""
    shutil.copytree(src, dst)
    path = dst / "head_informative.npz"
    arrays = dict(np.load(path))
    arrays["W"] = np.concatenate([arrays["W"], arrays["W"]], axis=1)
    np.savez(path, **arrays)
    manifest = orjson.loads((dst / "manifest.json").read_bytes())
    manifest["files"]["head_informative.npz"] = sha256_file(path)
    (dst / "manifest.json").write_bytes(orjson.dumps(manifest))
    return dst


def test_a_bundle_that_cannot_label_is_refused_before_it_serves(tmp_path: Path):
    bad = _misfit_head(BUNDLE, tmp_path / "bad")
    with pytest.raises(BundleError, match="built-in texts"):
        build_pipeline(_settings(bundle=bad))


def test_a_labelling_fault_holds_events_instead_of_dead_lettering_them(bundle: Bundle):
    """Every event fails while the head does not fit: none becomes a dead letter, nothing is
    committed, the worker reports not-ready; once the model works again all are labelled."""
    pipeline = Pipeline(bundle)
    head = pipeline.bundle.heads[0]
    good_w = head.weight
    head.weight = np.concatenate([good_w, good_w], axis=1)  # the fault, in the live pipeline
    events = sample_events()[:24]
    source, sink = MemorySource(events, topic="in"), MemorySink()
    worker = Worker(_settings(batch_max_events=8), source, sink, pipeline)
    try:
        for _ in range(5):
            worker.step()
        assert not sink.messages, "no output, and above all no dead letter, while it fails"
        assert source.committed == {}
        why = worker._fault() or ""
        assert "labelling fails" in why and worker.labelling.held
        head.weight = good_w  # fixed (in production: a reloaded bundle)
        worker.labelling._next = 0.0  # do not wait the backoff out
        deadline = time.monotonic() + 60
        while source.committed.get(("in", 0)) != len(events) and time.monotonic() < deadline:
            worker.step()
    finally:
        head.weight = good_w  # the bundle is shared by the session's tests
        worker.shutdown()
    labelled = sink.topic(worker.settings.output_topic)
    assert len(labelled) == len(events) and not sink.topic(worker.settings.dlq_topic)
    assert worker._fault() is None


def test_one_poison_event_among_good_ones_is_still_a_dead_letter(
    bundle: Bundle, caplog: pytest.LogCaptureFixture
):
    """The guard must not hold the stream for a single bad event: the built-in texts pass.
    Its log line carries the record's topic, partition, offset and event id."""

    class Poisoned(Pipeline):
        def label_batch(self, events, origins, received=None, progress=None):  # type: ignore[no-untyped-def]
            if any(e.id == "poison" for e in events):
                raise ValueError("this event breaks the model")
            return super().label_batch(events, origins, received, progress)

    values = [*sample_events()[:5], orjson.dumps({"id": "poison", "text": "x"})]
    source, sink = MemorySource(values, topic="in"), MemorySink()
    stats = Worker(_settings(batch_max_events=8), source, sink, Poisoned(bundle)).run()
    dead = [DeadLetter.model_validate_json(v) for v in sink.topic("crisis.events.dlq")]
    assert [d.id for d in dead] == ["poison"] and dead[0].error.kind == "processing_error"
    assert stats.labeled == 5 and source.committed == {("in", 0): 6}
    failed = [r for r in caplog.records if r.getMessage().startswith("labelling failed for event")]
    assert [(r.topic, r.offset, r.event_id) for r in failed] == [("in", 5, "poison")]  # type: ignore[attr-defined]


@pytest.mark.kafka
def test_missing_output_topic_pauses_and_reports_instead_of_crashing(noida: BrokerHandle):
    """Auto-creation off (as in the compose file) and no review topic: the worker used to die
    at the first produce, and again after each restart."""
    settings = noida.settings(
        batch_max_events=8, kafka={"allow.auto.create.topics": "false"}, commit_every_batch=True
    )
    ensure_topics(
        settings.kafka_common(), {settings.input_topic: 1, settings.output_topic: 1, "x.dlq": 1}
    )
    settings = settings.model_copy(update={"dlq_topic": "x.dlq"})
    seed(noida.bootstrap, settings.input_topic, make_events(20))
    worker = Worker(
        settings,
        make_source("kafka", settings),
        make_sink("kafka", settings),
        Pipeline(load_bundle_once()),
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not worker.topics.active:
            worker.step()
        ready, why = worker.readiness()
        assert not ready and settings.review_topic in why, why
        for _ in range(20):
            worker.step()
        assert worker.stats.received == 0, "input stays paused while a topic is missing"
        ensure_topics(settings.kafka_common(), {settings.review_topic or "": 1})
        worker.topics._next = 0.0
        deadline = time.monotonic() + 60
        while worker.stats.completed < 20 and time.monotonic() < deadline:
            worker.step()
        assert worker.readiness()[0]
    finally:
        worker.shutdown()
    ids = {o["id"] for o in read_all(noida.bootstrap, settings.output_topic, 20)}
    assert len(ids) == 20


_BUNDLE_CACHE: list[Bundle] = []


def load_bundle_once() -> Bundle:
    from stream.models.bundle import load_bundle

    if not _BUNDLE_CACHE:
        _BUNDLE_CACHE.append(load_bundle(BUNDLE))
    return _BUNDLE_CACHE[0]


@pytest.mark.kafka
def test_kafka_sink_reports_a_missing_topic_as_unavailable_not_a_crash(noida: BrokerHandle):
    from stream.sinks import SinkUnavailable

    sink = KafkaSink(
        {
            "bootstrap.servers": noida.bootstrap,
            "allow.auto.create.topics": False,
            "topic.metadata.propagation.max.ms": 1000,
        }
    )
    assert "no-such-topic" in sink.check_topics(["no-such-topic"])
    reports: list[Exception | None] = []
    sink.produce("no-such-topic", None, b"v", reports.append)
    deadline = time.monotonic() + 30
    while not reports and time.monotonic() < deadline:
        sink.poll(0.2)
    assert reports and reports[0] is not None  # a failed delivery, re-sent by the worker
    with pytest.raises(SinkUnavailable):  # librdkafka now knows: it refuses synchronously
        sink.produce("no-such-topic", None, b"v", reports.append)
    sink.flush(1)


@pytest.mark.kafka
def test_a_renewed_producer_fails_every_output_it_never_reported(noida: BrokerHandle):
    """Outputs the replaced producer never reports used to stay pending for ever."""
    sink = KafkaSink({"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 600_000})
    sink.renew_wait_s = 0.0  # the old producer gets no chance to report
    reports: list[Exception | None] = []
    for _ in range(5):
        sink.produce("t", None, b"v", reports.append)
    sink.renew("test")
    assert len(reports) == 5 and all(r is not None for r in reports)
    sink._producer = KafkaSink({"bootstrap.servers": noida.bootstrap})._producer
    sink.close()
    assert len(reports) == 5  # a late report of the old producer is not delivered twice


def test_output_larger_than_the_producer_queue_is_refused_not_retried_for_ever(tmp_path: Path):
    """librdkafka refuses (BufferError) an output bigger than its whole queue on every try:
    the worker hung on that record after every restart."""
    from stream.sinks import SinkRejected

    sink = KafkaSink({"bootstrap.servers": "127.0.0.1:1", "queue.buffering.max.kbytes": 64})
    with pytest.raises(SinkRejected):
        sink.produce("t", None, b"x" * 100_000, lambda _e: None)
    sink.produce("t", None, b"x" * 1000, lambda _e: None)  # a small one still fits


@pytest.mark.kafka
def test_a_dead_letter_too_large_for_its_topic_is_sent_without_its_copy(
    noida: BrokerHandle, bundle: Bundle
):
    """The dead-letter topic refusing a dead letter used to crash the worker."""
    settings = noida.settings(kafka={"message.max.bytes": "120000"}, max_record_bytes=1_000_000)
    ensure_topics(
        settings.kafka_common(), dict.fromkeys([settings.input_topic, *settings.output_topics()], 1)
    )
    big_bad = b"{" + b"x" * 100_000  # invalid JSON: a dead letter whose copy is ~133 kB
    seed(noida.bootstrap, settings.input_topic, [big_bad, *make_events(3)])
    worker = Worker(
        settings, make_source("kafka", settings), make_sink("kafka", settings), Pipeline(bundle)
    )
    try:
        deadline = time.monotonic() + 60
        while worker.stats.completed < 4 and time.monotonic() < deadline:
            worker.step()
    finally:
        worker.shutdown()
    dead = [DeadLetter.model_validate(d) for d in read_all(noida.bootstrap, settings.dlq_topic, 1)]
    assert len(dead) == 1 and dead[0].raw_b64 == "" and dead[0].raw_truncated
    assert dead[0].raw_bytes == len(big_bad) and dead[0].origin.offset == 0
    assert len(read_all(noida.bootstrap, settings.output_topic, 3)) == 3


def test_a_bundle_refused_while_being_copied_is_loaded_once_complete(tmp_path: Path):
    """A copy in place writes the manifest before the other files: the bundle used to be
    marked seen when refused, and never tried again."""
    live = tmp_path / "live"
    shutil.copytree(BUNDLE, live)
    results: list[str] = []

    def load(path: Path) -> Pipeline:
        return build_pipeline(_settings(bundle=path))

    reloader = BundleReloader(live, load, interval_s=0.01, on_result=results.append)
    manifest = orjson.loads((live / "manifest.json").read_bytes())
    manifest["version"] = "9.9.9-copied"
    lexicon = (live / "lexicon.json").read_bytes()
    (live / "lexicon.json").write_bytes(lexicon[: len(lexicon) // 2])  # still being copied
    (live / "manifest.json").write_bytes(orjson.dumps(manifest))
    reloader.check()
    assert results == ["refused"] and reloader.take() is None
    (live / "lexicon.json").write_bytes(lexicon)  # the copy completes; the manifest is unchanged
    deadline = time.monotonic() + 30
    new = None
    while new is None and time.monotonic() < deadline:
        time.sleep(0.05)
        reloader.check()
        new = reloader.take()
    assert new is not None and new.model_info.version == "9.9.9-copied"
    assert results == ["refused", "loaded"]


@pytest.mark.kafka
def test_a_fenced_worker_exits_instead_of_living_on_as_a_zombie(
    noida: BrokerHandle, tmp_path: Path
):
    """Two workers with one static member id: the broker fences the older one, which used to
    log and keep answering /healthz 200 while it read nothing."""
    from .kafka_utils import create_topics
    from .worker_proc import WorkerProcess, worker_env

    settings = noida.settings()
    create_topics(settings)
    env = worker_env(settings, CRISIS_GROUP_INSTANCE_ID="twin")
    first = WorkerProcess(env, tmp_path / "first.log")
    second = None
    try:
        first.wait_for_log("assigned", timeout_s=120)
        second = WorkerProcess(env, tmp_path / "second.log")
        code = first.proc.wait(120)
        assert code != 0, first.log_tail()
        assert "fenced" in first.log_tail(20_000)
    finally:
        first.kill()
        if second is not None:
            second.terminate()


def _relabelled(src: Path, dst: Path, old: str, new: str) -> Path:
    """A copy of ``src`` whose informative head calls ``old`` ``new`` (a new route topic)."""
    shutil.copytree(src, dst)
    manifest = orjson.loads((dst / "manifest.json").read_bytes())
    head = next(h for h in manifest["heads"] if h["task"] == "informative")
    head["labels"] = [new if lab == old else lab for lab in head["labels"]]
    manifest["version"] = "2.0.0-relabelled"
    (dst / "manifest.json").write_bytes(orjson.dumps(manifest))
    return dst


@pytest.mark.kafka
def test_hot_reload_chaos_on_a_live_stream(noida: BrokerHandle, tmp_path: Path):
    """On a real broker, with a second worker joining (a rebalance) in the middle: a bundle
    whose hashes verify but whose head cannot label is refused; a bundle with a new label
    whose route topic does not exist (auto-creation off) is refused until the topic exists,
    then served. No event is lost, none is dead-lettered, nothing is sent to the missing topic
    (events handed over in the rebalance may be labelled twice: at least once)."""
    from stream.ops.reload import BundleReloader

    good = tmp_path / "v1"
    shutil.copytree(BUNDLE, good)
    current = tmp_path / "current"
    current.symlink_to(good, target_is_directory=True)
    settings = noida.settings(
        bundle=current,
        batch_max_events=8,
        route_labels=True,
        kafka={"allow.auto.create.topics": "false"},
    )
    heads = {"informative": ["informative", "not_informative"]}
    topics = [settings.input_topic, *settings.output_topics(), *settings.route_topics(heads)]
    ensure_topics(
        settings.kafka_common(), {t: 2 if t == settings.input_topic else 1 for t in topics}
    )
    results: list[str] = []

    def worker() -> Worker:
        reloader = BundleReloader(
            current,
            lambda p: build_pipeline(settings.model_copy(update={"bundle": p})),
            interval_s=3600,
            on_result=results.append,
        )
        return Worker(
            settings,
            make_source("kafka", settings),
            make_sink("kafka", settings),
            build_pipeline(settings),
            reloader=reloader,
        )

    workers = [worker()]

    reader = TopicReader(noida.bootstrap, settings.output_topic)

    def wave(n: int, tag: str) -> None:
        """Until every event of the wave is out (inputs handed over in a rebalance count as
        completed by the worker that gave them up, so the worker's counters cannot tell)."""
        seed(noida.bootstrap, settings.input_topic, make_events(n, prefix=tag))
        want = {f"{tag}-{i}" for i in range(n)}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for w in workers:
                w.step()
            reader.poll(0.01)
            if want <= {r["id"] for r in reader.records}:
                return
        raise AssertionError("stream stalled")

    def swap(target: Path) -> None:
        current.unlink()
        current.symlink_to(target, target_is_directory=True)
        for w in workers:
            assert w.reloader is not None
            w.reloader.check()

    try:
        wave(40, "a")
        swap(_misfit_head(BUNDLE, tmp_path / "misfit"))
        wave(40, "b")
        assert results == ["refused"]
        current.unlink()  # the operator puts the good bundle back (a new worker needs one)
        current.symlink_to(good, target_is_directory=True)
        workers.append(worker())  # a rebalance while a new bundle waits
        relabelled = _relabelled(BUNDLE, tmp_path / "v2", "informative", "informative_v2")
        swap(relabelled)
        wave(40, "c")  # route topic missing: the worker refuses the swap, the old one serves
        assert "refused" in results[1:] and "route topics" in (workers[0].reloader.last_error or "")
        ensure_topics(
            settings.kafka_common(), {f"{settings.output_topic}.informative.informative_v2": 1}
        )
        for w in workers:
            assert w.reloader is not None
            w.reloader._retry_at = 0.0
            w.reloader.check()
        wave(40, "d")
    finally:
        reader.close()
        for w in workers:
            w.shutdown()
    assert all(w.stats.redelivered == 0 for w in workers)  # never sent to a missing topic
    _check_versions(noida, settings)


def _check_versions(noida: BrokerHandle, settings: Settings) -> None:
    """Waves a-d all out, none dead; a and b by the original bundle, d by the new one."""
    out = read_all(noida.bootstrap, settings.output_topic, 160)
    versions: dict[str, set[str]] = {}
    for o in out:
        versions.setdefault(o["id"], set()).add(o["model"]["version"])
    assert set(versions) == {f"{t}-{i}" for t in "abcd" for i in range(40)}  # none lost
    assert not read_all(noida.bootstrap, settings.dlq_topic, 0, timeout_s=3)
    original = orjson.loads((BUNDLE / "manifest.json").read_bytes())["version"]
    assert all(versions[f"{t}-{i}"] == {original} for t in "ab" for i in range(40))
    assert all("2.0.0-relabelled" in versions[f"d-{i}"] for i in range(40))
