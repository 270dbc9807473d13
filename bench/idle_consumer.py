"""What a consumer with nothing to fetch costs on each local broker, by librdkafka setting.

Two cases, one consumer at a time, each on its own one-partition topic:

* idle: an empty topic; once assigned, the consumer polls for ``--seconds`` the way the worker
  does (``consume(1, 50 ms)``).
* busy: a backlog of ``--backlog`` records the consumer has fetched ahead, taken 32 at a time
  with 0.3 s between takes (a stand-in for the encoder's time on a batch): the broker holds no
  more, so every further fetch is empty.

Reported per setting: the process's CPU (librdkafka's threads included), the broker process
group's CPU, Fetch requests per second (librdkafka statistics) and, idle only, the median
produce-to-consume time of single records sent into the idle topic (what a setting costs a
quiet stream). CPU seconds, unlike wall times, stay meaningful on a shared machine.

    .venv/bin/python bench/idle_consumer.py                      # noida and tansu, 10 s each
    .venv/bin/python bench/idle_consumer.py --brokers noida --seconds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from common import group_cpu_s, machine, table, write_result
from confluent_kafka import Consumer, Producer

from stream.local.broker import BrokerKind, LocalBroker
from stream.ops.admin import ensure_topics
from stream.runtime import consumer_conf
from stream.settings import Settings
from stream.sources.kafka import close_consumer

_WORKER = consumer_conf(Settings())
#: the settings tried: librdkafka's defaults, one property changed at a time, the worker's
VARIANTS: dict[str, dict[str, Any]] = {
    "librdkafka defaults": {},
    "fetch.wait.max.ms=100": {"fetch.wait.max.ms": 100},
    "fetch.wait.max.ms=2000": {"fetch.wait.max.ms": 2000},
    "fetch.error.backoff.ms=2000": {"fetch.error.backoff.ms": 2000},
    "fetch.queue.backoff.ms=2000": {"fetch.queue.backoff.ms": 2000},
    "fetch.min.bytes=100000": {"fetch.min.bytes": 100_000},
    "socket.nagle.disable=true": {"socket.nagle.disable": True},
    "worker: queued.min.messages={} + fetch.queue.backoff.ms={}".format(
        _WORKER["queued.min.messages"], _WORKER["fetch.queue.backoff.ms"]
    ): {k: _WORKER[k] for k in ("queued.min.messages", "fetch.queue.backoff.ms")},
}
TAKE, TAKE_EVERY_S = 32, 0.3  # the busy case: a batch, then the encoder's time on it


@dataclass
class Cost:
    """One setting's cost on one broker in one case."""

    client_cores: float
    broker_cores: float
    fetches_per_s: float
    latency_ms: float | None


class FetchCounter:
    """Fetch requests sent so far, from librdkafka's statistics (summed over brokers)."""

    def __init__(self) -> None:
        self.fetches = 0

    def __call__(self, stats_json: str) -> None:
        brokers = json.loads(stats_json).get("brokers", {}).values()
        self.fetches = sum(int(b.get("req", {}).get("Fetch", 0)) for b in brokers)


def _consumer(bootstrap: str, topic: str, extra: dict[str, Any], counter: FetchCounter) -> Any:
    """A consumer that has its partition and, on a topic with records, the first of them."""
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": f"idle-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "statistics.interval.ms": 500,
        "stats_cb": counter,
        "log_level": 3,
        **extra,
    }
    consumer = Consumer(conf)
    assigned: list[bool] = []
    consumer.subscribe([topic], on_assign=lambda _c, parts: assigned.append(bool(parts)))
    deadline = time.monotonic() + 30
    while not any(assigned) and time.monotonic() < deadline:
        consumer.consume(1, 0.05)
    if not any(assigned):
        raise SystemExit(f"no partition assigned within 30 s ({extra})")
    return consumer


def _poll_idle(consumer: Any, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        consumer.consume(1, 0.05)


def _take_slowly(consumer: Any, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        consumer.consume(TAKE, 0)
        time.sleep(TAKE_EVERY_S)


def _latency_ms(consumer: Any, producer: Producer, topic: str, samples: int) -> float:
    """Median time from a produce (acknowledged) to its consume; the poll loop as above."""
    out = []
    for _ in range(samples):
        time.sleep(0.3)  # let the consumer fall idle again
        producer.produce(topic, b"x")
        producer.flush(10)
        t0 = time.perf_counter()
        while not [m for m in consumer.consume(1, 0.05) if m.error() is None]:
            if time.perf_counter() - t0 > 10:
                raise SystemExit("a record took over 10 s to arrive")
        out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(out)


def _seed(bootstrap: str, topic: str, n: int) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 3})
    for i in range(n):
        producer.produce(topic, b"x" * 300)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(30)
    return producer


def measure(broker: LocalBroker, extra: dict[str, Any], backlog: int, args: Any) -> Cost:
    """The cost of ``extra`` idle (``backlog`` 0) or busy on a fresh topic."""
    topic = f"idle-{uuid.uuid4().hex[:8]}"
    ensure_topics({"bootstrap.servers": broker.bootstrap}, {topic: 1})
    producer = _seed(broker.bootstrap, topic, backlog)
    counter = FetchCounter()
    consumer = _consumer(broker.bootstrap, topic, extra, counter)
    loop: Callable[[Any, float], None] = _take_slowly if backlog else _poll_idle
    try:
        loop(consumer, 1.0)  # past the join's own traffic and the first fetches
        own0, cpu0, f0 = time.process_time(), group_cpu_s(broker.pgid), counter.fetches
        t0 = time.perf_counter()
        loop(consumer, args.seconds)
        wall = time.perf_counter() - t0
        own, cpu = time.process_time() - own0, group_cpu_s(broker.pgid) - cpu0
        fetches = counter.fetches - f0
        latency = None if backlog else _latency_ms(consumer, producer, topic, args.samples)
    finally:
        close_consumer(consumer)
    return Cost(own / wall, cpu / wall, fetches / wall, latency)


def run(kind: BrokerKind, names: Sequence[str], args: Any) -> list[list[object]]:
    rows: list[list[object]] = []
    with LocalBroker(kind) as broker:
        cpu0, t0 = group_cpu_s(broker.pgid), time.perf_counter()
        time.sleep(2.0)
        alone = (group_cpu_s(broker.pgid) - cpu0) / (time.perf_counter() - t0)
        rows.append([kind, "-", "(no consumer)", "-", alone, "-", "-"])
        for case, backlog in (("idle", 0), ("busy", args.backlog)):
            for name in names:
                c = measure(broker, VARIANTS[name], backlog, args)
                latency = "-" if c.latency_ms is None else c.latency_ms
                rows.append(
                    [kind, case, name, c.client_cores, c.broker_cores, c.fetches_per_s, latency]
                )
                print(table(HEADERS, rows[-1:]).splitlines()[-1], flush=True)
    return rows


HEADERS = [
    "broker",
    "case",
    "consumer setting",
    "client cores",
    "broker cores",
    "Fetch req/s",
    "idle latency ms (median)",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--brokers", default="noida,tansu")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--backlog", type=int, default=5000, help="records of the busy case")
    ap.add_argument("--samples", type=int, default=5, help="latency samples per setting")
    ap.add_argument("--variants", help="comma-separated names (default: all)")
    ap.add_argument("--out", help="also write the report to this file")
    args = ap.parse_args()
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    head = [
        machine(),
        f"{args.seconds:g} s per setting and case; busy: {args.backlog} records fetched ahead, "
        f"{TAKE} taken every {TAKE_EVERY_S} s; {args.samples} latency samples\n",
    ]
    print("\n".join(head), flush=True)
    rows: list[list[object]] = []
    for kind in args.brokers.split(","):
        rows += run(kind, names, args)
    report = "\n".join([*head, table(HEADERS, rows)])
    print("\n" + report)
    if args.out:
        write_result(args.out, report)


if __name__ == "__main__":
    main()
