"""Operating the worker: metrics, health/readiness, hot reload of bundles."""

from __future__ import annotations

import os
import shutil
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from stream.local.demo import BAD_RECORDS, sample_events
from stream.models.bundle import Bundle
from stream.ops.health import HealthServer
from stream.ops.prometheus import WorkerMetrics
from stream.ops.reload import BundleReloader
from stream.pipeline import Pipeline
from stream.runtime import build_pipeline, build_worker, make_sink, make_source
from stream.settings import Settings
from stream.sinks import MemorySink
from stream.sources import MemorySource
from stream.worker import Worker

from .conftest import BUNDLE, BrokerHandle
from .kafka_utils import create_topics, make_events, read_all, seed


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, value = line.rsplit(" ", 1)
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    raise AssertionError(f"{name} {labels} not in metrics")


def test_metrics_count_a_stream(bundle: Bundle):
    good = sample_events()
    source = MemorySource(good + BAD_RECORDS)
    metrics = WorkerMetrics()
    worker = Worker(
        Settings(bundle=BUNDLE, batch_max_events=8),
        source,
        MemorySink(),
        Pipeline(bundle),
        metrics=metrics,
    )
    server = HealthServer(metrics, worker.readiness, lambda: worker.heartbeat, 0, "127.0.0.1")
    server.start()
    try:
        stats = worker.run()
        code, text = _get(server.port, "/metrics")
    finally:
        server.stop()
    assert code == 200
    assert _metric(text, "crisis_events_in_total") == len(good) + len(BAD_RECORDS)
    labelled = sum(
        _metric(text, "crisis_events_labeled_total", task="informative", label=lab)
        for lab in ("informative", "not_informative")
        if f'label="{lab}"' in text
    )
    assert labelled == len(good)
    assert _metric(text, "crisis_events_dlq_total", reason="not_json") == 1
    assert _metric(text, "crisis_events_dlq_total", reason="empty") == 1
    assert _metric(text, "crisis_events_dlq_total", reason="schema") == 1
    assert _metric(text, "crisis_batch_size_count") == stats.batches
    assert _metric(text, "crisis_batch_size_sum") == len(good)
    assert _metric(text, "crisis_encoder_seconds_count", modality="text") == stats.batches
    assert _metric(text, "crisis_events_review_total") == stats.review
    assert (
        _metric(text, "crisis_model_info", bundle=bundle.manifest.name, sha256=bundle.sha256) == 1
    )
    # every sample event has a created_at (2017): each labelled output observed once, years late
    assert _metric(text, "crisis_end_to_end_seconds_count") == len(good)
    assert _metric(text, "crisis_end_to_end_seconds_bucket", le="3600.0") == 0
    assert _metric(text, "crisis_worker_ready") == 1  # what /readyz answers: 200
    assert _metric(text, "process_resident_memory_bytes") > 50e6  # onnxruntime and a model
    assert _metric(text, "process_open_fds") > 0


@pytest.mark.kafka
def test_readyz_flips_with_assignment_and_shutdown(noida: BrokerHandle, bundle: Bundle):
    settings = noida.settings()
    create_topics(settings)
    metrics = WorkerMetrics()
    worker = Worker(
        settings,
        make_source("kafka", settings, metrics),
        make_sink("kafka", settings),
        Pipeline(bundle),
        metrics=metrics,
    )
    server = HealthServer(metrics, worker.readiness, lambda: worker.heartbeat, 0, "127.0.0.1")
    server.start()
    try:
        assert _get(server.port, "/readyz")[0] == 503
        assert _get(server.port, "/healthz")[0] == 200
        for _ in range(200):
            worker.step()
            if worker.source.ready:
                break
        code, body = _get(server.port, "/readyz")
        assert code == 200 and "on 3 partitions" in body, body
        assert _metric(_get(server.port, "/metrics")[1], "crisis_worker_ready") == 1
        seed(noida.bootstrap, settings.input_topic, make_events(30))
        for _ in range(400):
            worker.step()
            if worker.stats.completed >= 30:
                break
        assert worker.stats.labeled == 30
        # the broker stamps each record (CreateTime): every labelled output observed, in seconds
        e2e = _metric(_get(server.port, "/metrics")[1], "crisis_end_to_end_seconds_count")
        assert e2e == 30
        assert _metric(_get(server.port, "/metrics")[1], "crisis_end_to_end_seconds_sum") < 30 * 60
        worker.request_stop()
        assert _get(server.port, "/readyz")[0] == 503
        assert _metric(_get(server.port, "/metrics")[1], "crisis_worker_ready") == 0
    finally:
        worker.shutdown()
        server.stop()


def _variant(src: Path, dst: Path, version: str) -> Path:
    shutil.copytree(src, dst)
    manifest = orjson.loads((dst / "manifest.json").read_bytes())
    manifest["version"] = version
    (dst / "manifest.json").write_bytes(orjson.dumps(manifest))
    return dst


@pytest.mark.kafka
def test_hot_reload_swaps_between_batches_and_refuses_tampered(noida: BrokerHandle, tmp_path: Path):
    v1 = _variant(BUNDLE, tmp_path / "v1", "1.0.0-test")
    v2 = _variant(BUNDLE, tmp_path / "v2", "2.0.0-test")
    bad = _variant(BUNDLE, tmp_path / "bad", "3.0.0-tampered")
    onnx = bad / orjson.loads((bad / "manifest.json").read_bytes())["text_encoder"]["files"]["int8"]
    onnx.write_bytes(onnx.read_bytes()[:-100] + b"\0" * 100)
    current = tmp_path / "current"
    current.symlink_to(v1, target_is_directory=True)

    settings = noida.settings(bundle=current, batch_max_events=8)
    create_topics(settings)
    metrics = WorkerMetrics()
    results: list[str] = []
    reloader = BundleReloader(
        current,
        lambda p: build_pipeline(settings.model_copy(update={"bundle": p})),
        interval_s=3600,
        on_result=results.append,
    )
    worker = Worker(
        settings,
        make_source("kafka", settings),
        make_sink("kafka", settings),
        build_pipeline(settings),
        metrics=metrics,
        reloader=reloader,
    )
    total = 0

    def wave(n: int, tag: str) -> None:
        nonlocal total
        seed(noida.bootstrap, settings.input_topic, make_events(n, prefix=tag))
        total += n
        for _ in range(2000):
            worker.step()
            if worker.stats.completed >= total:
                return
        raise AssertionError("stream stalled")

    try:
        wave(60, "a")
        current.unlink()
        current.symlink_to(v2, target_is_directory=True)
        reloader.check()
        wave(60, "b")
        current.unlink()
        current.symlink_to(bad, target_is_directory=True)
        reloader.check()
        wave(60, "c")
    finally:
        worker.shutdown()
    assert results == ["loaded", "refused"]
    out = read_all(noida.bootstrap, settings.output_topic, total)
    ids = [o["id"] for o in out]
    assert len(ids) == len(set(ids)) == total  # zero lost, zero duplicated
    version = {o["id"]: o["model"]["version"] for o in out}
    assert {version[f"a-{i}"] for i in range(60)} == {"1.0.0-test"}
    assert {version[f"b-{i}"] for i in range(60)} == {"2.0.0-test"}
    assert {version[f"c-{i}"] for i in range(60)} == {"2.0.0-test"}  # tampered one refused
    assert "sha256" in (reloader.last_error or "")


@pytest.mark.kafka
def test_sigterm_during_startup_exits_cleanly(noida: BrokerHandle, tmp_path: Path):
    """A replica stopped while it loads its bundle exits 0 after a normal shutdown, not -15."""
    from .worker_proc import WorkerProcess, worker_env

    settings = noida.settings()
    create_topics(settings)
    proc = WorkerProcess(worker_env(settings), tmp_path / "worker.log")
    try:
        proc.wait_for_log('"starting"')  # logged before the bundle loads
        assert proc.terminate() == 0, proc.log_tail()
    finally:
        proc.kill()
    log = proc.log_path.read_text()
    assert "during start-up" in log and '"stopped"' in log, log[-3000:]


def test_reload_thread_survives_an_unexpected_error(tmp_path: Path):
    """A loader that fails in a way the reloader does not expect (not a bundle error) must not
    end hot reload for the life of the process: the next change is still picked up."""
    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}")
    calls: list[str] = []
    results: list[str] = []

    def load(path: Path) -> Pipeline:
        calls.append(manifest.read_text())
        raise RuntimeError("loader bug")

    reloader = BundleReloader(tmp_path, load, interval_s=0.05, on_result=results.append).start()
    try:
        for content in ('{"v": 1}', '{"v": 22}'):
            manifest.write_text(content)
            os.utime(manifest, (time.time() + len(calls) + 5,) * 2)
            deadline = time.monotonic() + 5
            want = len(results) + 1  # the report follows the loader's call: wait for both
            while (content not in calls or len(results) < want) and time.monotonic() < deadline:
                time.sleep(0.02)
        assert calls[-1] == '{"v": 22}' and reloader._thread.is_alive()
        assert results[:2] == ["refused", "refused"] and reloader.last_error == "loader bug"
    finally:
        reloader.stop()


@pytest.mark.kafka
def test_a_replica_without_partitions_is_idle_but_ready(noida: BrokerHandle, bundle: Bundle):
    """More workers than partitions: the spare one used to stay not-ready for ever (an
    over-provisioned deployment never became ready, and every pod flapped on each rebalance)."""
    settings = noida.settings()
    create_topics(settings, input_partitions=1)
    workers = [
        Worker(settings, make_source("kafka", settings), MemorySink(), Pipeline(bundle))
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for w in workers:
                w.step()
            if (
                all(w.source.ready for w in workers)
                and sum(len(w.source.assignment) for w in workers) == 1
            ):
                break
        idle = [w for w in workers if not w.source.assignment]
        assert len(idle) == 1, [w.source.assignment for w in workers]
        ready, why = idle[0].readiness()
        assert ready and "idle" in why, why
    finally:
        for w in workers:
            w.shutdown()


# -- the metrics/health server: bind address and slow clients -------------------------------


def _health_server(request_timeout_s: float) -> HealthServer:
    metrics = WorkerMetrics()
    return HealthServer(
        metrics,
        lambda: (True, "ok"),
        time.monotonic,
        0,
        "127.0.0.1",
        request_timeout_s=request_timeout_s,
    ).start()


def _closed_by_server(conn: socket.socket, within_s: float, trickle: bool = False) -> float:
    """Seconds until the server closes ``conn`` (a client that sends nothing, or one byte of
    a never-ending request line every 0.2 s); fails after ``within_s``."""
    t0 = time.monotonic()
    conn.settimeout(0.2)
    sent = 0
    while time.monotonic() - t0 < within_s:
        try:
            if conn.recv(1024) == b"":
                return time.monotonic() - t0
        except TimeoutError:
            if trickle:
                try:
                    conn.sendall(b"GET /healthz"[sent % 12 : sent % 12 + 1])
                except OSError:  # reset: closed
                    return time.monotonic() - t0
                sent += 1
        except OSError:
            return time.monotonic() - t0
    raise AssertionError(f"the server kept the connection open for {within_s}s")


@pytest.mark.parametrize("trickle", [False, True], ids=["silent", "trickling"])
def test_a_slow_client_neither_blocks_healthz_nor_holds_the_server(trickle: bool):
    server = _health_server(request_timeout_s=1.0)
    try:
        slow = socket.create_connection(("127.0.0.1", server.port))
        try:
            if trickle:
                slow.sendall(b"G")
            t0 = time.monotonic()
            assert _get(server.port, "/healthz")[0] == 200  # another client is served at once
            assert time.monotonic() - t0 < 0.5
            # and the slow one is disconnected at the request timeout, not held forever
            assert _closed_by_server(slow, within_s=4.0, trickle=trickle) < 2.0
        finally:
            slow.close()
    finally:
        server.stop()


def test_the_metrics_server_binds_loopback_unless_told(tmp_path: Path):
    field = Settings.model_fields["metrics_host"]
    assert field.description and Settings().metrics_host == "127.0.0.1"
    assert Settings.model_fields["metrics_request_timeout_s"].description
    events = tmp_path / "in.jsonl"
    events.write_bytes(b"")
    settings = Settings(
        bundle=BUNDLE, metrics_port=0, metrics_host="127.0.0.1", reload_interval_s=0
    )
    worker, server = build_worker(settings, f"file:{events}", f"dir:{tmp_path / 'out'}")
    assert server is not None
    try:
        assert server.host == "127.0.0.1"
        assert _get(server.port, "/healthz")[0] == 200
    finally:
        server.stop()
        worker.shutdown()
