"""End-to-end latency at 50% of max throughput, with a batch/max-wait sweep.

For each batch size the worker's max throughput is measured first (Kafka in and out on the
same local broker, flat out on pre-seeded events: on 2 cores the broker competes with the
encoder, so the bare encoder's rate would overstate it). A paced producer then sends CrisisMMD
events at half that rate; latency is
from the send to the worker publishing the labelled event (``on_batch``, i.e. produce called,
before the broker's ack). Goal: p99 <= max_wait + 2 x (inference time of a full batch).

    .venv/bin/python bench/latency.py           # 2 x 2 sweep, ~8 s of traffic each
    .venv/bin/python bench/latency.py --full    # 3 x 3 sweep, 30 s each
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from common import BUNDLE, crisis_texts, met, table
from confluent_kafka import Producer
from pipeline import events, kafka_rate, settings_for

from stream.local.broker import LocalBroker
from stream.models.bundle import load_bundle
from stream.ops.admin import ensure_topics
from stream.pipeline import Pipeline
from stream.runtime import consumer_conf
from stream.schemas import LabeledEvent
from stream.sinks import KafkaSink
from stream.sources import KafkaSource
from stream.worker import Worker


def batch_time(pipe: Pipeline, texts: Sequence[str], batch: int, reps: int = 5) -> float:
    """Median seconds to encode + label one full batch."""
    times = []
    for i in range(reps):
        chunk = texts[i * batch : (i + 1) * batch]
        t0 = time.perf_counter()
        pipe.bundle.encoder.encode(chunk)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def one(
    bootstrap: str,
    pipe: Pipeline,
    texts: Sequence[str],
    batch: int,
    wait_ms: int,
    secs: float,
    pace: float,
    overrides: dict[str, Any],
) -> dict[str, float]:
    """Latency percentiles of events produced at ``pace`` events/s through one worker built
    from ``settings_for(..., **overrides)``."""
    bt = batch_time(pipe, texts, batch)
    n = max(batch * 2, int(pace * secs))
    s = settings_for(bootstrap, batch_max_events=batch, batch_max_wait_ms=wait_ms, **overrides)
    ensure_topics(s.kafka_common(), {s.input_topic: 1, **dict.fromkeys(s.output_topics(), 1)})
    sent: dict[str, float] = {}
    lat: list[float] = []

    def on_batch(outs: list[LabeledEvent]) -> None:
        now = time.perf_counter()
        lat.extend(now - sent[o.id] for o in outs)

    worker = Worker(
        s,
        KafkaSource(consumer_conf(s), [s.input_topic]),
        KafkaSink(s.kafka_common()),
        pipe,
        on_batch=on_batch,
    )
    th = threading.Thread(target=worker.run, kwargs={"stop_after": n, "idle_timeout_s": 60})
    th.start()
    deadline = time.monotonic() + 60
    while not worker.source.ready and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "log_level": 3})
    t0 = time.perf_counter()
    for i in range(n):
        target = t0 + i / pace
        while (d := target - time.perf_counter()) > 0:
            time.sleep(d)
        eid = f"l{i}"
        sent[eid] = time.perf_counter()
        p.produce(s.input_topic, orjson.dumps({"id": eid, "text": texts[i % len(texts)]}))
        p.poll(0)
    p.flush(30)
    th.join(120)
    ms = np.array(lat) * 1000
    goal = wait_ms + 2 * bt * 1000
    return {
        "n": len(ms),
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "batch_ms": bt * 1000,
        "goal": goal,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--broker", choices=["noida", "tansu"], default="noida")
    ap.add_argument("--fetch-wait-ms", type=int, help="consumer fetch.wait.max.ms (default: 500)")
    ap.add_argument("--batches", help="comma-separated batch sizes to sweep")
    ap.add_argument(
        "--interval-commits",
        action="store_true",
        help="commit on librdkafka's timer instead of after every batch (the default)",
    )
    args = ap.parse_args()
    kafka: dict[str, object] = {}
    if args.fetch_wait_ms is not None:
        kafka["fetch.wait.max.ms"] = str(args.fetch_wait_ms)
    overrides: dict[str, Any] = {"kafka": kafka}
    if args.interval_commits:
        overrides["commit_every_batch"] = False
    batches, waits, secs = (
        ([8, 32, 64], [25, 50, 100], 30.0) if args.full else ([8, 32], [50, 100], 8.0)
    )
    if args.batches:
        batches = [int(b) for b in args.batches.split(",")]
    texts = crisis_texts(["dev"])
    pipe = Pipeline(load_bundle(BUNDLE, batch_size=max(batches)), 5, None)
    pipe.bundle.encoder.encode(texts[:64])  # warm-up
    rows = []
    with LocalBroker(args.broker) as broker:
        for b in batches:
            pipe.bundle.encoder.batch_size = b
            flat_out = events(texts[: max(1500, 30 * b)], f"max{b}")
            max_rate = kafka_rate(
                broker.bootstrap, pipe, flat_out, b, batch_max_wait_ms=100, **overrides
            )
            pace = 0.5 * max_rate  # events/s: half the worker's measured max at this batch size
            for w in waits:
                r = one(broker.bootstrap, pipe, texts, b, w, secs, pace, overrides)
                rows.append(
                    [
                        b,
                        w,
                        f"{max_rate:.0f}",
                        f"{pace:.0f}",
                        int(r["n"]),
                        f"{r['p50']:.0f}",
                        f"{r['p95']:.0f}",
                        f"{r['p99']:.0f}",
                        f"{r['batch_ms']:.0f}",
                        f"{r['goal']:.0f}",
                        f"{r['p99'] / r['goal']:.2f}",
                        met(r["p99"], r["goal"], higher=False),
                    ]
                )
    print(
        f"latency at 50% of the worker's max throughput on {args.broker}, "
        f"fetch.wait.max.ms {args.fetch_wait_ms or 'default (500)'}, "
        f"{'interval' if args.interval_commits else 'per-batch'} commits "
        "(ms; p99/goal is the load-independent figure)"
    )
    print(
        table(
            [
                "batch",
                "max wait ms",
                "max events/s",
                "events/s sent",
                "n",
                "p50",
                "p95",
                "p99",
                "batch inference ms",
                "goal p99 <=",
                "p99 / goal",
                "status",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
