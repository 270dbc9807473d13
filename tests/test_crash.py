"""Crash test on a real broker: the worker runs as a child process and is SIGKILLed again and
again, restarted each time; afterwards every input id is in the labelled or the DLQ topic and
duplicates stay within the uncommitted window per crash: two batches in the default
``commit_every_batch`` mode (the batch in progress and the one whose commit may still be
unanswered), the in-flight cap plus two commit intervals in interval mode.

Kills are seeded and come in three kinds, so the dangerous windows are hit on purpose, not by
luck: ``mid_batch`` (the test-only hook kills the process after half a batch's outputs were
handed to the producer), ``acked_not_stored`` (outputs acknowledged by the broker, their input
offsets not yet stored, let alone committed), ``stored_not_committed`` (stored, the
commit not yet sent; per-batch mode only) and ``timer`` (an external SIGKILL at a
random moment 0-3 s after the process produced its first output, mostly between produce and
commit). Each output names the process that wrote it
(``worker``), so duplicates are attributed to the crash that preceded them exactly.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from stream.settings import Settings

from .conftest import BrokerHandle
from .kafka_utils import TopicReader, create_topics, make_events, seed
from .worker_proc import WorkerProcess, worker_env

pytestmark = pytest.mark.kafka

MAX_IN_FLIGHT = 64  # outputs; 2 per event (labelled + review) -> at most 32 events unacked
BATCH = 16
COMMIT_INTERVAL_S = 0.5


@dataclass
class CrashReport:
    events: int
    kills: list[str] = field(default_factory=list)
    dups_per_crash: list[int] = field(default_factory=list)
    dlq_dups: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    per_batch: bool = True

    def bound(self) -> int:
        """Per-batch commits: the batch in progress and the one before it (its commit is
        sent without waiting for the answer). Interval commits: events unacked (in-flight cap)
        plus what completes in two commit intervals (librdkafka's commit is asynchronous) plus
        one batch in progress."""
        if self.per_batch:
            return 2 * BATCH
        return MAX_IN_FLIGHT // 2 + int(self.rate * 2 * COMMIT_INTERVAL_S) + BATCH


def _inputs(n: int) -> tuple[list[bytes], set[str]]:
    """``n`` events, 1 in 50 too long (dead-lettered with its id)."""
    values = make_events(n)
    for i in range(0, n, 50):
        values[i] = orjson.dumps({"id": f"e-{i}", "text": "x" * 5000})
    return values, {f"e-{i}" for i in range(n)}


def _kill_kinds(kills: int, rng: random.Random, per_batch: bool) -> list[str]:
    """``kills`` kill points, each kind in turn, in seeded random order."""
    points = ("mid_batch", "acked_not_stored", "timer")
    if per_batch:
        points += ("stored_not_committed",)
    kinds = [points[k % len(points)] for k in range(kills)]
    rng.shuffle(kinds)
    return kinds


@dataclass
class _Outputs:
    """Readers of the labelled and the DLQ topic."""

    out: TopicReader
    dlq: TopicReader

    def seen(self) -> set[str]:
        return {o["id"] for o in self.out.records} | {d["id"] for d in self.dlq.records}

    def pump(self, proc: WorkerProcess, until: float) -> None:
        while time.monotonic() < until and proc.alive():
            self.out.poll(0.1)
            self.dlq.poll(0.05)


def _crash_once(
    k: int,
    kind: str,
    settings: Settings,
    extra: dict[str, str],
    rng: random.Random,
    topics: _Outputs,
    tmp: Path,
) -> None:
    """Run worker ``run-k`` until its ``kind`` of kill, and check that the kill happened so."""
    if kind != "timer":
        extra["CRISIS_FAULT_CRASH"] = f"{kind}:{rng.randint(2, 30)}"
    proc = WorkerProcess(worker_env(settings, **extra), tmp / f"worker-{k}.log")
    if kind == "timer":
        mine = len(topics.out.records)
        deadline = time.monotonic() + 120
        while len(topics.out.records) == mine and proc.alive():
            assert time.monotonic() < deadline, proc.log_tail()
            topics.out.poll(0.1)
        topics.pump(proc, time.monotonic() + rng.uniform(0, 3))
    else:
        topics.pump(proc, time.monotonic() + 120)  # the hook kills the process itself
    by_hook = not proc.alive()
    rc = proc.kill()
    assert rc == -9, f"kill {k} ({kind}): exit {rc}\n{proc.log_tail()}"
    assert by_hook == (kind != "timer"), f"kill {k}: the {kind} hook never fired"


def _finish(final: WorkerProcess, ids: set[str], topics: _Outputs, deadline: float) -> None:
    """Let the last worker label every id, then stop it cleanly and drain both topics."""
    while not ids <= topics.seen():
        assert final.alive(), final.log_tail()
        assert time.monotonic() < deadline, f"missing {len(ids - topics.seen())} ids"
        topics.out.poll(0.2)
        topics.dlq.poll(0.05)
    # the earlier runs may have finished every id already: a SIGTERM before the interpreter
    # has even imported the worker would be the default action (-15), not the worker's
    final.wait_for_log('"starting"')
    assert final.terminate() == 0, final.log_tail()
    topics.out.until(0, timeout_s=3, settle_s=1)
    topics.dlq.until(0, timeout_s=2, settle_s=0.5)


def _dups_per_crash(out: TopicReader, kills: int) -> list[int]:
    """Per restart, how many ids it labelled that an earlier run had labelled already."""
    dups: list[int] = []
    earlier: set[str] = set()
    for k in range(kills + 1):
        mine = [o["id"] for o in out.records if o["worker"] == f"run-{k}"]
        assert len(mine) == len(set(mine)), f"run {k} labelled an event twice by itself"
        if k:
            dups.append(len(set(mine) & earlier))
        earlier |= set(mine)
    return dups


def run_crash_scenario(
    handle: BrokerHandle, n: int, kills: int, seed_: int, tmp: Path, per_batch: bool = True
) -> CrashReport:
    settings = handle.settings()
    create_topics(settings)
    values, ids = _inputs(n)
    seed(handle.bootstrap, settings.input_topic, values)
    rng = random.Random(seed_)
    kinds = _kill_kinds(kills, rng, per_batch)
    topics = _Outputs(
        TopicReader(handle.bootstrap, settings.output_topic),
        TopicReader(handle.bootstrap, settings.dlq_topic),
    )
    report = CrashReport(events=n, per_batch=per_batch)
    mode = {"CRISIS_COMMIT_EVERY_BATCH": str(per_batch).lower()}
    t0 = time.monotonic()
    try:
        for k, kind in enumerate(kinds):
            extra = {
                "CRISIS_WORKER_ID": f"run-{k}",
                "CRISIS_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
                **mode,
            }
            _crash_once(k, kind, settings, extra, rng, topics, tmp)
            report.kills.append(kind)
        final = WorkerProcess(
            worker_env(settings, CRISIS_WORKER_ID=f"run-{kills}", **mode),
            tmp / "worker-final.log",
        )
        _finish(final, ids, topics, time.monotonic() + 60 + n / 10)
    finally:
        topics.out.close()
        topics.dlq.close()
    report.seconds = time.monotonic() - t0
    report.rate = n / report.seconds
    assert topics.seen() == ids, "every input id is labelled or dead-lettered; nothing else appears"
    report.dups_per_crash = _dups_per_crash(topics.out, kills)
    dlq = topics.dlq
    report.dlq_dups = sum(c - 1 for c in Counter(d["id"] for d in dlq.records).values())
    print(f"\ncrash report: {json.dumps(report.__dict__)} bound/crash={report.bound()}")
    return report


def _check(report: CrashReport, tmp: Path) -> None:
    (tmp / "crash_report.json").write_text(json.dumps(report.__dict__))
    assert max(report.dups_per_crash) <= report.bound(), report


def test_crash_restart_small(noida: BrokerHandle, tmp_path: Path):
    """Non-slow variant: 1,000 events, one kill of each kind, per-batch commits (default)."""
    _check(run_crash_scenario(noida, 1000, 4, seed_=7, tmp=tmp_path), tmp_path)


@pytest.mark.slow  # per-batch commits (the default) are crash-tested in the default run
def test_crash_restart_small_interval_commits(noida: BrokerHandle, tmp_path: Path):
    """The same with periodic commits (``CRISIS_COMMIT_EVERY_BATCH=false``)."""
    report = run_crash_scenario(noida, 1000, 3, seed_=7, tmp=tmp_path, per_batch=False)
    _check(report, tmp_path)


@pytest.mark.slow
def test_crash_restart_10k_events_20_kills(noida: BrokerHandle, tmp_path: Path):
    _check(run_crash_scenario(noida, 10_000, 20, seed_=2026, tmp=tmp_path), tmp_path)
