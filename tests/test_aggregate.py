"""The faust aggregator: pure counting rules, then the real app against noida-db over HTTP.

The broker test seeds labelled events with known ``created_at`` across windows and event names
(in transactions, so the offsets have gaps, plus two invalid records), checks the JSON views
exactly, renders the HTML page in headless Chromium, checks the committed offsets, restarts the
aggregator (tables rebuilt from the changelogs, nothing counted twice) and feeds it more.

Not covered, on purpose: input that arrives *while* faust recovers at startup, which
faust-streaming 0.15 can skip (upstream issues 596/606; see ``stream/aggregate/app.py``).
"""

from __future__ import annotations

import io
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from stream.aggregate.page import render_page
from stream.aggregate.records import (
    LabeledEventCodec,
    Rejected,
    count_keys,
    decode_key,
    encode_key,
    event_time,
    word_keys,
)
from stream.aggregate.views import counts_payload, words_payload
from stream.local.broker import free_port
from stream.ops.admin import ensure_topics
from stream.schemas import LabeledEvent, ModelInfo, Origin, Rationale, TaskLabel, TextSpan
from tests.conftest import REPO, BrokerHandle

WINDOW = 300
PARTS = 3

# --------------------------------------------------------------------------- building events

Span = tuple[str, str, str, float]  # task, label, token, weight


def labeled(
    eid: str,
    event: str | None,
    created_at: datetime | None,
    informative: str,
    humanitarian: str,
    spans: Sequence[Span] = (),
    origin_ms: int | None = None,
) -> LabeledEvent:
    text = " ".join(tok for _, _, tok, _ in spans) or "no words"
    pos, text_spans = 0, []
    for task, label, tok, weight in spans:
        start = text.index(tok, pos)
        pos = start + len(tok)
        text_spans.append(
            TextSpan(task=task, label=label, start=start, end=pos, token=tok, weight=weight)
        )
    return LabeledEvent(
        id=eid,
        text=text,
        event=event,
        created_at=created_at,
        labels={
            "informative": TaskLabel(label=informative, score=0.9, scores={informative: 0.9}),
            "humanitarian": TaskLabel(label=humanitarian, score=0.8, scores={humanitarian: 0.8}),
        },
        needs_review=False,
        modality={"text": 1.0},
        rationale=Rationale(text=text_spans),
        model=ModelInfo(bundle="test", version="0", sha256="0" * 64, quantization="int8"),
        origin=Origin(topic="crisis.events.raw", partition=0, offset=0, timestamp=origin_ms),
    )


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


INF, NOT_INF = "informative", "not_informative"
INFRA, RESCUE = "infrastructure_and_utility_damage", "rescue_volunteering_or_donation_effort"
NOT_HUM, AFFECTED = "not_humanitarian", "affected_individuals"
HARVEY, SRI_LANKA = "hurricane_harvey", "sri_lanka_floods"


def batch_a(w0: float) -> list[LabeledEvent]:
    """Two windows, two event names plus one without a name; every time source is used."""
    w1 = w0 + WINDOW
    plus2 = timezone(timedelta(hours=2))
    return [
        labeled("a1", HARVEY, utc(w0 + 10), INF, INFRA,
                [("informative", INF, "Flood", 0.5), ("informative", INF, "bridge", 0.3),
                 ("informative", INF, "lol", -0.2), ("humanitarian", INFRA, "bridge", 0.4)]),
        # aware, +02:00: the same instant as w0 + 20 UTC
        labeled("a2", HARVEY, utc(w0 + 20).astimezone(plus2), INF, RESCUE,
                [("informative", INF, "flood", 0.4), ("informative", INF, "flood", 0.1),
                 ("informative", INF, "!!!", 0.2), ("humanitarian", RESCUE, "donate", 0.5)]),
        # naive created_at means UTC
        labeled("a3", HARVEY, utc(w0 + 30).replace(tzinfo=None), NOT_INF, NOT_HUM,
                [("informative", NOT_INF, "lol", 0.6), ("humanitarian", NOT_HUM, "movie", 0.3),
                 ("humanitarian", AFFECTED, "homes", 0.5)]),
        labeled("a4", SRI_LANKA, utc(w0 + 40), INF, AFFECTED,
                [("informative", INF, "flood", 0.7), ("humanitarian", AFFECTED, "homes", 0.2)]),
        labeled("a5", HARVEY, utc(w1 + 5), INF, INFRA, [("informative", INF, "bridge", 0.5)]),
        labeled("a6", HARVEY, utc(w1 + 6), INF, INFRA,
                [("informative", INF, "flood", 0.5), ("informative", INF, "Bridge", 0.1)]),
        # no created_at: the raw record's timestamp (origin) places it
        labeled("a7", SRI_LANKA, None, INF, RESCUE, [("informative", INF, "rescue", 0.3)],
                origin_ms=int((w1 + 100) * 1000)),
        labeled("a8", None, utc(w1 + 200).replace(tzinfo=None), NOT_INF, NOT_HUM),
    ]  # fmt: skip


def batch_b(w0: float) -> list[LabeledEvent]:
    w1, w2 = w0 + WINDOW, w0 + 2 * WINDOW
    return [
        labeled("b1", HARVEY, utc(w1 + 50), INF, INFRA, [("informative", INF, "flood", 0.2)]),
        labeled("b2", SRI_LANKA, utc(w2 + 1), INF, AFFECTED),
    ]


def expected_windows_a() -> list[dict[str, Any]]:
    """Written by hand from batch_a, newest window first."""
    return [
        {
            "events": {
                HARVEY: {"humanitarian": {INFRA: 2}, "informative": {INF: 2}},
                SRI_LANKA: {"humanitarian": {RESCUE: 1}, "informative": {INF: 1}},
                "unknown": {"humanitarian": {NOT_HUM: 1}, "informative": {NOT_INF: 1}},
            },
            "totals": {"humanitarian": 4, "informative": 4},
        },
        {
            "events": {
                HARVEY: {
                    "humanitarian": {INFRA: 1, NOT_HUM: 1, RESCUE: 1},
                    "informative": {INF: 2, NOT_INF: 1},
                },
                SRI_LANKA: {"humanitarian": {AFFECTED: 1}, "informative": {INF: 1}},
            },
            "totals": {"humanitarian": 4, "informative": 4},
        },
    ]


def expected_windows_ab() -> list[dict[str, Any]]:
    w1, w0 = expected_windows_a()
    w1["events"][HARVEY] = {"humanitarian": {INFRA: 3}, "informative": {INF: 3}}
    w1["totals"] = {"humanitarian": 5, "informative": 5}
    w2 = {
        "events": {SRI_LANKA: {"humanitarian": {AFFECTED: 1}, "informative": {INF: 1}}},
        "totals": {"humanitarian": 1, "informative": 1},
    }
    return [w2, w1, w0]


def words(*pairs: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"word": w, "count": n} for w, n in pairs]


EXPECTED_WORDS_A = {
    "humanitarian": {
        AFFECTED: words(("homes", 1)),
        INFRA: words(("bridge", 1)),
        NOT_HUM: words(("movie", 1)),
        RESCUE: words(("donate", 1)),
    },
    "informative": {
        INF: words(("flood", 4), ("bridge", 3), ("rescue", 1)),
        NOT_INF: words(("lol", 1)),
    },
}


# --------------------------------------------------------------------------- pure rules


def test_codec_is_total() -> None:
    codec = LabeledEventCodec()
    ev = labeled("x", HARVEY, utc(0), INF, INFRA)
    assert codec.loads(codec.dumps(ev)) == ev
    bad_json = codec.loads(b"not json")
    assert isinstance(bad_json, Rejected) and bad_json.kind == "json_invalid"
    bad_schema = codec.loads(b'{"id": "x", "text": "y"}')
    assert isinstance(bad_schema, Rejected) and bad_schema.kind == "missing"


def test_event_time_sources() -> None:
    t = 1_700_000_000.0
    aware = labeled("x", None, utc(t).astimezone(timezone(timedelta(hours=-5))), INF, INFRA)
    assert event_time(aware, 1.0) == t
    assert event_time(labeled("x", None, utc(t).replace(tzinfo=None), INF, INFRA), 1.0) == t
    origin = labeled("x", None, None, INF, INFRA, origin_ms=int(t * 1000) + 250)
    assert event_time(origin, 1.0) == t + 0.25
    assert event_time(labeled("x", None, None, INF, INFRA), 42.5) == 42.5


@pytest.mark.parametrize(
    ("created_at", "falls_back"),
    [
        (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), True),
        (datetime(1, 1, 1, tzinfo=UTC), True),
        (datetime(1970, 1, 1, tzinfo=UTC), True),
        (datetime(2040, 1, 1, tzinfo=UTC), True),
        (datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC) + timedelta(hours=23), False),
        (datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC) - timedelta(hours=23), False),
    ],
)
def test_event_time_far_from_the_record_time_falls_back_to_it(
    created_at: datetime, falls_back: bool
) -> None:
    from stream.aggregate.records import window_time

    record_ts = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    ev = labeled("x", None, created_at, INF, INFRA)
    ts, fell_back = window_time(ev, record_ts, max_skew_s=86_400)
    assert fell_back is falls_back
    assert ts == (record_ts if falls_back else created_at.timestamp())


def test_pages_render_windows_at_the_edges_of_time() -> None:
    """A window at 9999-12-31 (left by an older version in a changelog) used to stop the
    page for good: ``year 10000 is out of range`` when its end was formatted."""
    far = datetime(9999, 12, 31, 23, 55, tzinfo=UTC).timestamp()
    key = encode_key("quake", "informative", "informative")
    items = [((key, (far, far + 299.9)), 3), ((key, (-62135596800.0, -62135596500.1)), 1)]
    payload = counts_payload(items, 300, 86_400, 1_700_000_000.0, 12)
    assert len(payload["windows"]) == 2
    assert render_page(payload, {"labels": {}, "windows": 1}, "crisis")
    orjson.dumps(payload)


def test_the_allowed_clock_skew_is_a_setting() -> None:
    from stream.aggregate.config import AggregatorConfig
    from stream.errors import ConfigError

    assert AggregatorConfig().max_skew_s == 86_400
    with pytest.raises(ConfigError):
        AggregatorConfig(max_skew_s=-1)


def test_count_and_word_keys() -> None:
    a1, a2, a3 = batch_a(0.0)[:3]
    assert [decode_key(k) for k in count_keys(a1)] == [
        (HARVEY, "humanitarian", INFRA),
        (HARVEY, "informative", INF),
    ]
    assert [decode_key(k) for k in word_keys(a1)] == [
        (HARVEY, "humanitarian", INFRA, "bridge"),
        (HARVEY, "informative", INF, "bridge"),
        (HARVEY, "informative", INF, "flood"),  # lower-cased; "lol" had a negative weight
    ]
    # "flood" twice counts once; "!!!" is no word
    assert [decode_key(k)[3] for k in word_keys(a2)] == ["donate", "flood"]
    # a span for a label that was not predicted does not count
    assert [decode_key(k) for k in word_keys(a3)] == [
        (HARVEY, "humanitarian", NOT_HUM, "movie"),
        (HARVEY, "informative", NOT_INF, "lol"),
    ]
    assert decode_key(count_keys(batch_a(0.0)[7])[0])[0] == "unknown"
    # a separator inside user content cannot shift the key's parts
    assert decode_key(encode_key("a\x1fb", "informative", INF)) == ("a b", "informative", INF)


_keys = st.tuples(
    st.sampled_from(["harvey", "irma", "a<b>"]),
    st.sampled_from(["informative", "humanitarian"]),
    st.sampled_from(["x", "y"]),
)


@given(
    st.lists(st.tuples(_keys, st.integers(0, 20), st.integers(-2, 9), st.booleans()), max_size=40),
    st.integers(0, 25),
)
def test_counts_payload_invariants(
    rows: list[tuple[tuple[str, str, str], int, int, bool]], limit: int
) -> None:
    """Whatever the table holds, the payload keeps every positive count in its window,
    newest first, at most ``limit`` windows; recovered (list-shaped) keys read the same."""
    items: list[tuple[Any, Any]] = []
    truth: dict[float, Counter[tuple[str, str, str]]] = {}
    for key, w, n, as_list in rows:
        start = 1000.0 + w * WINDOW
        rng = (start, start + WINDOW - 0.1)
        k = encode_key(*key)
        items.append(([k, list(rng)] if as_list else (k, rng), n))
        if n > 0:
            truth.setdefault(start, Counter())[key] += n
    payload = counts_payload(items, WINDOW, 86400, now=0.0, limit=limit)
    starts = [w["start_ts"] for w in payload["windows"]]
    assert starts == sorted(truth, reverse=True)[:limit]
    for win in payload["windows"]:
        got = Counter(
            {
                (e, t, lbl): n
                for e, tasks in win["events"].items()
                for t, labels in tasks.items()
                for lbl, n in labels.items()
            }
        )
        assert got == truth[win["start_ts"]]
        assert sum(win["totals"].values()) == sum(got.values())


def test_words_payload_ranks_and_limits() -> None:
    rng = (0.0, WINDOW - 0.1)
    later = (float(WINDOW), 2 * WINDOW - 0.1)
    items = [
        ((encode_key(HARVEY, "informative", INF, w), rng), n)
        for w, n in [("b", 2), ("a", 2), ("c", 5)]
    ] + [
        ((encode_key(SRI_LANKA, "informative", INF, "a"), later), 1),
        ((encode_key(SRI_LANKA, "informative", INF, "d"), rng), 4),
    ]
    out = words_payload(items, None, top=2)
    assert out["labels"] == {"informative": {INF: words(("c", 5), ("d", 4))}}
    assert words_payload(items, None, 3, HARVEY)["labels"]["informative"][INF] == words(
        ("c", 5), ("a", 2), ("b", 2)
    )
    assert words_payload(items, 1, top=10)["labels"]["informative"][INF] == words(("a", 1))


def test_page_escapes_stream_content() -> None:
    items = [((encode_key("<script>x</script>", "informative", INF), (0.0, 299.9)), 3)]
    page = render_page(
        counts_payload(items, WINDOW, 86400, 0.0, 10), words_payload([], None, 10), "t"
    )
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page


def test_the_aggregator_decodes_the_worker_compression() -> None:
    """The worker's producer compresses its outputs with lz4; aiokafka (the aggregator's client)
    decodes lz4 only with cramjam, the ``aiokafka[lz4]`` dependency. Without it the aggregator
    crashes on the first batch of the worker's outputs (found by tests/test_image.py)."""
    from aiokafka import codec

    from stream.sinks import kafka as kafka_sink

    assert '"compression.type": "lz4"' in Path(kafka_sink.__file__).read_text()
    assert codec.has_lz4(), "cramjam is missing: pip install -c requirements.lock -e ."
    data = orjson.dumps({"id": "e-1", "text": "bridge collapsed " * 20})
    assert codec.lz4_decode(codec.lz4_encode(data)) == data


# --------------------------------------------------------------------------- against a broker


class Aggregator:
    """``python -m stream.aggregate`` as a child process on loopback."""

    def __init__(self, bootstrap: str, topic: str, app_id: str, log: Path) -> None:
        self.port = free_port()
        self.args = [
            sys.executable, "-m", "stream.aggregate", "--bootstrap", bootstrap, "--topic", topic,
            "--app-id", app_id, "--window", str(WINDOW), "--web-port", str(self.port),
            "--web-bind", "127.0.0.1", "--log-level", "WARNING",
        ]  # fmt: skip
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
            )

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url(path), timeout=5) as resp:
            return bytes(resp.read())

    def get_json(self, path: str) -> dict[str, Any]:
        doc: dict[str, Any] = orjson.loads(self.get(path))
        return doc

    def wait_counts(self, expected: list[dict[str, Any]], timeout_s: float = 40.0) -> dict:
        deadline, last = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                last = self.get_json("/counts/")
                if strip(last) == expected:
                    return last
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"counts never matched; last: {last}\n{self.log.read_text()[-3000:]}")


def metric(agg: Aggregator, name: str) -> float:
    for line in agg.get("/metrics").decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} not exported")


def strip(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"events": w["events"], "totals": w["totals"]} for w in payload["windows"]]


def produce(bootstrap: str, topic: str, values: list[bytes], transactional: bool) -> dict[int, int]:
    """Spread ``values`` round-robin over the 3 partitions; return each partition's next offset
    after its last *data* record. Transactional batches (two) leave a commit marker after each,
    i.e. offset gaps that no consumer ever sees."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "enable.idempotence": True}
    if transactional:
        conf["transactional.id"] = f"seed-{uuid.uuid4().hex[:8]}"
    p = Producer({**conf, "log_level": 3})
    ends: dict[int, int] = {}

    def acked(err: Any, msg: Any) -> None:
        assert err is None, err
        ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    if transactional:
        p.init_transactions(30)
    for half in (values[: len(values) // 2], values[len(values) // 2 :]):
        if transactional:
            p.begin_transaction()
        for i, v in enumerate(half):
            p.produce(
                topic, key=uuid.uuid4().bytes, value=v, partition=i % PARTS, on_delivery=acked
            )
        if transactional:
            p.commit_transaction(30)
    assert p.flush(30) == 0
    return ends


def offsets(bootstrap: str, topic: str, group: str) -> dict[int, tuple[int, int]]:
    """partition -> (committed offset, high watermark) for ``group``."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(PARTS)], timeout=10)
        return {tp.partition: (tp.offset, c.get_watermark_offsets(tp, timeout=10)[1]) for tp in tps}
    finally:
        c.close()


def wait_committed(bootstrap: str, topic: str, group: str, ends: dict[int, int]) -> None:
    """The group's committed offset is past every data record and never past the topic's end.

    faust commits "last acknowledged offset + 1", so a trailing transaction marker stays
    uncommitted (it is skipped on restart, nothing is re-read); records it could not decode
    are acknowledged and committed like the rest.
    """
    deadline, last = time.monotonic() + 20, {}
    while time.monotonic() < deadline:
        last = offsets(bootstrap, topic, group)
        if all(last[p][0] == end for p, end in ends.items()):
            assert all(committed <= hw for committed, hw in last.values()), last
            return
        time.sleep(0.5)
    raise AssertionError(f"committed offsets {last} (committed, hw), want {ends}")


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    return None


def screenshot(url: str, out: Path, profile: Path) -> None:
    browser = chromium()
    if browser is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium)")
    cmd = [
        browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
        "--no-first-run", f"--user-data-dir={profile}", "--window-size=1100,900",
        f"--screenshot={out}", url,
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


@pytest.mark.kafka
def test_aggregator_end_to_end(noida: BrokerHandle, tmp_path: Path) -> None:
    from PIL import Image

    tag = uuid.uuid4().hex[:8]
    topic, app_id = f"labeled-{tag}", f"agg-{tag}"
    ensure_topics({"bootstrap.servers": noida.bootstrap}, {topic: PARTS})
    w0 = (time.time() // WINDOW) * WINDOW - 2 * WINDOW  # two windows before the current one
    values = [ev.model_dump_json().encode() for ev in batch_a(w0)]
    bad = [b"not json", b'{"id": "x"}']
    ends = produce(noida.bootstrap, topic, [*values, *bad], transactional=True)
    assert len(ends) == PARTS

    agg = Aggregator(noida.bootstrap, topic, app_id, tmp_path / "aggregate.log")
    agg.start()
    try:
        counts = agg.wait_counts(expected_windows_a())
        assert [w["start"] for w in counts["windows"]] == [
            utc(w0 + WINDOW).isoformat().replace("+00:00", "Z"),
            utc(w0).isoformat().replace("+00:00", "Z"),
        ]
        assert counts["window_s"] == WINDOW and counts["expires_s"] == 86400
        assert agg.get_json("/counts/?limit=1")["windows"] == counts["windows"][:1]
        assert agg.get_json("/words/")["labels"] == EXPECTED_WORDS_A
        newest = agg.get_json("/words/?windows=1")["labels"]["informative"][INF]
        assert newest == words(("bridge", 2), ("flood", 1), ("rescue", 1))
        sri = agg.get_json(f"/words/?event={SRI_LANKA}")["labels"]["informative"][INF]
        assert sri == words(("flood", 1), ("rescue", 1))
        with pytest.raises(urllib.error.HTTPError):
            agg.get("/counts/?limit=-1")

        metrics = agg.get("/metrics").decode()
        assert 'crisis_aggregate_rejected_total{kind="json_invalid"} 1.0' in metrics
        assert 'crisis_aggregate_rejected_total{kind="missing"} 1.0' in metrics
        assert metric(agg, "crisis_aggregate_events_total") == 8

        page = agg.get("/").decode()
        for text in (HARVEY, SRI_LANKA, "unknown", "flood", INFRA):
            assert text in page
        png = tmp_path / "page.png"
        screenshot(agg.url("/"), png, tmp_path / "chrome")
        img = Image.open(io.BytesIO(png.read_bytes())).convert("RGB")
        assert img.size == (1100, 900)
        colors = {color: n for n, color in img.getcolors(1 << 20) or []}
        assert len(colors) > 20  # text and bars, not a blank page
        assert colors.get((9, 105, 218), 0) > 50  # the count bars (#0969da) were drawn

        # Offsets: every record read (data, bad records) is committed.
        wait_committed(noida.bootstrap, topic, app_id, ends)
        assert agg.stop() == 0

        # Restart: the tables come back from their changelogs and nothing is counted twice.
        agg.start()
        agg.wait_counts(expected_windows_a())
        assert metric(agg, "crisis_aggregate_events_total") == 0
        # New input after the restart is counted once, and committed.
        values_b = [ev.model_dump_json().encode() for ev in batch_b(w0)]
        ends.update(produce(noida.bootstrap, topic, values_b, transactional=False))
        agg.wait_counts(expected_windows_ab())
        words_ab = agg.get_json("/words/")["labels"]["informative"][INF]
        assert words_ab == words(("flood", 5), ("bridge", 3), ("rescue", 1))
        assert metric(agg, "crisis_aggregate_events_total") == 2
        wait_committed(noida.bootstrap, topic, app_id, ends)
        assert agg.stop() == 0
    finally:
        if agg.proc is not None:
            agg.stop()
