"""Soak (slow, run by hand): the worker at half its measured rate for ``STREAM_SOAK_S`` seconds
(default an hour), sampling RSS, open fds, threads, in-flight outputs and metric series at
regular intervals; each must stay flat. ``STREAM_SOAK_OUT=FILE`` keeps the samples as JSON.

    STREAM_SOAK_S=3600 STREAM_SOAK_OUT=soak.json python -m pytest -q -m slow tests/test_soak.py
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from stream.local.broker import LocalBroker, free_port
from stream.settings import Settings

from .conftest import BUNDLE
from .kafka_utils import create_topics, make_events, seed
from .worker_proc import WorkerProcess, worker_env

DURATION_S = float(os.environ.get("STREAM_SOAK_S", "3600"))
SAMPLES = 60


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        lines = [ln for ln in r.read().decode().splitlines() if ln and not ln.startswith("#")]
    out = {"series": float(len(lines))}
    for ln in lines:
        name, value = ln.rsplit(" ", 1)
        if name in ("crisis_outputs_in_flight", "crisis_events_in_total"):
            out[name] = float(value)
    return out


def _sample(worker: WorkerProcess, port: int) -> dict[str, float]:
    status = Path(f"/proc/{worker.pid}/status").read_text().splitlines()
    threads = next(int(ln.split()[1]) for ln in status if ln.startswith("Threads:"))
    return {
        "t": round(time.monotonic() - worker.started, 1),
        "rss_mb": round(worker.rss_mb(), 1),
        "fds": float(len(os.listdir(f"/proc/{worker.pid}/fd"))),
        "threads": float(threads),
        **_metrics(port),
    }


def _max_rate(broker: LocalBroker, settings: Settings, worker: WorkerProcess, port: int) -> float:
    """Events per second the worker labels from a backlog (after its warm-up)."""
    n = 3000
    seed(broker.bootstrap, settings.input_topic, make_events(n, prefix="warm"))
    deadline = time.monotonic() + 600
    while _metrics(port).get("crisis_events_in_total", 0) < 500 and time.monotonic() < deadline:
        time.sleep(0.5)
    t0, c0 = time.monotonic(), _metrics(port).get("crisis_events_in_total", 0)
    while _metrics(port).get("crisis_events_in_total", 0) < n and time.monotonic() < deadline:
        time.sleep(0.5)
    return (_metrics(port)["crisis_events_in_total"] - c0) / (time.monotonic() - t0)


def _produce(bootstrap: str, topic: str, rate: float, stop: threading.Event) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "log_level": 3})
    events = make_events(1000, prefix="soak")
    t0, i = time.monotonic(), 0
    while not stop.is_set():
        due = int((time.monotonic() - t0) * rate)
        while i < due:
            p.produce(topic, events[i % len(events)])
            i += 1
        p.poll(0)
        time.sleep(0.05)
    p.flush(30)


def _flat(samples: list[dict[str, float]], key: str, slack: float) -> None:
    """The second half's peak stays within ``slack`` of the first half's (after warm-up)."""
    half = len(samples) // 2
    first = max(s[key] for s in samples[1:half])
    second = max(s[key] for s in samples[half:])
    assert second <= first + slack, f"{key} grew: {first} -> {second}"


@pytest.mark.slow
@pytest.mark.kafka
def test_soak_at_half_the_max_rate(tmp_path: Path):
    with LocalBroker("noida", data_dir=tmp_path / "broker") as broker:
        settings = Settings(bootstrap_servers=broker.bootstrap, bundle=BUNDLE)
        create_topics(settings, input_partitions=2)
        port = free_port()
        env = worker_env(settings, CRISIS_METRICS_PORT=str(port))
        worker = WorkerProcess(env, tmp_path / "worker.log")
        stop = threading.Event()
        samples: list[dict[str, float]] = []
        try:
            worker.wait_for_log("metrics and health on", timeout_s=300)
            rate = _max_rate(broker, settings, worker, port) / 2
            producer = threading.Thread(
                target=_produce, args=(broker.bootstrap, settings.input_topic, rate, stop)
            )
            producer.start()
            end = time.monotonic() + DURATION_S
            while time.monotonic() < end:
                samples.append(_sample(worker, port))
                time.sleep(DURATION_S / SAMPLES)
            samples.append(_sample(worker, port))
        finally:
            stop.set()
            assert worker.terminate(60) == 0, worker.log_tail()
        out = os.environ.get("STREAM_SOAK_OUT")
        if out:
            Path(out).write_bytes(orjson.dumps({"rate": rate, "samples": samples}))
        print(f"soak: {rate:.1f} events/s for {DURATION_S:.0f} s")
        print(f"first {samples[1]}\nlast {samples[-1]}")
        _flat(samples, "rss_mb", 40.0)
        _flat(samples, "fds", 4.0)
        _flat(samples, "threads", 2.0)
        _flat(samples, "series", 4.0)
        _flat(samples, "crisis_outputs_in_flight", 200.0)
