"""The adaptation loop on a real broker: answers in, an adapted bundle serving within a minute,
bad answers dead-lettered, and no answer lost when the service is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from stream.ops.admin import ensure_topics
from stream.schemas import FeedbackEvent

from .adapt_data import answers, flood, traffic
from .conftest import REPO, BrokerHandle
from .kafka_utils import TopicReader
from .worker_proc import WorkerProcess, worker_env

pytestmark = pytest.mark.kafka


class AdaptProcess:
    """``crisis-stream adapt`` as a child process, its log in a file."""

    def __init__(self, env: dict[str, str], out: Path, log: Path) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("CRISIS_")}
        full.update(env, PYTHONUNBUFFERED="1")
        args = ["--out", str(out), "--every", "20", "--interval", "3", "--min-answers", "10"]
        self.log = log
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream", "adapt", *args],
                cwd=REPO,
                env=full,
                stdout=f,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def _send(bootstrap: str, topic: str, items: list[FeedbackEvent], extra: list[bytes] = ()) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "log_level": 3})
    for a in items:
        p.produce(topic, key=a.event_id.encode(), value=a.model_dump_json().encode())
    for raw in extra:
        p.produce(topic, key=b"bad", value=raw)
    assert p.flush(30) == 0


def _manifest(out: Path) -> dict:
    return orjson.loads((out / "current" / "manifest.json").read_bytes())


def _wait_for_version(out: Path, number: int, proc: AdaptProcess, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (out / "current").exists():
            m = _manifest(out)
            if m.get("adaptation", {}).get("number", -1) >= number:
                return m
        assert proc.proc.poll() is None, proc.log.read_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no version {number} in {timeout_s} s\n{proc.log.read_text()[-3000:]}")


def test_answers_reach_the_worker_within_a_minute_and_survive_a_crash(
    noida: BrokerHandle, tmp_path: Path
):
    s = noida.settings(feedback_topic=f"fb-{os.urandom(4).hex()}")
    ensure_topics(
        s.kafka_common(),
        {s.input_topic: 1, s.output_topic: 1, s.review_topic or "": 1, s.dlq_topic: 1}
        | {s.feedback_topic: 2},
    )
    out = tmp_path / "adapted"
    env = worker_env(s, CRISIS_FEEDBACK_TOPIC=s.feedback_topic)
    adapter = AdaptProcess(env, out, tmp_path / "adapt.log")
    _wait_for_version(out, 0, adapter, 90)  # the base, published before any answer
    worker = WorkerProcess(
        {**env, "CRISIS_BUNDLE": str(out / "current"), "CRISIS_RELOAD_INTERVAL_S": "1"},
        tmp_path / "worker.log",
    )
    labelled = TopicReader(s.bootstrap_servers, s.output_topic)
    feeder = Producer({"bootstrap.servers": s.bootstrap_servers, "log_level": 3})
    try:
        worker.wait_for_log("starting", 90)
        sent = answers(20)
        _send(s.bootstrap_servers, s.feedback_topic, sent)
        t_answer = time.monotonic()
        adapted_at = None
        i = 0
        while adapted_at is None and time.monotonic() - t_answer < 90:
            text = traffic(500 + i) if i % 2 else flood(500 + i)
            feeder.produce(s.input_topic, orjson.dumps({"id": f"ev-{i}", "text": text}))
            feeder.flush(5)
            i += 1
            labelled.poll(0.5)
            for r in labelled.records:
                if "+adapt." in r["model"]["version"]:
                    adapted_at = time.monotonic()
                    break
        assert adapted_at is not None, adapter.log.read_text()[-3000:]
        latency = adapted_at - t_answer
        assert latency <= 60, f"first adapted output {latency:.1f} s after the answers"
        print(f"first output of the adapted bundle {latency:.1f} s after the answers")
        first = next(r for r in labelled.records if "+adapt." in r["model"]["version"])
        if "Traffic" in first["text"]:
            assert first["labels"]["informative"]["label"] == "not_informative"
        versions = {r["model"]["version"] for r in labelled.records}
        assert any("+adapt." not in v for v in versions), "outputs before the swap keep the base"
        labelled.until(i, 30, settle_s=0)  # nothing lost across the swap
        assert {f"ev-{k}" for k in range(i)} <= {r["id"] for r in labelled.records}

        # a crash: answers sent while the service is down, and one it cannot use
        adapter.kill()
        later = answers(7)
        _send(s.bootstrap_servers, s.feedback_topic, later, extra=[b"{not json"])
        adapter = AdaptProcess(env, out, tmp_path / "adapt.log")
        manifest = _wait_for_version(out, 2, adapter, 90)
        assert manifest["adaptation"]["answers_received"] == 27
        journal = [
            orjson.loads(line) for line in (out / "feedback.jsonl").read_bytes().splitlines()
        ]
        assert sorted(a["id"] for a in journal) == sorted(a.id for a in sent + later)
        dead = TopicReader(s.bootstrap_servers, s.dlq_topic).until(1, 20)
        assert [d["error"]["kind"] for d in dead] == ["not_json"]
        assert adapter.stop() == 0
    finally:
        labelled.close()
        worker.kill()
        if adapter.proc.poll() is None:
            adapter.kill()
