"""Record headers on a real broker: outputs say what they are and pass a trace on; dead
letters keep the original key and headers; ``dlq redrive`` sends chosen dead letters back,
once."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
from confluent_kafka import Consumer, Message, Producer

from stream.models.bundle import Bundle
from stream.ops.redrive import redrive
from stream.pipeline import Pipeline
from stream.runtime import make_sink, make_source
from stream.settings import Settings
from stream.sources.kafka import close_consumer
from stream.worker import Worker

from .conftest import BrokerHandle
from .kafka_utils import create_topics

pytestmark = pytest.mark.kafka

TRACE = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _read(bootstrap: str, topic: str, n: int, timeout_s: float = 30.0) -> list[Message]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "log_level": 3,
        }
    )
    c.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out += [m for m in c.consume(100, 0.5) if m.error() is None]
    time.sleep(0.5)
    out += [m for m in c.consume(100, 0.5) if m.error() is None]
    close_consumer(c)
    return out


def _run(settings: Settings, bundle: Bundle, n: int) -> None:
    worker = Worker(
        settings, make_source("kafka", settings), make_sink("kafka", settings), Pipeline(bundle)
    )
    worker.run(stop_after=n, idle_timeout_s=60)


def _headers(msg: Message) -> dict[str, bytes]:
    return {k: v for k, v in (msg.headers() or []) if v is not None}


def test_headers_dead_letters_and_redrive(noida: BrokerHandle, bundle: Bundle):
    settings = noida.settings(max_output_bytes=8000)
    create_topics(settings, input_partitions=1)
    p = Producer({"bootstrap.servers": noida.bootstrap, "log_level": 3})
    tenant = ("x-tenant", b"t1")
    for i in range(3):
        event = orjson.dumps({"id": f"ok-{i}", "text": "bridge collapsed, people trapped"})
        p.produce(
            settings.input_topic,
            event,
            key=f"k{i}".encode(),
            headers=[("traceparent", TRACE), tenant],
        )
    big = orjson.dumps({"id": "big", "text": "flood", "meta": {"pad": "x" * 20_000}})
    p.produce(settings.input_topic, big, key=b"big-key", headers=[tenant])
    p.produce(settings.input_topic, b"{not json", key=b"bad-key", headers=[tenant])
    assert p.flush(30) == 0
    _run(settings, bundle, 5)

    outputs = _read(noida.bootstrap, settings.output_topic, 3)
    assert len(outputs) == 3
    h = _headers(outputs[0])
    assert h["content-type"] == b"application/json"
    assert h["crisis.contract"] == b"labeled_event/1"
    assert h["crisis.model.version"] == bundle.info["version"].encode()
    assert h["traceparent"] == TRACE and "x-tenant" not in h  # the trace only passes on

    dead = {m.key(): m for m in _read(noida.bootstrap, settings.dlq_topic, 2)}
    assert set(dead) == {b"big-key", b"bad-key"}  # the records' own keys
    big_dl = _headers(dead[b"big-key"])
    assert big_dl["x-tenant"] == b"t1" and big_dl["crisis.error.kind"] == b"too_large"
    assert big_dl["crisis.origin.offset"] == b"3"

    conf = settings.kafka_common()
    first = redrive(conf, settings.dlq_topic, settings.input_topic, {"too_large"}, timeout_s=10)
    assert (first.read, first.sent, first.other_kind) == (2, 1, 1)
    again = redrive(conf, settings.dlq_topic, settings.input_topic, {"too_large"}, timeout_s=5)
    assert again.read == 0 and again.sent == 0  # already re-sent: nothing twice

    inputs = _read(noida.bootstrap, settings.input_topic, 6)
    back = inputs[-1]
    assert back.key() == b"big-key" and back.value() == big
    hb = _headers(back)
    assert hb["x-tenant"] == b"t1" and "crisis.error.kind" not in hb
    assert hb["crisis.redrive.of"] == f"{settings.dlq_topic}/0/{dead[b'big-key'].offset()}".encode()

    fixed = settings.model_copy(update={"max_output_bytes": 1_000_000})  # the cause, fixed
    _run(fixed, bundle, 1)
    ids = [orjson.loads(m.value())["id"] for m in _read(noida.bootstrap, settings.output_topic, 4)]
    assert sorted(ids) == ["big", "ok-0", "ok-1", "ok-2"]
