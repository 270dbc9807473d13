"""Broker outage: the broker is stopped for 30 s while the worker (a child process) is busy, then
restarted on the same port and data directory (noida-db keeps its topics and offsets there).

The worker must neither exit nor spin (CPU time during the outage is bounded), keep outputs in
flight under its cap with input paused (memory bounded), report not-ready on /readyz during the
outage and ready after, say so in its logs, and finish the stream without losing an event.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from stream.local.broker import LocalBroker, free_port

from .conftest import BrokerHandle
from .kafka_utils import TopicReader, create_topics, make_events, seed
from .worker_proc import WorkerProcess, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

OUTAGE_S = 30
MAX_IN_FLIGHT = 64
CPU_BOUND_S = 0.15 * OUTAGE_S  # an idle, paused worker: well under 15% of one core
RSS_GROWTH_BOUND_MB = 50


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def _metric(body: str, name: str) -> float:
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


@pytest.mark.skipif(bool(os.environ.get("STREAM_TEST_BOOTSTRAP")), reason="needs its own broker")
def test_broker_outage_pauses_reports_and_recovers(tmp_path: Path):
    broker = LocalBroker("noida", data_dir=tmp_path / "noida").start()
    handle = BrokerHandle("noida", broker.bootstrap, broker)
    settings = handle.settings()
    create_topics(settings)
    n = 1500
    seed(broker.bootstrap, settings.input_topic, make_events(n))
    port = free_port()
    env = worker_env(
        settings, CRISIS_METRICS_PORT=str(port), CRISIS_MAX_IN_FLIGHT=str(MAX_IN_FLIGHT)
    )
    proc = WorkerProcess(env, tmp_path / "worker.log")
    reader = TopicReader(broker.bootstrap, settings.output_topic)
    try:
        deadline = time.monotonic() + 90
        while len(reader.records) < 200 or _get(port, "/readyz")[0] != 200:
            assert proc.alive() and time.monotonic() < deadline, proc.log_tail()
            reader.poll(0.2)
        reader.close()

        broker.stop()
        t_stop = time.monotonic()
        cpu0, rss0 = proc.cpu_seconds(), proc.rss_mb()
        not_ready_after = None
        in_flight: list[float] = []
        paused: list[float] = []
        while time.monotonic() - t_stop < OUTAGE_S:
            code, body = _get(port, "/readyz")
            if code == 503 and not_ready_after is None:
                not_ready_after = time.monotonic() - t_stop
                print(f"\n/readyz during outage: {body.strip()}")
            metrics = _get(port, "/metrics")[1]
            in_flight.append(_metric(metrics, "crisis_outputs_in_flight"))
            paused.append(_metric(metrics, "crisis_input_paused"))
            assert proc.alive(), proc.log_tail()
            time.sleep(0.5)
        cpu = proc.cpu_seconds() - cpu0
        rss_growth = proc.rss_mb() - rss0
        still_not_ready = _get(port, "/readyz")[0] == 503

        broker.start()
        t_start = time.monotonic()
        while _get(port, "/readyz")[0] != 200:
            assert proc.alive() and time.monotonic() - t_start < 60, proc.log_tail()
            time.sleep(0.2)
        recovery = time.monotonic() - t_start

        reader = TopicReader(broker.bootstrap, settings.output_topic)
        want = {f"e-{i}" for i in range(n)}
        deadline = time.monotonic() + 120
        while not want <= {o["id"] for o in reader.records}:
            assert proc.alive() and time.monotonic() < deadline, proc.log_tail()
            reader.poll(0.3)
        assert proc.terminate() == 0, proc.log_tail()
    finally:
        reader.close()
        if proc.alive():
            proc.kill()
        broker.cleanup()
    log = proc.log_path.read_text()
    print(
        f"outage {OUTAGE_S}s: not ready after {not_ready_after}s, worker CPU {cpu:.2f}s, "
        f"RSS growth {rss_growth:.1f} MB, max in flight {max(in_flight)}, "
        f"ready again {recovery:.1f}s after the broker restarted; "
        f"{len(reader.records) - n} duplicates; producer replaced "
        f"{log.count('producer hit a fatal error')} times (noida-db may lose its sequence state)"
    )
    assert not_ready_after is not None and not_ready_after < 15 and still_not_ready
    assert max(paused) == 1, "input must be paused while outputs cannot be delivered"
    assert max(in_flight) <= MAX_IN_FLIGHT
    assert cpu < CPU_BOUND_S, f"worker spun: {cpu:.1f}s CPU in a {OUTAGE_S}s outage"
    assert rss_growth < RSS_GROWTH_BOUND_MB
    assert "lost connection to all brokers" in log and "broker connection restored" in log
