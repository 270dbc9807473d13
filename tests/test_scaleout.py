"""Scale-out: two workers in one consumer group split the partitions; when one is killed its
partitions move to the other and every event still comes out.

The kill half runs on tansu (and any STREAM_TEST_BOOTSTRAP broker): noida-db never expires a
dead member, so its partitions would not move there (README, "Brokers")."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from stream.local.broker import free_port
from stream.settings import Settings

from .conftest import BrokerHandle
from .kafka_utils import TopicReader, create_topics, make_events, seed
from .worker_proc import WorkerProcess, worker_env

pytestmark = pytest.mark.kafka


def _start(settings: Settings, worker_id: str, port: int, log: Path) -> WorkerProcess:
    # dynamic membership (no group instance id): a killed worker's partitions move on expiry
    env = worker_env(
        settings,
        CRISIS_GROUP_INSTANCE_ID="",
        CRISIS_WORKER_ID=worker_id,
        CRISIS_METRICS_PORT=str(port),
    )
    return WorkerProcess(env, log)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _wait_ready(ports: list[int], procs: list[WorkerProcess], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert all(p.alive() for p in procs), "a worker exited"
        if all(_ready(p) for p in ports):
            return
        time.sleep(0.3)
    raise AssertionError("workers did not both become ready (partitions assigned)")


def _scale_out(broker: BrokerHandle, kill: bool, tmp: Path) -> None:
    settings = broker.settings()
    create_topics(settings, input_partitions=4)
    ports = [free_port(), free_port()]
    procs = [_start(settings, "w-a", ports[0], tmp / "w-a.log")]
    _wait_ready(ports[:1], procs, 60)
    procs.append(_start(settings, "w-b", ports[1], tmp / "w-b.log"))
    reader = TopicReader(broker.bootstrap, settings.output_topic)
    try:
        _wait_ready(ports, procs, 90)
        # both are ready: the group has settled, so the split is stable from here
        time.sleep(1.0)
        _wait_ready(ports, procs, 30)
        n = 2400
        seed(broker.bootstrap, settings.input_topic, make_events(n))
        reader.until(100, timeout_s=120, settle_s=0)
        by_worker: dict[str, set[int]] = {}
        for o in reader.records:
            by_worker.setdefault(o["worker"], set()).add(o["origin"]["partition"])
        assert set(by_worker) == {"w-a", "w-b"}, by_worker
        assert not by_worker["w-a"] & by_worker["w-b"], f"partitions overlap: {by_worker}"
        if kill:
            procs[0].kill()
        out = reader.until(n, timeout_s=240, settle_s=3)
        ids = {o["id"] for o in out}
        assert ids == {f"e-{i}" for i in range(n)}, f"{n - len(ids)} events missing"
        if kill:
            done_by_a = sum(o["worker"] == "w-a" for o in out)
            assert done_by_a < n // 2, "w-a finished its share before the kill"
            moved = {o["origin"]["partition"] for o in out if o["worker"] == "w-b"}
            assert by_worker["w-a"] <= moved, "w-a's partitions did not move to w-b"
    finally:
        reader.close()
        for p in procs:
            p.terminate(60)


@pytest.mark.slow  # the kill test below also starts two workers that split the partitions
def test_two_workers_split_partitions(noida: BrokerHandle, tmp_path: Path):
    _scale_out(noida, kill=False, tmp=tmp_path)


def test_killed_worker_partitions_move(tansu: BrokerHandle, tmp_path: Path):
    _scale_out(tansu, kill=True, tmp=tmp_path)
