"""The review page's rules without a broker: queue order and de-duplication, answers and
retractions, progress, the event view, and what an answer request may say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.cli import cli
from stream.errors import ConfigError
from stream.review.answers import (
    AnswerRequest,
    RequestError,
    UndoRequest,
    build_answer,
    build_retraction,
    parse,
)
from stream.review.state import Queued, ReviewState
from stream.review.views import event_view, image_url
from stream.schemas import TextSpan, WordMark
from stream.settings_load import load_settings
from tests.review_utils import INF, MODEL, NOT_INF, WHERE, answer, labeled

NOW = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)


def ids(state: ReviewState, task: str = INF, limit: int = 100) -> list[str]:
    items, total = state.queue(task, limit)
    assert total >= len(items)
    return [item.event.id for item in items]


def test_the_queue_is_least_confident_first_per_task_and_keeps_the_first_copy():
    state = ReviewState()
    for ev in (
        labeled("a", "flood", 0.9, humanitarian=0.4),
        labeled("b", "bridge", 0.55, humanitarian=0.8),
        labeled("c", "water", 0.7, humanitarian=0.3),
        labeled("d", "same score as c, later", 0.7, humanitarian=0.9),
    ):
        assert state.add_event(ev, WHERE)
    assert not state.add_event(labeled("a", "a copy, now least confident", 0.1), WHERE)
    assert not state.add_event(labeled("e", "   ", 0.2), WHERE)  # no text: nothing to answer
    assert state.without_text == 1
    assert ids(state) == ["b", "c", "d", "a"]
    assert ids(state, "humanitarian") == ["c", "a", "b", "d"]
    assert ids(state, limit=2) == ["b", "c"] and state.queue(INF, 2)[1] == 4
    assert state.get("a") is not None and state.get("a").event.text == "flood"  # type: ignore[union-attr]
    assert state.queue("no such task", 10) == ([], 0)


def test_an_answer_takes_the_event_off_its_task_queue_and_a_retraction_puts_it_back():
    state = ReviewState()
    state.add_event(labeled("a", "flood", 0.6), WHERE)
    state.add_event(labeled("b", "bridge", 0.7), WHERE)
    first = answer("f1", "a", NOT_INF)
    assert state.apply(first) and not state.apply(first)  # once, by id
    assert ids(state) == ["b"] and state.queue(INF, 10)[1] == 1
    assert ids(state, "humanitarian") == ["a", "b"]  # the other task still waits
    assert state.answer("f1") is not None
    assert state.apply(answer("r1", "a", None, retracts="f1"))
    assert ids(state) == ["a", "b"] and state.answer("f1") is None and state.was_retracted("f1")
    # read again (the page's own write comes back from the topic): no effect
    assert not state.apply(first)
    assert ids(state) == ["a", "b"]


def test_answers_read_before_their_events_or_retractions_before_their_answers():
    state = ReviewState()
    state.apply(answer("r9", "a", None, retracts="f9"))
    state.apply(answer("f9", "a", INF))  # already retracted: stays undone
    state.apply(answer("f1", "b", INF))  # the event comes later
    state.add_event(labeled("a", "flood", 0.6), WHERE)
    state.add_event(labeled("b", "bridge", 0.5), WHERE)
    assert ids(state) == ["a"] and state.queue(INF, 10)[1] == 1


ops = st.lists(
    st.tuples(
        st.sampled_from(["event", "answer", "retract"]),
        st.integers(0, 3),  # event
        st.integers(0, 5),  # answer id
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_the_queue_is_the_events_without_a_live_answer_in_any_order_of_reads(
    steps: list[tuple[str, int, int]],
):
    state = ReviewState()
    added: set[int] = set()
    answered: dict[str, int] = {}
    retracted: set[str] = set()
    for kind, event, n in steps:
        fid = f"f{n}-{event}"
        if kind == "event":
            state.add_event(labeled(f"e{event}", "flood", 0.5 + event / 10), WHERE)
            added.add(event)
        elif kind == "answer":
            state.apply(answer(fid, f"e{event}", INF))
            answered[fid] = event
        else:
            state.apply(answer(f"r{n}-{event}", f"e{event}", None, retracts=fid))
            retracted.add(fid)
    live = {event for fid, event in answered.items() if fid not in retracted}
    expected = [f"e{e}" for e in sorted(added - live)]
    items, total = state.queue(INF, 100)
    assert [item.event.id for item in items] == expected and total == len(expected)
    if added:
        assert state.progress(NOW.date())[INF].queue == len(expected)


def test_progress_counts_the_latest_answer_per_annotator_today_and_the_agreement():
    state = ReviewState()
    for eid, score in (("a", 0.6), ("b", 0.7), ("c", 0.8)):
        state.add_event(labeled(eid, "flood", score), WHERE)
    yesterday = NOW - timedelta(days=1)
    state.apply(answer("1", "a", NOT_INF, "ana", at=NOW - timedelta(minutes=5)))
    state.apply(answer("2", "a", INF, "ana", at=NOW))  # ana changed her mind: this one counts
    state.apply(answer("3", "a", NOT_INF, "ben", at=NOW))
    state.apply(answer("4", "b", INF, "ana", at=yesterday.replace(tzinfo=None)))  # naive = UTC
    progress = state.progress(NOW.date())
    assert set(progress) == {INF, "humanitarian"}
    p = progress[INF]
    assert (p.queue, p.answered, p.answered_today, p.agreed) == (1, 3, 2, 2)
    assert p.agreement == pytest.approx(2 / 3)
    assert progress["humanitarian"].agreement is None and progress["humanitarian"].queue == 3
    assert state.sizes() == {"events": 3, "answers": 4}


def test_the_view_holds_the_tasks_spans_in_code_points_sorted_without_overlaps():
    text = "🌊 bridge collapsed, rescue now"
    ev = labeled("a", text, 0.55, words={"rescue": 0.2, "bridge": 0.5, "collapsed": -0.1}, cells=2)
    ev.rationale.text += [
        TextSpan(task=INF, label=INF, start=3, end=9, token="ridge ", weight=0.9),  # overlaps
        TextSpan(task=INF, label=INF, start=28, end=40, token="past the end", weight=0.9),
        TextSpan(task="humanitarian", label="x", start=0, end=1, token="🌊", weight=0.9),
    ]
    view = event_view(Queued.of(ev, WHERE), INF)
    assert [(s["token"], s["start"]) for s in view["spans"]] == [
        ("bridge", 2),
        ("collapsed", 9),
        ("rescue", 20),
    ]
    assert all(text[s["start"] : s["end"]] == s["token"] for s in view["spans"])
    assert view["choices"] == [INF, NOT_INF] and view["label"] == INF and view["score"] == 0.55
    assert len(view["cells"]) == 2 and view["model"]["version"] == MODEL.version
    assert view["tasks"]["humanitarian"]["label"] == "infrastructure_and_utility_damage"
    other = event_view(Queued.of(ev, WHERE), "humanitarian")
    assert [s["token"] for s in other["spans"]] == ["🌊"] and other["cells"] == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://pbs.example.org/a.jpg", "https://pbs.example.org/a.jpg"),
        ("HTTP://example.org/a.png", "HTTP://example.org/a.png"),
        ("javascript:alert(1)", None),
        ("data:image/png;base64,AAAA", None),
        ("/etc/passwd", None),
        (7, None),
    ],
)
def test_only_http_image_urls_reach_the_page(value: object, expected: str | None):
    assert image_url(labeled("a", "flood", 0.5, meta={"image_url": value})) == expected


def test_an_answer_copies_the_event_and_is_checked_against_it():
    item = Queued.of(labeled("a", "🌊 bridge collapsed", 0.55, words={"bridge": 0.4}), WHERE)
    word = WordMark(start=2, end=8, token="bridge", right=False)
    req = AnswerRequest(event_id="a", task=INF, label=NOT_INF, words=[word], annotator="ana")
    fb = build_answer(req, item, NOW)
    assert (fb.event_id, fb.task, fb.label, fb.annotator, fb.at) == ("a", INF, NOT_INF, "ana", NOW)
    assert fb.text == item.event.text and fb.lang == "en" and fb.event == "river_flood_2026"
    assert fb.model == MODEL and fb.origin == WHERE and fb.words == [word]
    assert fb.shown == {INF: INF, "humanitarian": "infrastructure_and_utility_damage"}
    assert len(fb.id) == 32 and fb.retracts is None

    undo = build_retraction(fb, "ben", NOW + timedelta(seconds=3))
    assert (undo.retracts, undo.label, undo.annotator, undo.words) == (fb.id, None, "ben", [])
    assert (undo.event_id, undo.task, undo.text, undo.model) == ("a", INF, fb.text, MODEL)
    assert undo.id != fb.id

    for change, reason in (
        ({"label": "maybe"}, "'maybe' is not one of informative: informative, not_informative"),
        ({"task": "urgency"}, "event 'a' has no task 'urgency'"),
        ({"words": [WordMark(start=2, end=8, token="bridgE", right=True)]}, "is not 'bridgE'"),
        ({"words": [WordMark(start=2, end=99, token="x", right=True)]}, "is not 'x'"),
    ):
        with pytest.raises(RequestError, match=reason) as err:
            build_answer(req.model_copy(update=change), item, NOW)
        assert err.value.status == 400


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"event_id": "a", "task": INF, "label": INF}, "annotator: Field required"),
        ({"event_id": "a", "task": INF, "label": INF, "annotator": "  "}, "annotator: String"),
        ({"event_id": "a", "task": INF, "label": INF, "annotator": "x", "admin": 1}, "admin"),
        ([1, 2], "Input should be a valid dictionary"),
        ({"event_id": "a", "task": INF, "label": "s3cr3t-input" * 20, "annotator": "x"}, "label"),
    ],
)
def test_a_bad_request_is_refused_naming_the_field_without_echoing_it(body: object, reason: str):
    with pytest.raises(RequestError, match=reason) as err:
        parse(AnswerRequest, body)
    assert err.value.status == 400 and "s3cr3t" not in err.value.reason
    assert parse(UndoRequest, {"feedback_id": "f", "annotator": " ana "}).annotator == "ana"


def test_the_page_settings_are_checked_and_a_review_topic_is_needed(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("CRISIS_REVIEW_PORT", "70000")
    with pytest.raises(ConfigError, match=r"^CRISIS_REVIEW_PORT: input should be less than"):
        load_settings()
    monkeypatch.setenv("CRISIS_REVIEW_PORT", "8099")
    monkeypatch.setenv("CRISIS_REVIEW_HOST", "0.0.0.0")
    loaded = load_settings()
    assert (loaded.review_port, loaded.review_host) == (8099, "0.0.0.0")
    res = CliRunner().invoke(cli, ["review", "--topic", ""])
    assert isinstance(res.exception, ConfigError) and "no review topic" in str(res.exception)


def test_only_loopback_or_configured_host_names_are_answered():
    """DNS rebinding: a hostile page whose name now points at this machine sends its own name
    as Host (and Origin): refused, whatever the port."""
    from stream.review.web import _allowed_host

    for host in ("localhost:8091", "127.0.0.1:8091", "[::1]:8091", "LOCALHOST", "127.0.0.1"):
        assert _allowed_host(host, ())
    for host in ("evil.example:8091", "evil.example", "127.0.0.1.evil.example:8091", ""):
        assert not _allowed_host(host, ())
    assert _allowed_host("review.ops.example", ("review.ops.example",))
    assert _allowed_host("review.ops.example:443", ("review.ops.example",))
    assert not _allowed_host("other.example", ("review.ops.example",))
