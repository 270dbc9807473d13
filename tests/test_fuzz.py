"""Hostile input through the real broker: every bad record lands in the DLQ with a reason,
every good one is labelled, the worker survives and its memory stays bounded.

Hypothesis generates each example (250 hostile records interleaved with 250 good ones); 4
examples make 1,000 hostile records. Shrinking is off: a failing example is reported as drawn
(a broker round trip per shrink step would take hours); ``derandomize`` makes every run draw
the same examples.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from stream.decode import DLQ_RAW_BYTES
from stream.models.bundle import Bundle
from stream.pipeline import Pipeline
from stream.runtime import make_sink, make_source
from stream.worker import Worker

from .conftest import BrokerHandle
from .kafka_utils import create_topics, read_all, seed

pytestmark = pytest.mark.kafka

#: a bad record and the dead-letter reasons it may legitimately get
Hostile = tuple[bytes, set[str]]


def _deep(n: int) -> bytes:
    return b'{"id": "d", "text": ' + b"[" * n + b"]" * n + b"}"


hostile: st.SearchStrategy[Hostile] = st.one_of(
    # invalid UTF-8 / binary garbage
    st.binary(min_size=1, max_size=300)
    .filter(lambda b: not b.strip().startswith(b"{"))
    .map(lambda b: (b, {"not_json", "schema"})),
    st.builds(
        lambda pre: (b'{"id": "u", "text": "' + pre + b'\xff\xfe"}', {"not_json"}),
        st.binary(max_size=20).filter(lambda b: b'"' not in b and b"\\" not in b),
    ),
    # deep JSON (orjson refuses > 1024 levels; shallower nesting is a type error on text)
    st.integers(2, 5000).map(lambda n: (_deep(n), {"not_json", "schema"})),
    # huge strings
    st.integers(4_001, 300_000).map(
        lambda n: (orjson.dumps({"id": "h", "text": "x" * n}), {"too_long"})
    ),
    # wrong types
    st.sampled_from([1, None, True, [1, 2], {"a": 1}, 3.5]).map(
        lambda v: (orjson.dumps({"id": "w", "text": v}), {"schema"})
    ),
    st.sampled_from([[], 5, None, {"x": 1}]).map(
        lambda v: (orjson.dumps({"id": v, "text": "hello"}), {"schema"})
    ),
    st.sampled_from([b"[]", b"42", b'"str"', b"null", b"true"]).map(lambda b: (b, {"schema"})),
    # NUL bytes in text
    st.text(max_size=30).map(lambda t: (orjson.dumps({"id": "n", "text": t + "\x00"}), {"schema"})),
    # empty
    st.sampled_from([b'{"id": "e", "text": ""}', b'{"id": "e"}', b"{}"]).map(
        lambda b: (b, {"empty", "schema"})
    ),
    # giant base64 image with no text and a bad image spec
    st.integers(100_000, 700_000).map(
        lambda n: (orjson.dumps({"id": "g", "image": {"b64": "A" * n, "url": "x"}}), {"schema"})
    ),
)


def _good(i: int, rng: random.Random) -> bytes:
    words = ["flood", "water", "rescue", "bridge", "shelter", "fire", "roads", "power", "help"]
    text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 25)))
    doc: dict[str, object] = {"id": f"good-{i}", "text": text}
    if i % 10 == 0:  # a good event that also carries a giant, undecodable image
        doc["image"] = {"b64": base64.b64encode(os.urandom(300_000)).decode()}
    return orjson.dumps(doc)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


RSS_GROWTH_BOUND_MB = 150  # per round of 500 records; measured <= 51 MB


_FUZZ = {
    "deadline": None,
    "derandomize": True,
    "phases": [Phase.explicit, Phase.generate],
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
}
_BATCH = st.lists(hostile, min_size=250, max_size=250)


@settings(max_examples=4, **_FUZZ)  # type: ignore[arg-type]
@given(_BATCH)
def test_fuzzed_hostile_messages(noida: BrokerHandle, bundle: Bundle, bad: list[Hostile]):
    """4 examples x 250: 1,000 hostile records, 1,000 good ones."""
    _fuzz_round(noida, bundle, bad)


def _fuzz_round(noida: BrokerHandle, bundle: Bundle, bad: list[Hostile]) -> None:
    cfg = noida.settings(batch_max_events=32)
    create_topics(cfg, input_partitions=2)
    rng = random.Random(len(bad))
    good = [_good(i, rng) for i in range(250)]
    records: list[bytes] = []
    expected: dict[int, set[str]] = {}
    for i in range(250):
        records.append(good[i])
        expected[len(records)] = bad[i][1]
        records.append(bad[i][0])
    seed(noida.bootstrap, cfg.input_topic, records)
    rss0 = _rss_mb()
    worker = Worker(cfg, make_source("kafka", cfg), make_sink("kafka", cfg), Pipeline(bundle))
    stats = worker.run(stop_after=len(records), idle_timeout_s=60)
    growth = _rss_mb() - rss0
    assert stats.labeled == 250 and stats.dead_letters == 250
    out = read_all(noida.bootstrap, cfg.output_topic, 250)
    assert sorted(o["id"] for o in out) == sorted(f"good-{i}" for i in range(250))
    for o in out:
        if o["id"].endswith("0") and int(o["id"].split("-")[1]) % 10 == 0:
            assert o["image_error"], "a broken image must be reported, not silently ignored"
    dlq = read_all(noida.bootstrap, cfg.dlq_topic, 250)
    assert len(dlq) == 250
    seed_index = {hashlib.sha256(raw).hexdigest(): i for i, raw in enumerate(records)}
    for d in dlq:
        raw = base64.b64decode(d["raw_b64"])
        i = seed_index[d["raw_sha256"]]  # the whole record's hash: raw_b64 may be truncated
        assert d["error"]["kind"] in expected[i], (raw[:80], d["error"])
        assert records[i].startswith(raw) and d["raw_bytes"] == len(records[i])
        assert d["raw_truncated"] == (len(records[i]) > DLQ_RAW_BYTES)
        assert d["error"]["message"]
    kinds = sorted({d["error"]["kind"] for d in dlq})
    print(f"\nfuzz round: 250 bad {kinds} + 250 good, RSS {rss0:.0f} MB -> +{growth:.0f} MB")
    assert growth < RSS_GROWTH_BOUND_MB, f"RSS grew {growth:.0f} MB"
