"""The review page against a real broker: its HTTP API (refusals write nothing, progress
survives a restart) and the page itself driven in headless Chromium (hostile text stays text,
keys answer, skip and undo, and each answer is on the feedback topic)."""

from __future__ import annotations

import asyncio
import http.server
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from stream.ops.admin import ensure_topics
from stream.review import Review, ReviewConfig, build_app, serve
from stream.schemas import LabeledEvent
from tests.conftest import BrokerHandle
from tests.kafka_utils import TopicReader
from tests.review_utils import INF, MODEL, NOT_INF, labeled

pytestmark = pytest.mark.kafka

HOSTILE = "🌊 <img src=x onerror=alert(1)><script>window.pwned=1</script> bridge collapsed"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")  # make system
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


class Page:
    """A :class:`Review` served by aiohttp on an ephemeral port, on a thread of its own."""

    def __init__(self, config: ReviewConfig) -> None:
        self.review = Review(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        app = build_app(self.review)
        self._runner, port = self._call(serve(app, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{port}"

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def close(self) -> None:
        self._call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def request(
        self, path: str, body: object = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        data = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
        head = {"Content-Type": "application/json"} if data is not None else {}
        req = urllib.request.Request(
            self.url + path, data=data, headers={**head, **(headers or {})}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as res:
                status, raw, got = res.status, res.read(), dict(res.headers)
        except urllib.error.HTTPError as err:
            status, raw, got = err.code, err.read(), dict(err.headers)
        ctype = got.get("Content-Type", "")
        return status, orjson.loads(raw) if "json" in ctype else raw, got

    def get(self, path: str) -> Any:
        status, doc, _ = self.request(path)
        assert status == 200, doc
        return doc

    def wait(self, check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)


@pytest.fixture
def topics(noida: BrokerHandle) -> ReviewConfig:
    tag = uuid.uuid4().hex[:8]
    config = ReviewConfig(
        kafka={"bootstrap.servers": noida.bootstrap},
        review_topic=f"review-{tag}",
        feedback_topic=f"feedback-{tag}",
        refresh_s=1.0,
    )
    ensure_topics(dict(config.kafka), {config.review_topic: 2, config.feedback_topic: 2})
    return config


@pytest.fixture
def page(topics: ReviewConfig) -> Iterator[Page]:
    served = Page(topics)
    yield served
    served.close()


def produce(config: ReviewConfig, events: list[LabeledEvent]) -> None:
    producer = Producer({**config.kafka, "enable.idempotence": True, "log_level": 3})
    for ev in events:
        producer.produce(config.review_topic, value=ev.model_dump_json().encode(), key=ev.id)
    assert producer.flush(30) == 0


def queue_ids(page: Page, task: str = INF) -> list[str]:
    return [e["id"] for e in page.get(f"/api/queue?task={task}&limit=50")["events"]]


def test_the_api_refuses_bad_answers_writes_nothing_and_survives_a_restart(
    topics: ReviewConfig,
):
    page = Page(topics)
    try:
        saved = _answer_once_after_refusals(topics, page)
    finally:
        page.close()
    restarted = Page(topics)  # a new instance rebuilds queue and progress from the topics
    try:
        _check_restarted(restarted, saved["id"])
    finally:
        restarted.close()


def _answer_once_after_refusals(topics: ReviewConfig, page: Page) -> dict[str, Any]:
    produce(topics, [labeled("a", "bridge collapsed", 0.52), labeled("b", "lol", 0.58)])
    page.wait(lambda: len(queue_ids(page)) == 2, "the review topic")
    good = {"event_id": "a", "task": INF, "label": NOT_INF, "annotator": "ana"}
    for body, headers, status, reason in [
        ({**good, "label": "maybe"}, {}, 400, "not one of informative: informative, not_informa"),
        ({**good, "event_id": "zzz"}, {}, 404, "no event 'zzz' in the review queue"),
        ({**good, "task": "urgency"}, {}, 400, "event 'a' has no task 'urgency'"),
        ({**good, "annotator": ""}, {}, 400, "annotator: String should have at least 1"),
        (
            {**good, "words": [{"start": 0, "end": 6, "token": "bridgE", "right": True}]},
            {},
            400,
            "word mark 0-6 is not 'bridgE'",
        ),
        (b"{not json", {}, 400, "the body is not JSON"),
        (orjson.dumps(good), {"Content-Type": "text/plain"}, 415, "application/json"),
        (good, {"Origin": "https://evil.example"}, 403, "a write must come from this page"),
    ]:
        got, doc, _ = page.request("/api/feedback", body, headers)
        assert (got, reason in doc["error"]) == (status, True), doc
    status, doc, _ = page.request("/api/queue?task=informative&limit=0")
    assert status == 400 and "limit" in doc["error"]

    word = {"start": 0, "end": 6, "token": "bridge", "right": True}
    status, saved, headers = page.request("/api/feedback", {**good, "words": [word]})
    assert status == 200 and saved["event_id"] == "a" and saved["label"] == NOT_INF
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert queue_ids(page) == ["b"]
    reader = TopicReader(topics.kafka["bootstrap.servers"], topics.feedback_topic)
    try:  # the refused requests wrote nothing: the good answer is the only record
        records = reader.until(1, timeout_s=20, settle_s=1.0)
    finally:
        reader.close()
    assert [(r["id"], r["event_id"], r["label"]) for r in records] == [(saved["id"], "a", NOT_INF)]
    assert records[0]["words"] == [word] and records[0]["origin"]["topic"] == topics.review_topic
    return saved


def _check_restarted(restarted: Page, saved_id: str) -> None:
    restarted.wait(lambda: restarted.get("/healthz")["events"] == 2, "the restart")
    restarted.wait(lambda: restarted.get("/healthz")["answers"] == 1, "the answers")
    assert queue_ids(restarted) == ["b"]
    progress = restarted.get("/api/progress")["tasks"][INF]
    assert progress == {"queue": 1, "answered": 1, "answered_today": 1, "agreement": 0.0}
    undo = {"feedback_id": saved_id, "annotator": "ben"}
    status, undone, _ = restarted.request("/api/undo", undo)
    assert status == 200 and undone["retracts"] == saved_id and undone["event"]["id"] == "a"
    assert queue_ids(restarted) == ["a", "b"]
    status, doc, _ = restarted.request("/api/undo", undo)
    assert status == 409 and "already undone" in doc["error"]
    status, doc, _ = restarted.request("/api/undo", {"feedback_id": "nope", "annotator": "b"})
    assert status == 404 and "no answer 'nope'" in doc["error"]


# --------------------------------------------------------------------------- in Chromium


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (make system installs it)")
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def image_server(tmp_path: Path) -> Iterator[str]:
    """A PNG on a second origin, as an event's ``meta.image_url`` would name."""
    from PIL import Image

    Image.new("RGB", (200, 100), (200, 220, 240)).save(tmp_path / "photo.png")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/photo.png"
    server.shutdown()
    server.server_close()


def test_the_page_in_chromium(
    topics: ReviewConfig, page: Page, browser: Any, image_server: str
) -> None:
    from playwright.sync_api import expect

    hostile = labeled("h-1", HOSTILE, 0.51, words={"bridge": 0.4, "collapsed": -0.2})
    events = [
        labeled("e-2", "Shelter open at the school, bring water", 0.62, words={"Shelter": 0.3}),
        hostile,
        labeled("e-3", "Photo of the flooded road", 0.9, cells=2, meta={"image_url": image_server}),
        labeled("e-2", "a later copy of e-2, least confident of all", 0.05),
    ]
    produce(topics, events)
    page.wait(lambda: page.get("/healthz")["events"] == 3, "the review topic")
    reader = TopicReader(topics.kafka["bootstrap.servers"], topics.feedback_topic)
    tab = browser.new_page()
    dialogs: list[str] = []
    tab.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        tab.goto(page.url + "/")
        meta, text, progress = tab.locator("#meta"), tab.locator("#text"), tab.locator("#progress")
        expect(meta).to_have_text(re.compile(r"^h-1 "))
        # the hostile text is text: literally shown, no element made of it, no script ran
        assert text.text_content() == HOSTILE
        assert tab.locator("#text img, #text script").count() == 0
        assert tab.evaluate("typeof window.pwned") == "undefined" and dialogs == []
        marks = tab.locator("#text mark")
        assert marks.all_text_contents() == ["bridge", "collapsed"]  # code points, not UTF-16
        assert marks.evaluate_all("ms => ms.map(m => m.className)") == ["pos", "neg"]
        assert "informative (0.510)" in tab.locator("#model").text_content()
        assert tab.locator("#choices button").all_text_contents() == [
            "1informative",
            "2not_informative",
        ]
        expect(progress).to_contain_text("Queue 3 ")

        tab.fill("#annotator", "maria")
        tab.locator("#annotator").blur()
        marks.first.click()  # a right reason
        tab.keyboard.press("2")
        expect(meta).to_have_text(re.compile(r"^e-2 "))
        answer = reader.until(1, timeout_s=20, settle_s=0)[0]
        assert (answer["event_id"], answer["task"], answer["label"]) == ("h-1", INF, NOT_INF)
        assert answer["text"] == HOSTILE and answer["annotator"] == "maria"
        assert answer["model"]["version"] == MODEL.version and answer["shown"][INF] == INF
        start = HOSTILE.index("bridge")
        assert answer["words"] == [
            {"start": start, "end": start + 6, "token": "bridge", "right": True}
        ]
        assert tab.evaluate("localStorage.getItem('crisis-review-annotator')") == "maria"
        expect(progress).to_contain_text("answered today 1")

        tab.keyboard.press("u")  # undo: a retraction, and h-1 is back
        expect(meta).to_have_text(re.compile(r"^h-1 "))
        retraction = reader.until(2, timeout_s=20, settle_s=0)[1]
        assert retraction["retracts"] == answer["id"] and retraction["label"] is None
        assert retraction["event_id"] == "h-1" and retraction["annotator"] == "maria"
        expect(progress).to_contain_text("answered today 0")
        assert text.text_content() == HOSTILE

        tab.keyboard.press("s")  # skip: the next one, nothing written
        expect(meta).to_have_text(re.compile(r"^e-2 "))
        assert "Shelter" in text.text_content()  # the first copy of e-2, not the later one
        tab.keyboard.press("s")
        expect(meta).to_have_text(re.compile(r"^e-3 "))
        expect(tab.locator("#frame .box")).to_have_count(2)
        assert tab.locator("#cells li").count() == 2
        assert reader.poll(0.5) == 0 and len(reader.records) == 2  # skips wrote nothing
        assert meta.text_content().startswith("e-3")
    finally:
        tab.close()
        reader.close()
