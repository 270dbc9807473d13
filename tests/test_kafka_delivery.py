"""Delivery on a real broker (noida-db and tansu, or STREAM_TEST_BOOTSTRAP): N in -> N out,
poison to the DLQ, and a worker killed mid-stream loses nothing."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from stream.decode import DLQ_RAW_BYTES
from stream.local.demo import BAD_RECORDS
from stream.models.bundle import Bundle, load_bundle
from stream.pipeline import Pipeline
from stream.runtime import make_sink, make_source
from stream.sinks.kafka import KafkaSink
from stream.sources.kafka import KafkaSource
from stream.worker import Worker

from .conftest import REPO, BrokerHandle
from .kafka_utils import TopicReader, create_topics, make_events, read_all, seed
from .worker_proc import WorkerProcess, worker_env

pytestmark = pytest.mark.kafka


def test_n_in_n_out_with_ids_and_origins(any_broker: BrokerHandle, bundle: Bundle):
    settings = any_broker.settings()
    create_topics(settings)
    values = make_events(120)
    seed(any_broker.bootstrap, settings.input_topic, values)
    worker = Worker(
        settings, make_source("kafka", settings), make_sink("kafka", settings), Pipeline(bundle)
    )
    stats = worker.run(stop_after=len(values), idle_timeout_s=60)
    assert stats.labeled == len(values)
    out = read_all(any_broker.bootstrap, settings.output_topic, len(values))
    assert sorted(o["id"] for o in out) == sorted(f"e-{i}" for i in range(len(values)))
    origins = {(o["origin"]["partition"], o["origin"]["offset"]) for o in out}
    assert len(origins) == len(values)
    assert all(o["origin"]["topic"] == settings.input_topic for o in out)
    assert all(o["origin"]["timestamp"] for o in out)
    # offsets were committed up to the end of each partition
    probe = KafkaSource(
        {"bootstrap.servers": any_broker.bootstrap, "group.id": settings.group_id},
        [settings.input_topic],
    )
    try:
        committed = probe.committed([(settings.input_topic, p) for p in range(3)])
    finally:
        probe.close()
    per_partition: dict[int, int] = {}
    for p, off in origins:
        per_partition[p] = max(per_partition.get(p, -1), off)
    for p, last in per_partition.items():
        assert committed[(settings.input_topic, p)] == last + 1


def test_poison_messages_go_to_the_dlq_with_reasons(any_broker: BrokerHandle, bundle: Bundle):
    settings = any_broker.settings()
    create_topics(settings, input_partitions=1)
    good = make_events(20)
    values = good[:5] + BAD_RECORDS + [b'{"id": "x", "text": "' + b"a" * 5000 + b'"}'] + good[5:]
    seed(any_broker.bootstrap, settings.input_topic, values)
    worker = Worker(
        settings, make_source("kafka", settings), make_sink("kafka", settings), Pipeline(bundle)
    )
    stats = worker.run(stop_after=len(values), idle_timeout_s=60)
    assert stats.dead_letters == 4 and stats.labeled == 20
    dlq = read_all(any_broker.bootstrap, settings.dlq_topic, 4)
    assert sorted(d["error"]["kind"] for d in dlq) == ["empty", "not_json", "schema", "too_long"]
    assert sorted(d["origin"]["offset"] for d in dlq) == [5, 6, 7, 8]
    assert all(d["raw_b64"] for d in dlq)
    out = read_all(any_broker.bootstrap, settings.output_topic, 20)
    assert len({o["id"] for o in out}) == 20


def test_outputs_a_producer_refuses_become_dead_letters(noida: BrokerHandle, bundle: Bundle):
    """Bad input too big to copy whole into a dead letter, and a labelled output over the
    producer's message.max.bytes: both used to raise out of the worker (and again after every
    restart, on the same offset). Now: a truncated dead letter, and an ``output_rejected`` one
    for the refused output; the good events around them are labelled, every offset committed."""
    settings = noida.settings().model_copy(update={"max_output_bytes": 5_000_000})
    create_topics(settings, input_partitions=1)
    good = make_events(4)
    not_json = b"{" + b"x" * 450_000
    wide = orjson.dumps({"id": "wide", "text": "flood", "meta": {"blob": "y" * 420_000}})
    values = [*good[:2], not_json, wide, *good[2:]]
    seed(noida.bootstrap, settings.input_topic, values)
    # a producer that refuses anything over 400 kB: the wide event's labelled output
    sink = KafkaSink({**settings.kafka_common(), "message.max.bytes": 400_000})
    worker = Worker(settings, make_source("kafka", settings), sink, Pipeline(bundle))
    stats = worker.run(stop_after=len(values), idle_timeout_s=60)
    assert stats.labeled == 5 and stats.dead_letters == 2, stats
    dlq = {d["error"]["kind"]: d for d in read_all(noida.bootstrap, settings.dlq_topic, 2)}
    assert dlq["not_json"]["raw_truncated"] and dlq["not_json"]["raw_bytes"] == len(not_json)
    assert len(base64.b64decode(dlq["not_json"]["raw_b64"])) == DLQ_RAW_BYTES
    assert dlq["not_json"]["raw_sha256"] == hashlib.sha256(not_json).hexdigest()
    refused = dlq["output_rejected"]
    assert refused["origin"]["offset"] == 3 and "MSG_SIZE_TOO_LARGE" in refused["error"]["message"]
    out = read_all(noida.bootstrap, settings.output_topic, 4)
    assert sorted(o["id"] for o in out) == sorted(orjson.loads(v)["id"] for v in good)
    probe = KafkaSource(
        {"bootstrap.servers": noida.bootstrap, "group.id": settings.group_id},
        [settings.input_topic],
    )
    try:
        assert probe.committed([(settings.input_topic, 0)]) == {
            (settings.input_topic, 0): len(values)
        }
    finally:
        probe.close()


def test_create_topics_creates_the_route_topics(noida: BrokerHandle):
    """``run --create-topics`` with ``CRISIS_ROUTE_LABELS``: the per-label topics (named from
    the bundle's labels) exist before the first output, so a broker without auto-creation
    does not leave routed outputs failing while the input stays paused."""
    settings = noida.settings(route_labels=True, route_tasks=["informative", "humanitarian"])
    env = {
        **os.environ,
        **worker_env(settings),
        "CRISIS_ROUTE_LABELS": "true",
        "CRISIS_ROUTE_TASKS": "informative,humanitarian",
    }
    events = REPO / "stream" / "samples" / "events.jsonl"
    cmd = [sys.executable, "-m", "stream", "run", "--create-topics", "--partitions", "2"]
    cmd += ["--source", f"file:{events}"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    heads = {"informative": 2, "humanitarian": 5}
    expected = settings.route_topics(
        {h.task: list(h.labels) for h in load_bundle(settings.bundle).heads}
    )
    assert len(expected) == sum(heads.values())
    md = AdminClient({"bootstrap.servers": noida.bootstrap}).list_topics(timeout=10).topics
    assert set(expected) <= set(md)
    for topic in [*expected, settings.output_topic, settings.dlq_topic]:
        assert len(md[topic].partitions) == 2, topic  # --partitions, outputs included


def test_worker_killed_mid_stream_loses_nothing(any_broker: BrokerHandle, tmp_path: Path):
    settings = any_broker.settings()
    create_topics(settings)
    n = 1500
    seed(any_broker.bootstrap, settings.input_topic, make_events(n))
    env = worker_env(settings)
    reader = TopicReader(any_broker.bootstrap, settings.output_topic)
    try:
        proc = WorkerProcess(env, tmp_path / "worker.log")
        deadline = time.monotonic() + 90
        while len(reader.records) < 100:
            assert proc.alive(), proc.log_tail(2000)
            assert time.monotonic() < deadline, "worker produced nothing"
            reader.poll(0.1)
        proc.kill()
        reader.until(0, timeout_s=3, settle_s=1)
        first = len(reader.records)
        assert first < n, "the kill came too late to test anything"

        proc = WorkerProcess(env, tmp_path / "worker.log")
        try:
            out = reader.until(n, timeout_s=180, settle_s=3)
        finally:
            rc = proc.terminate(60)
    finally:
        reader.close()
    ids = {o["id"] for o in out}
    assert ids == {f"e-{i}" for i in range(n)}, f"missing {n - len(ids)} ids"
    assert rc == 0, "SIGTERM must drain and exit 0"
    assert len(out) - n <= first  # at most the uncommitted window is labelled twice


def test_poll_returns_when_a_record_arrives_not_at_the_timeout(noida: BrokerHandle):
    """A record that arrives while the source waits comes back at once: the batcher's max wait
    starts from its arrival, not from the end of a poll timeout."""
    s = noida.settings()
    create_topics(s, 1)
    source = make_source("kafka", s)
    assert isinstance(source, KafkaSource)
    try:
        deadline = time.monotonic() + 30
        while not source.ready and time.monotonic() < deadline:
            assert source.poll(10, 0.1) == []
        assert source.ready
        source.poll(10, 0.5)  # let the first fetch settle
        t0 = time.monotonic()
        assert source.poll(500, 0.3) == [] and time.monotonic() - t0 >= 0.25  # waits when idle
        value = b'{"id": "late", "text": "x"}'
        timer = threading.Timer(0.3, seed, (noida.bootstrap, s.input_topic, [value]))
        timer.start()
        t0 = time.monotonic()
        records = source.poll(500, 5.0)
        waited = time.monotonic() - t0
        timer.join()
        assert [r.value for r in records] == [value]
        assert waited < 2.0, f"poll held an arrived record for {waited:.2f}s"
    finally:
        source.close()


def test_renewed_producer_reports_every_outstanding_output_and_delivers(noida: BrokerHandle):
    """After a fatal producer error the sink swaps in a new producer: every output the old one
    held gets exactly one report (delivered, or failed and so re-sent by the worker), and the
    new producer delivers."""
    s = noida.settings()
    create_topics(s, 1)
    sink = make_sink("kafka", s)
    reports: dict[int, list[Exception | None]] = {}

    def report_for(i: int):
        return lambda err: reports.setdefault(i, []).append(err)

    for i in range(200):
        sink.produce(s.output_topic, str(i).encode(), b"x", report_for(i))
    sink.renew("test")  # type: ignore[attr-defined]
    assert sorted(reports) == list(range(200)), "every outstanding output was reported"
    assert all(len(r) == 1 for r in reports.values())
    sink.produce(s.output_topic, b"after", b"y", report_for(999))
    assert sink.flush(30) == 0
    assert reports[999] == [None]
    sink.close()
