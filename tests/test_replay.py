"""Replay on a real broker (noida-db: the one with a correct offsets_for_times): time windows
and offset ranges select exactly their records, and live consumer groups are left untouched."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from stream.cli.replay import replay as replay_cmd
from stream.errors import ConfigError
from stream.models.bundle import Bundle
from stream.ops.admin import ensure_topics
from stream.pipeline import Pipeline
from stream.replay.reader import Bound, ReplaySource, parse_bound, parse_time, read_range
from stream.replay.run import SinkTarget, parse_sink, replay
from stream.runtime import make_sink, make_source
from stream.worker import Worker

from .conftest import BUNDLE, BrokerHandle
from .kafka_utils import create_topics, make_events, seed

PARTS = 3


# -- bounds ---------------------------------------------------------------------------------
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_iso_and_epoch_ms_parse_to_the_same_instant(dt: datetime):
    dt = dt.replace(microsecond=dt.microsecond // 1000 * 1000, tzinfo=UTC)
    ms = parse_time(dt.isoformat())
    assert ms == (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert parse_bound(f"ts:{ms}") == Bound("ts", ms) == parse_bound(f"ts:{dt.isoformat()}")


def test_bounds_and_sinks_parse_or_fail_loudly():
    assert parse_bound("beginning") == Bound("beginning")
    assert parse_bound("end") == Bound("end")
    assert parse_bound("offset:12") == Bound("offset", 12)
    assert parse_bound("ts:2017-09-01T00:00:00") == Bound("ts", 1504224000000)  # naive = UTC
    assert parse_bound("ts:2017-09-01T02:00:00+02:00") == Bound("ts", 1504224000000)
    for bad in ("offset:-1", "offset:x", "ts:yesterday", "ts:", "latest", ""):
        with pytest.raises(ConfigError):
            parse_bound(bad)
    assert parse_sink("topic:x.y") == SinkTarget("topic", "x.y")
    assert parse_sink("file:/tmp/a.jsonl").dlq == "/tmp/a.jsonl.dlq.jsonl"
    assert SinkTarget("topic", "lab").dlq == "lab.dlq"
    for bad in ("kafka", "dir:/tmp", "topic:"):
        with pytest.raises(ConfigError):
            parse_sink(bad)


# -- helpers --------------------------------------------------------------------------------
def _produce_timed(bootstrap: str, topic: str, base_ms: int, stamps: list[tuple[int, int]]) -> None:
    """Event ``t<i>`` at ``base_ms + stamps[i][1]`` on partition ``stamps[i][0]``."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 3})
    for i, (part, dt) in enumerate(stamps):
        value = orjson.dumps({"id": f"t{i}", "text": f"flood water rising near bridge {i}"})
        p.produce(topic, value=value, key=f"t{i}".encode(), partition=part, timestamp=base_ms + dt)
    assert p.flush(30) == 0


def _ids(path: Path) -> list[str]:
    return [orjson.loads(line)["id"] for line in path.read_bytes().splitlines()]


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(PARTS)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


# -- on a broker ----------------------------------------------------------------------------
@pytest.mark.kafka
def test_replay_by_timestamp_selects_exactly_the_window(
    noida: BrokerHandle, bundle: Bundle, tmp_path: Path
):
    settings = noida.settings()
    ensure_topics(settings.kafka_common(), {settings.input_topic: PARTS})
    # one event per second for 60 s, round-robin over the partitions, an hour ago (within any
    # retention); plus a late record on partition 0 whose timestamp lies before the window
    # although its offset lies inside the window's offset range
    base = (int(time.time()) - 3_600) * 1000  # whole seconds: exact as ISO 8601 below
    stamps = [(i % PARTS, i * 1000) for i in range(60)]
    stamps.insert(25, (0, 2_000))  # t25: late arrival, out of the window
    _produce_timed(noida.bootstrap, settings.input_topic, base, stamps)
    start, end = base + 20_000, base + 40_000  # [20 s, 40 s): the events at 20..39 s
    out = tmp_path / "window.jsonl"
    res = replay(
        settings,
        settings.input_topic,
        parse_bound(f"ts:{start}"),
        parse_bound(f"ts:{datetime.fromtimestamp(end / 1000, UTC).isoformat()}"),
        SinkTarget("file", str(out)),
        Pipeline(bundle),
        quiet=True,
    )
    expected = {f"t{i}" for i, (_, dt) in enumerate(stamps) if start <= base + dt < end}
    assert len(expected) == 20 and "t25" not in expected
    got = _ids(out)
    assert sorted(got) == sorted(expected)  # each exactly once
    assert res.complete and res.skipped_out_of_window == 1
    stamps_out = [orjson.loads(x)["origin"]["timestamp"] for x in out.read_bytes().splitlines()]
    assert all(start <= ts < end for ts in stamps_out)
    assert {orjson.loads(x)["origin"]["partition"] for x in out.read_bytes().splitlines()} == {
        0,
        1,
        2,
    }


@pytest.mark.kafka
def test_replay_by_offsets_into_a_topic_with_dead_letters(noida: BrokerHandle, bundle: Bundle):
    settings = noida.settings()
    ensure_topics(settings.kafka_common(), {settings.input_topic: PARTS})
    p = Producer({"bootstrap.servers": noida.bootstrap, "log_level": 3})
    for part in range(PARTS):
        for off in range(12):
            bad = part == 1 and off == 7
            value = b"not json" if bad else orjson.dumps({"id": f"p{part}-{off}", "text": "fire"})
            p.produce(settings.input_topic, value=value, partition=part)
    assert p.flush(30) == 0
    name = f"replayed-{settings.output_topic}"
    res = replay(
        settings,
        settings.input_topic,
        Bound("offset", 5),
        Bound("offset", 10),
        SinkTarget("topic", name),
        Pipeline(bundle),
        quiet=True,
    )
    assert res.total == 15 and res.complete
    assert res.stats.labeled == 14 and res.stats.dead_letters == 1
    out = [orjson.loads(r.value or b"") for r in read_range(settings.kafka_common(), name)]
    assert sorted((o["origin"]["partition"], o["origin"]["offset"]) for o in out) == sorted(
        (part, off) for part in range(PARTS) for off in range(5, 10) if (part, off) != (1, 7)
    )
    assert {o["model"]["bundle"] for o in out} == {bundle.manifest.name}
    dlq = [orjson.loads(r.value or b"") for r in read_range(settings.kafka_common(), f"{name}.dlq")]
    assert [(d["origin"]["partition"], d["origin"]["offset"], d["error"]["kind"]) for d in dlq] == [
        (1, 7, "not_json")
    ]
    with pytest.raises(ConfigError, match="cannot replay topic"):
        ReplaySource(settings.kafka_common(), f"missing-{name}", Bound("beginning"), Bound("end"))
    with pytest.raises(ConfigError, match="cannot write into"):
        replay(settings, name, Bound("beginning"), Bound("end"), SinkTarget("topic", name))
    # past-the-end offsets clamp to what exists at start, and an empty range ends at once
    empty = ReplaySource(
        settings.kafka_common(), settings.input_topic, Bound("offset", 50), Bound("end")
    )
    try:
        assert empty.total == 0 and empty.exhausted
    finally:
        empty.close()


@pytest.mark.kafka
def test_a_replay_leaves_live_committed_offsets_untouched(noida: BrokerHandle, bundle: Bundle):
    settings = noida.settings()
    create_topics(settings, PARTS)
    seed(noida.bootstrap, settings.input_topic, make_events(30))
    live = Worker(
        settings, make_source("kafka", settings), make_sink("kafka", settings), Pipeline(bundle)
    )
    assert live.run(stop_after=30, idle_timeout_s=60).completed == 30
    before = _committed(noida.bootstrap, settings.group_id, settings.input_topic)
    assert sum(before.values()) == 30  # the live group committed everything it read
    seed(noida.bootstrap, settings.input_topic, make_events(15, prefix="late"))
    # worst case: the replay's client properties name the live worker's own group
    replay_settings = settings.model_copy(update={"kafka": {"group.id": settings.group_id}})
    res = replay(
        replay_settings,
        settings.input_topic,
        Bound("beginning"),
        Bound("end"),
        SinkTarget("topic", f"bt-{settings.output_topic}"),
        Pipeline(bundle),
        quiet=True,
    )
    assert res.stats.labeled == 45 and res.complete
    after = _committed(noida.bootstrap, settings.group_id, settings.input_topic)
    assert after == before


@pytest.mark.kafka
def test_replay_command_shows_progress_and_stops_by_itself(noida: BrokerHandle, tmp_path: Path):
    settings = noida.settings()
    ensure_topics(settings.kafka_common(), {settings.input_topic: PARTS})
    seed(noida.bootstrap, settings.input_topic, make_events(40))
    out = tmp_path / "cli.jsonl"
    result = CliRunner().invoke(
        replay_cmd,
        [
            "--topic",
            settings.input_topic,
            "--bootstrap",
            noida.bootstrap,
            "--bundle",
            str(BUNDLE),
            "--sink",
            f"file:{out}",
            "--to",
            "offset:10",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    assert "replay 30/30 (100.0%)" in result.stderr and "ETA" in result.stderr
    assert "30 labelled, 0 dead letters" in result.stdout
    assert len(_ids(out)) == 30
