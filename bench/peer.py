"""crisis-stream against the labellers a competent ML engineer would write instead of it.

Same CrisisMMD texts, same process, same local broker, the same multilingual-e5-small weights
and the same two trained heads for every labeller:

* sentence-transformers peer: ``SentenceTransformer`` on the fp32 weights the bundle was built
  from (``stream.build.e5.e5_dir``, loaded offline), fp32 torch, ``encode(texts,
  batch_size=32, normalize_embeddings=True)`` (mean pooling, as e5), no rationales.
* onnxruntime fp32 peer: the bundle's own fp32 ONNX export with default session options
  (intra-op threads = cores), HF tokenizers padding each batch to its longest text, mean pooling
  and normalisation in numpy, batch 32: the export an engineer using optimum would run.
* ours: the worker as ``bench/pipeline.py`` runs it (int8 encoder, rationales on).
* bare int8 encoder: the bundle's ``TextEncoder`` on the same texts, batch 32, no Kafka.

Both peers read the bundle's ``tokenizer.json`` (e5's ``query:`` prefix and the dropped links
the heads were trained with: without them a peer tokenizes links into ~7 pieces each, does more
work and labels other text) and apply the heads in full: ``bundle.analyse(texts)`` and
``head.predict``, the TF-IDF term of the hybrid heads included, so a label differs from ours
only through the encoder (fp32 vs int8). The peers' Kafka loop: ``consume(num_messages=32)``,
label, produce the JSON outputs, flush, synchronous commit, per batch; their consumers get the
worker's prefetch properties (``stream.runtime.consumer_conf``) so that noida-db's empty-fetch
loop (docs/brokers.md) costs them what it costs the worker, nothing. Events/s run from the first
record received to the last output acknowledged and committed (group joins and seeding are not
throughput). Rounds rotate the labellers' order; the table gives the median events/s and the
median of each round's ratio.

    .venv/bin/python bench/peer.py                         # 2,000 events, noida and tansu
    .venv/bin/python bench/peer.py --full --rounds 3 --out bench/results/FILE.txt

The peers label at 7-20 events/s on a shared 2-core machine: ``--full`` (20,000 events per
labeller, broker and round) takes hours there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from common import BUNDLE, crisis_texts, machine, met, repeat_to, table, write_result
from confluent_kafka import Consumer, Producer
from pipeline import bare_rate, events, kafka_run, seed, settings_for

from stream.local.broker import BrokerKind, LocalBroker
from stream.local.demo import read_topic
from stream.models.bundle import Bundle, load_bundle
from stream.ops.admin import ensure_topics
from stream.pipeline import Pipeline
from stream.runtime import consumer_conf
from stream.schemas import LabeledEvent
from stream.sources.kafka import close_consumer

BATCH = 32
Encode = Callable[[list[str]], np.ndarray]  # texts -> L2-normalised embeddings [N, D]
Labels = dict[str, dict[str, str]]  # event id -> task -> label


@dataclass
class Run:
    """One labeller's events/s in each round, and its labels from the first round."""

    rates: list[float] = field(default_factory=list)
    labels: Labels = field(default_factory=dict)


def st_dir(bundle: Bundle, out: Path) -> Path:
    """A sentence-transformers directory: the e5 weights the bundle was built from (cut to its
    layers), linked, and the bundle's tokenizer (``tokenizer_config.json`` keeps transformers
    from rebuilding it from the vocabulary, which drops the prefix template and the link
    normaliser)."""
    from stream.build.e5 import e5_dir
    from stream.build.encoders import first_layers_dir

    layers = (bundle.manifest.text_encoder.model_extra or {}).get("layers")
    src = first_layers_dir(e5_dir(), layers) if layers else e5_dir()
    for name in ("config.json", "model.safetensors"):
        (out / name).symlink_to(src / name)
    (out / "tokenizer.json").symlink_to(
        bundle.path.resolve() / bundle.manifest.text_encoder.tokenizer
    )
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    conf = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 128, **special}
    (out / "tokenizer_config.json").write_bytes(orjson.dumps(conf))
    return out


def st_encoder(bundle: Bundle, workdir: Path) -> Encode:
    os.environ["HF_HUB_OFFLINE"] = "1"
    # quiet: the pooler e5 never uses, a tokenizer regex false alarm, progress bars
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(st_dir(bundle, workdir)), device="cpu")
    model.max_seq_length = bundle.manifest.text_encoder.max_length

    def encode(texts: list[str]) -> np.ndarray:
        out = model.encode(texts, batch_size=BATCH, normalize_embeddings=True)
        return np.asarray(out, np.float32)

    return encode


def ort_encoder(bundle: Bundle) -> Encode:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    spec = bundle.manifest.text_encoder
    tok = Tokenizer.from_file(str(bundle.path / spec.tokenizer))
    tok.enable_truncation(spec.max_length)
    tok.enable_padding(pad_id=tok.token_to_id("<pad>"), pad_token="<pad>")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(str(bundle.path / spec.files["fp32"]), opts)
    names = {i.name for i in session.get_inputs()}

    def encode(texts: list[str]) -> np.ndarray:
        encs = tok.encode_batch(texts)
        ids = np.array([e.ids for e in encs], np.int64)
        mask = np.array([e.attention_mask for e in encs], np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = session.run(None, feeds)[0]
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return np.asarray(pooled / np.linalg.norm(pooled, axis=1, keepdims=True), np.float32)

    return encode


def label(bundle: Bundle, emb: np.ndarray, texts: list[str]) -> list[dict[str, Any]]:
    """Each text's label and probability per task, from the bundle's heads in full."""
    analyses = bundle.analyse(texts)
    out: list[dict[str, Any]] = [{} for _ in texts]
    for head in bundle.heads:
        res = head.predict(emb, analyses)
        for i, (p, probs) in enumerate(zip(res.pred, res.probs, strict=True)):
            out[i][head.task] = {"label": head.labels[p], "score": float(probs[p])}
    return out


def peer_run(bootstrap: str, bundle: Bundle, encode: Encode, values: list[bytes]) -> Run:
    """The peer's Kafka worker on ``values`` in fresh topics: events/s and its labels."""
    s = settings_for(bootstrap)
    ensure_topics(s.kafka_common(), {s.input_topic: 1, s.output_topic: 1})
    seed(bootstrap, s.input_topic, values)
    worker_conf = consumer_conf(s)
    prefetch = {k: worker_conf[k] for k in ("queued.min.messages", "fetch.queue.backoff.ms")}
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": s.group_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": s.session_timeout_ms,  # tansu joins after half of it
            "log_level": 3,
            **prefetch,
        }
    )
    consumer.subscribe([s.input_topic])
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 3})
    run, first = Run(), 0.0
    while len(run.labels) < len(values):
        msgs = [m for m in consumer.consume(num_messages=BATCH, timeout=0.1) if not m.error()]
        if not msgs:
            continue
        first = first or time.perf_counter()
        docs = [orjson.loads(m.value() or b"{}") for m in msgs]
        texts = [d["text"] for d in docs]
        for d, labels in zip(docs, label(bundle, encode(texts), texts), strict=True):
            producer.produce(s.output_topic, orjson.dumps({"id": d["id"], "labels": labels}))
            run.labels[d["id"]] = {task: v["label"] for task, v in labels.items()}
        producer.flush()
        consumer.commit(asynchronous=False)
    run.rates.append(len(values) / (time.perf_counter() - first))
    close_consumer(consumer)
    return run


def ours_run(bootstrap: str, pipe: Pipeline, values: list[bytes]) -> Run:
    """The worker (bench/pipeline.py's run) and the labels it published."""
    rate, s = kafka_run(bootstrap, pipe, values, BATCH)
    outs = read_topic(bootstrap, s.output_topic, len(values))
    labels = {}
    for raw in outs:
        o = LabeledEvent.model_validate_json(raw)
        labels[o.id] = {task: t.label for task, t in o.labels.items()}
    return Run([rate], labels)


def bare_run(pipe: Pipeline, texts: Sequence[str]) -> Run:
    return Run([bare_rate(pipe, texts, BATCH)])


def agreement(ours: Labels, peer: Labels, task: str) -> float:
    """Share of the events both labelled on which ``peer`` gives ``task`` the label ours does."""
    ids = ours.keys() & peer.keys()
    return sum(ours[i][task] == peer[i][task] for i in ids) / max(len(ids), 1)


NAMES = ("ST peer (fp32 torch)", "onnx-fp32 peer", "ours (worker)", "bare int8 encoder")
OURS = NAMES[2]


def broker_rounds(
    kind: BrokerKind, jobs: dict[str, Callable[[str], Run]], rounds: int
) -> dict[str, Run]:
    """Every labeller once per round, the order rotated by one each round."""
    runs = {name: Run() for name in jobs}
    order = list(jobs)
    with LocalBroker(kind) as broker:
        for r in range(rounds):
            for name in order[r % len(order) :] + order[: r % len(order)]:
                got = jobs[name](broker.bootstrap)
                runs[name].rates += got.rates
                runs[name].labels = runs[name].labels or got.labels
                print(f"  {kind} round {r + 1}: {name} {got.rates[0]:.1f} events/s", flush=True)
    return runs


def ratio(runs: dict[str, Run], name: str) -> float:
    """Median over rounds of ours / ``name`` in the same round."""
    pairs = zip(runs[OURS].rates, runs[name].rates, strict=True)
    return statistics.median(a / b for a, b in pairs)


def agreement_rows(runs: dict[str, Run]) -> list[list[object]]:
    """Per pair: the informative and humanitarian agreement, and the informative goal: fp32
    against int8 with the same heads, > 95 %."""
    pairs = [(OURS, NAMES[0]), (OURS, NAMES[1]), (NAMES[0], NAMES[1])]
    rows: list[list[object]] = []
    for a, b in pairs:
        inf, hum = (agreement(runs[a].labels, runs[b].labels, t) for t in TASKS)
        rows.append([f"{b} vs {a}", inf, hum, met(inf, 0.95)])
    return rows


TASKS = ("informative", "humanitarian")


def report(kind: str, runs: dict[str, Run]) -> list[str]:
    rates = [[name, statistics.median(runs[name].rates), len(runs[name].rates)] for name in NAMES]
    ratios = [[f"ours / {name}", ratio(runs, name)] for name in NAMES if name != OURS]
    return [
        f"## {kind}\n",
        table(["labeller", "events/s (median)", "rounds"], rates),
        "",
        table(["ratio (median of rounds)", "value"], ratios),
        "",
        table(["labels agreeing", *TASKS, "informative > 0.95"], agreement_rows(runs)),
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--full", action="store_true", help="20,000 events")
    ap.add_argument("--brokers", default="noida,tansu")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", help="also write the report to this file")
    args = ap.parse_args()
    n = 20_000 if args.full else args.events
    texts = repeat_to(crisis_texts(), n)
    values = events(texts, "p")
    pipe = Pipeline(load_bundle(BUNDLE, batch_size=BATCH), 5, None)
    bundle = pipe.bundle
    tok = bundle.encoder.tokenizer
    tokens = statistics.fmean(len(e.ids) for e in tok.encode_batch(texts))
    with tempfile.TemporaryDirectory() as d:
        st, onnx = st_encoder(bundle, Path(d)), ort_encoder(bundle)
        for enc in (st, onnx):
            enc(texts[:BATCH])  # warm-up
        bare_rate(pipe, texts[:BATCH], BATCH)
        jobs: dict[str, Callable[[str], Run]] = {
            NAMES[0]: lambda b: peer_run(b, bundle, st, values),
            NAMES[1]: lambda b: peer_run(b, bundle, onnx, values),
            NAMES[2]: lambda b: ours_run(b, pipe, values),
            NAMES[3]: lambda _b: bare_run(pipe, texts),
        }
        head = [
            machine(),
            f"{n} CrisisMMD events (texts repeated to the count), batch {BATCH}, "
            f"{tokens:.1f} tokens per tweet (mean, bundle tokenizer), {args.rounds} round(s)\n",
        ]
        print("\n".join(head), flush=True)
        lines = list(head)
        for kind in args.brokers.split(","):
            lines += report(kind, broker_rounds(kind, jobs, args.rounds))
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        write_result(args.out, text)


if __name__ == "__main__":
    main()
