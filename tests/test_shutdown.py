"""SIGTERM under load with a stalled output broker: the worker exits 0 within its shutdown
timeout (which the compose file's ``stop_grace_period`` covers), and a clean stop leaves no
duplicates."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer

from stream.local.broker import LocalBroker
from stream.ops.admin import ensure_topics
from stream.settings import Settings
from stream.sources.kafka import close_consumer

from .conftest import BUNDLE, REPO, BrokerHandle
from .kafka_utils import TopicReader, create_topics, make_events, seed
from .worker_proc import WorkerProcess, worker_env

SHUTDOWN_S = 10.0


def _grace_period_s() -> float:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    value = compose["services"]["worker"]["stop_grace_period"]
    m = re.fullmatch(r"(\d+)s", str(value))
    assert m, value
    return float(m.group(1))


def test_the_default_shutdown_timeout_fits_the_compose_grace_period():
    assert Settings().shutdown_timeout_s + 5 <= _grace_period_s()


@pytest.mark.kafka
@pytest.mark.parametrize("stall_s", [3.0, pytest.param(40.0, marks=pytest.mark.slow)])
def test_sigterm_under_load_with_a_stalled_broker(tmp_path: Path, stall_s: float):
    """The broker is frozen (SIGSTOP) while outputs are in flight, then the worker gets
    SIGTERM. A short stall: the worker delivers, commits and exits 0; a restart publishes
    no event twice. A stall longer than the shutdown timeout: it still exits 0 in time; what
    it could not deliver stays uncommitted and comes out after the restart (at least once)."""
    n = 3000
    with LocalBroker("noida", data_dir=tmp_path / "broker") as broker:
        settings = Settings(
            bootstrap_servers=broker.bootstrap,
            group_id="g",
            input_topic="in",
            output_topic="out",
            review_topic="review",
            dlq_topic="dlq",
            bundle=BUNDLE,
        )
        create_topics(settings, input_partitions=2)
        seed(broker.bootstrap, "in", make_events(n))
        env = worker_env(settings, CRISIS_SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_S))
        reader = TopicReader(broker.bootstrap, "out")
        worker = WorkerProcess(env, tmp_path / "worker.log")
        try:
            deadline = time.monotonic() + 120
            while len(reader.records) < 200 and time.monotonic() < deadline:
                reader.poll()
            assert len(reader.records) >= 200, worker.log_tail()
            pgid = broker.pgid
            assert pgid is not None
            os.killpg(pgid, signal.SIGSTOP)
            try:
                time.sleep(0.5)
                stopped_at = time.monotonic()
                worker.proc.send_signal(signal.SIGTERM)
                if stall_s < SHUTDOWN_S:
                    time.sleep(stall_s)
                    os.killpg(pgid, signal.SIGCONT)
                code = worker.proc.wait(SHUTDOWN_S + 30)
                took = time.monotonic() - stopped_at
            finally:
                os.killpg(pgid, signal.SIGCONT)
            assert code == 0, worker.log_tail()
            assert took <= SHUTDOWN_S + 5, f"exit took {took:.1f} s\n{worker.log_tail()}"
        finally:
            worker.kill()
        rest = WorkerProcess(env, tmp_path / "rest.log")
        try:
            records = reader.until(n, timeout_s=240, settle_s=3.0)
        finally:
            rest.terminate()
        ids = [r["id"] for r in records]
        print(f"stall {stall_s:.0f} s: exit after {took:.1f} s, {len(ids) - n} duplicates")
        assert set(ids) == {f"e-{i}" for i in range(n)}  # nothing lost
        if stall_s < SHUTDOWN_S:
            assert len(ids) == n, f"{len(ids) - n} duplicates after a clean stop"


_CLOSE_PENDING = """
import sys, time
from confluent_kafka import Consumer
from stream.sources.kafka import close_consumer

bootstrap, topic = sys.argv[1:3]
consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": "g-" + topic,
    "group.instance.id": "one",
    "enable.auto.commit": False,
    "log_level": 3,
})
consumer.subscribe([topic])
time.sleep(5)  # the group's assignment arrives and waits, unserved, in the queue
started = time.monotonic()
close_consumer(consumer)
print(f"closed in {time.monotonic() - started:.1f} s")
"""


@pytest.mark.kafka
def test_closing_a_consumer_whose_assignment_was_never_served_returns(noida: BrokerHandle):
    """librdkafka deadlocks, holding the GIL, when close() is the first to serve a queued
    assignment: a SIGTERM right after start would hang the process for good. In a child
    process, so that a regression fails here instead of freezing the test run."""
    children = []
    for _ in range(4):  # together: the hang needed a loaded machine to show reliably
        topic = f"close-{uuid.uuid4().hex[:8]}"
        ensure_topics({"bootstrap.servers": noida.bootstrap}, {topic: 1})
        children.append(
            subprocess.Popen(
                [sys.executable, "-c", _CLOSE_PENDING, noida.bootstrap, topic],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
        )
    try:
        for child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err[-2000:]
            assert "closed in" in out
    finally:
        for child in children:
            child.kill()


def test_closing_a_closed_consumer_again_is_a_no_op():
    consumer = Consumer({"bootstrap.servers": "127.0.0.1:9", "group.id": "closed", "log_level": 0})
    close_consumer(consumer)
    close_consumer(consumer)  # a source closed by its worker and again by a finally
    with pytest.raises(RuntimeError):
        consumer.poll(0)


@pytest.mark.kafka
def test_a_consumer_whose_revoke_callback_raises_is_closed_all_the_same(noida: BrokerHandle):
    topic = f"revoke-{uuid.uuid4().hex[:8]}"
    ensure_topics({"bootstrap.servers": noida.bootstrap}, {topic: 1})
    consumer = Consumer(
        {"bootstrap.servers": noida.bootstrap, "group.id": f"g-{topic}", "log_level": 3}
    )

    def refuse(_c: Consumer, _parts: list) -> None:
        raise ValueError("revoke refused")

    consumer.subscribe([topic], on_revoke=refuse)
    deadline = time.monotonic() + 30
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.consume(num_messages=1, timeout=0.2)
    assert consumer.assignment()
    with pytest.raises(ValueError, match="revoke refused"):
        close_consumer(consumer)
    with pytest.raises(RuntimeError, match="closed"):
        consumer.poll(0)
