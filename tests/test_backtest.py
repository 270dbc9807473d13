"""Backtests: runtime metrics against scikit-learn, the event-by-event join, the report (rendered
in headless Chromium), and on a real broker the acceptance check that a backtest's macro-F1
equals ``crisis-stream evaluate`` on the same CrisisMMD tweets."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from stream.cli.replay import backtest as backtest_cmd
from stream.cli.replay import evaluate as evaluate_cmd
from stream.cli.replay import load_crisismmd as load_cmd
from stream.evaluation.metrics import expected_calibration_error
from stream.evaluation.scoring import evaluate_predictions
from stream.local.demo import BAD_RECORDS, sample_events
from stream.models.bundle import Bundle, read_manifest
from stream.pipeline import Pipeline
from stream.replay.backtest import (
    Outcome,
    compare_task,
    gate_failures,
    join,
    read_outcomes,
    run_backtest,
    scan_outcomes,
)
from stream.replay.reader import Bound
from stream.replay.report import render_html
from stream.runtime import make_sink, make_source
from stream.worker import Worker

from .conftest import BUNDLE, SHARED, BrokerHandle, needs_shared
from .kafka_utils import create_topics, read_all, seed

SPLIT = SHARED / "splits" / "informative_all" / "task_informative_text_img_test.tsv"
#: informative gold labels of the project's sample tweets (stream/samples/events.jsonl)
NOT_INFORMATIVE = {"sample-002", "sample-005", "sample-011", "sample-015", "sample-021"}


# -- metrics --------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")
@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.sampled_from("abcd"), st.floats(0, 1)),
        min_size=1,
        max_size=60,
    )
)
def test_metrics_match_scikit_learn(rows: list[tuple[str, str, float]]):
    skm = pytest.importorskip("sklearn.metrics")
    y_true, y_pred, conf = (list(c) for c in zip(*rows, strict=True))
    ev = evaluate_predictions(y_true, y_pred, conf, model_labels=["c", "b", "a", "d"])
    assert ev.labels == [lab for lab in "cbad" if lab in set(y_true) | set(y_pred)]
    assert ev.accuracy == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert ev.macro_f1 == pytest.approx(
        skm.f1_score(y_true, y_pred, average="macro", zero_division=0)
    )
    f1 = skm.f1_score(y_true, y_pred, labels=ev.labels, average=None, zero_division=0)
    assert [ev.per_class[lab].f1 for lab in ev.labels] == pytest.approx(list(f1))
    cm = skm.confusion_matrix(y_true, y_pred, labels=ev.labels)
    assert ev.confusion == cm.tolist()
    assert sum(b.count for b in ev.reliability) == len(rows)
    assert 0.0 <= ev.ece <= 1.0


def test_ece_by_hand_and_bin_edges():
    ece, bins = expected_calibration_error([0.95, 0.95, 0.55, 0.55], [True, False, True, True])
    assert ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)
    assert [b.count for b in bins] == [0, 0, 0, 0, 0, 2, 0, 0, 0, 2]
    _, bins = expected_calibration_error([0.0, 0.0999, 0.1, 0.95, 1.0], [True] * 5)
    assert [b.count for b in bins] == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]  # [lo, hi), 1.0 in the last
    perfect, _ = expected_calibration_error(np.full(10, 0.7), [True] * 7 + [False] * 3)
    assert perfect == pytest.approx(0.0)


# -- join -----------------------------------------------------------------------------------
def _oc(id_: str, origin: tuple[str, int, int] | None, label: str, gold: str | None = None):
    labels = ["informative", "not_informative"]
    return Outcome(
        id_, origin, {"informative": (label, 0.8)}, {"informative": labels},
        {"informative": gold} if gold else {}, "m 1 (int8)",
    )  # fmt: skip


def test_join_by_origin_then_id_and_flip_counts():
    a = [
        _oc("x", ("raw", 0, 0), "informative"),
        _oc("y", ("raw", 0, 1), "informative"),
        _oc("z", ("raw", 1, 0), "not_informative"),
        _oc("w", ("raw", 1, 1), "informative"),  # B never saw it
    ]
    b = [
        _oc("y", ("raw", 0, 1), "not_informative"),
        _oc("x-renamed", ("raw", 0, 0), "informative"),  # same record, id changed: origin wins
        _oc("z", ("other", 5, 9), "not_informative"),  # fed from elsewhere: joined by id
        _oc("v", ("raw", 2, 0), "informative"),  # A never saw it
    ]
    j = join(a, b)
    assert (len(j.pairs), j.by_origin, j.by_id, j.only_a, j.only_b) == (3, 2, 1, 1, 1)
    assert [(pa.id, pb.id) for pa, pb in j.pairs] == [("x", "x-renamed"), ("y", "y"), ("z", "z")]
    cmp = compare_task(j.pairs, "informative")
    assert cmp["agreement"] == pytest.approx(2 / 3)
    assert cmp["flips"] == {"informative": {"not_informative": 1}}
    assert cmp["matrix"]["counts"] == [[1, 1], [0, 1]]


def test_redelivered_outputs_count_once_and_junk_is_ignored():
    def line(offset: int, label: str) -> bytes:
        return orjson.dumps(
            {
                "id": f"e{offset}",
                "labels": {"informative": {"label": label, "score": 0.9, "scores": {}}},
                "origin": {"topic": "raw", "partition": 0, "offset": offset},
            }
        )

    lines = [line(0, "informative"), line(1, "informative"), line(0, "not_informative")]
    outs = read_outcomes([*lines, b"not json", b'{"id": "dead-letter"}', b"", None])
    assert scan_outcomes([*lines, b"not json", b'{"id": "dead-letter"}', b"", None])[1] == 2
    assert sorted((o.id, o.labels["informative"][0]) for o in outs) == [
        ("e0", "not_informative"),  # the last copy wins
        ("e1", "informative"),
    ]


# -- report ---------------------------------------------------------------------------------
def _svgs_are_well_formed(html: str) -> int:
    svgs = re.findall(r"<svg .*?</svg>", html, flags=re.S)
    for svg in svgs:
        ET.fromstring(svg)
    return len(svgs)


def _screenshot(html: Path, png: Path) -> Image.Image:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={png.parent / 'chromium-profile'}",
            "--window-size=1200,2400",
            f"--screenshot={png}",
            html.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=90,
    )
    assert png.is_file() and png.stat().st_size > 10_000
    return Image.open(png).convert("RGB")


def _pixels_near(img: Image.Image, rgb: tuple[int, int, int], tol: int = 12) -> int:
    arr = np.asarray(img).astype(int)
    return int((np.abs(arr - np.array(rgb)).max(axis=-1) <= tol).sum())


# -- on a broker ----------------------------------------------------------------------------
def _gold_samples() -> list[bytes]:
    out = []
    for raw in sample_events():
        doc = orjson.loads(raw)
        gold = "not_informative" if doc["id"] in NOT_INFORMATIVE else "informative"
        out.append(orjson.dumps({**doc, "gold": {"informative": gold}}))
    return out


@pytest.mark.kafka
def test_backtest_against_the_live_labelled_topic_renders_a_report(
    noida: BrokerHandle, bundle: Bundle, tmp_path: Path
):
    settings = noida.settings()
    create_topics(settings)
    values = _gold_samples() + BAD_RECORDS
    seed(noida.bootstrap, settings.input_topic, values)
    live = Worker(
        settings, make_source("kafka", settings), make_sink("kafka", settings), Pipeline(bundle)
    )
    assert live.run(stop_after=len(values), idle_timeout_s=60).labeled == 24
    published = read_all(noida.bootstrap, settings.output_topic, 24)

    summary = run_backtest(
        settings,
        settings.input_topic,
        Bound("beginning"),
        Bound("end"),
        tmp_path,
        BUNDLE,
        against_topic=settings.output_topic,
        quiet=True,
    )
    assert summary["join"] == {"joined": 24, "by_origin": 24, "by_id": 0, "only_a": 0, "only_b": 0}
    assert summary["sides"]["a"]["dead_letters"] == 3
    task = summary["tasks"]["informative"]
    assert task["n"] == 24 and sum(map(sum, task["matrix"]["counts"])) == 24
    # same bundle on both sides: only per-tensor int8's batch-composition noise could flip an
    # event; per-token int8 makes a label a function of its text alone
    assert task["agreement"] == 1.0 if _per_token() else task["agreement"] >= 0.9
    live_scores = evaluate_predictions(
        [p["gold"]["informative"] for p in published],
        [p["labels"]["informative"]["label"] for p in published],
        [p["labels"]["informative"]["score"] for p in published],
    )
    assert task["gold"]["b"]["macro_f1"] == pytest.approx(live_scores.macro_f1)
    assert task["gold"]["b"]["ece"] == pytest.approx(live_scores.ece)
    diff = task["gold_difference"]
    assert diff["n"] == 24 and diff["macro_f1"]["delta"] == pytest.approx(
        task["gold"]["b"]["macro_f1"] - task["gold"]["a"]["macro_f1"]
    )
    assert diff["macro_f1"]["low"] <= diff["macro_f1"]["delta"] <= diff["macro_f1"]["high"]
    a_f1 = task["gold"]["a"]["intervals"]["macro_f1"]
    assert a_f1["low"] <= task["gold"]["a"]["macro_f1"] <= a_f1["high"]
    on_disk = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert on_disk["tasks"]["informative"]["gold"] == task["gold"]

    html = (tmp_path / "report.html").read_text()
    assert "B − A on the 24 events both labelled" in html and "bootstrap interval" in html
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")
    # informative: A vs B, 2 confusions, F1 bars, reliability; any other task: A vs B only
    assert _svgs_are_well_formed(html) == 5 + len(bundle.heads) - 1
    plots = sorted(p.name for p in (tmp_path / "plots").glob("*.svg"))
    assert set(plots) >= {
        "informative-a-vs-b.svg",
        "informative-confusion-a.svg",
        "informative-confusion-b.svg",
        "informative-f1.svg",
        "informative-reliability.svg",
    }
    for p in plots:
        assert ET.parse(tmp_path / "plots" / p).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    img = _screenshot(tmp_path / "report.html", tmp_path / "report.png")
    assert img.size == (1200, 2400)
    assert len(img.getcolors(1 << 20) or []) > 50  # text, shades and plots, not a blank page
    assert _pixels_near(img, (0x2B, 0x6C, 0xB0)) > 300  # side A's bars and markers were drawn


#: records of a labelled topic that are not labelled events: a backtest skips and counts them
NOT_LABELLED = [
    b"this is not json",
    b"\xff\xfe not utf-8",
    b"[1, 2]",
    b'{"id": "no-labels"}',
    b'{"id": "sample-000", "labels": "informative"}',
    b'{"id": "sample-001", "labels": {"informative": "informative"}}',
    b'{"id": "sample-002", "labels": {"informative": {"label": ["x"]}}}',
    b'{"id": "sample-003", "labels": {"informative": {"label": "informative"}}, "origin": 7}',
]


@pytest.mark.kafka
def test_backtest_against_a_topic_skips_and_counts_records_that_are_not_labelled_events(
    noida: BrokerHandle, tmp_path: Path
):
    settings = noida.settings()
    create_topics(settings)
    inputs = sample_events()[:4]
    seed(noida.bootstrap, settings.input_topic, inputs)
    labelled = [
        orjson.dumps(
            {
                "id": orjson.loads(raw)["id"],
                "labels": {"informative": {"label": "informative", "score": 0.9, "scores": {}}},
            }
        )
        for raw in inputs
    ]
    seed(noida.bootstrap, settings.output_topic, [*NOT_LABELLED, *labelled, b""])
    args = ["--bundle", str(BUNDLE), "--topic", settings.input_topic, "--out", str(tmp_path)]
    args += ["--against-topic", settings.output_topic, "--bootstrap", noida.bootstrap]
    res = CliRunner().invoke(backtest_cmd, [*args, "--idle-timeout", "10"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    n = len(NOT_LABELLED)
    assert f"skipped {n} records of {settings.output_topic} that are not labelled events" in (
        res.output
    )
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["against_skipped"] == n
    assert summary["join"]["joined"] == summary["join"]["by_id"] == len(inputs)


def test_report_without_side_b_or_gold_still_renders():
    summary = {
        "topic": "raw",
        "range": {"from": "beginning", "to": "end"},
        "sides": {"a": {"bundle": "b", "n": 0, "models": {}}},
        "tasks": {"informative": {"gold": {"a": None}}},
    }
    html = render_html(summary)
    assert "No gold labels" in html and _svgs_are_well_formed(html) == 0


def _diff(delta: float, low: float, high: float, n: int = 300) -> dict[str, object]:
    f1 = {"delta": delta, "low": low, "high": high}
    return {"gold_difference": {"n": n, "macro_f1": f1, "accuracy": f1}}


def test_gate_passes_only_what_the_interval_shows():
    summary = {"tasks": {"informative": _diff(0.0, -0.01, 0.004)}}
    assert gate_failures(summary, 0.005) == []
    # the same point estimate on fewer events: the interval allows a larger drop
    summary["tasks"]["humanitarian"] = _diff(0.0, -0.03, 0.03, n=40)
    (why,) = gate_failures(summary, 0.005)
    assert why.startswith("humanitarian: A's macro-F1 may be up to 0.0300 below B's on these 40")
    # no gold labels: nothing to judge, so no pass
    assert gate_failures({"tasks": {"informative": {"gold_difference": None}}}, 1.0) != []


def _per_token() -> bool:
    return bool(read_manifest(BUNDLE).text_encoder.quantization.get("per_token"))


def _needs_fp32() -> None:
    if "fp32" not in read_manifest(BUNDLE).text_encoder.files:
        pytest.skip(f"bundle {BUNDLE} has no fp32 text encoder to compare int8 against")


def _backtest_equals_evaluate(
    noida: BrokerHandle, tmp_path: Path, limit: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _needs_fp32()
    # The worker's batches depend on arrival timing, evaluate's on file order. With per-token
    # int8 (the default candidate) a label is a function of its text alone, so both run at
    # their normal batch sizes and must still agree label for label. A bundle on a per-tensor
    # fallback quantizes activations per run call (~1 % of labels flip between batchings):
    # then both sides encode one text per run call.
    if not _per_token():
        monkeypatch.setenv("CRISIS_BATCH_MAX_EVENTS", "1")
    settings = noida.settings()
    runner = CliRunner()
    boot = ["--bootstrap", noida.bootstrap]
    lim = ["--limit", str(limit)] if limit else []
    res = runner.invoke(
        load_cmd, ["--split", str(SPLIT), "--topic", settings.input_topic, *boot, *lim]
    )
    assert res.exit_code == 0, res.output
    n = limit or 2237
    assert f"produced {n} events" in res.output
    out = tmp_path / "bt"
    args = ["--bundle", str(BUNDLE), "--precision", "int8", "--against", str(BUNDLE)]
    args += ["--against-precision", "fp32", "--topic", settings.input_topic, "--out", str(out)]
    res = runner.invoke(backtest_cmd, [*args, *boot, "--max-drop", "0.05"], catch_exceptions=False)
    assert res.exit_code == 0 and "gate passed" in res.output, res.output
    if limit:  # a gate nothing can pass (B − A's upper end is never below -1) exits 6
        fail = [*args[:-1], str(tmp_path / "bt-gate"), *boot, "--max-drop", "-1"]
        res = runner.invoke(backtest_cmd, fail)
        assert res.exit_code == 6 and "gate failed: informative" in res.output, res.output
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["join"]["joined"] == summary["join"]["by_origin"] == n
    assert summary["tasks"]["informative"]["gold_difference"]["n"] == n
    gold = summary["tasks"]["informative"]["gold"]
    for side, precision in (("a", "int8"), ("b", "fp32")):
        path = tmp_path / f"eval-{precision}.json"
        cmd = ["--bundle", str(BUNDLE), "--precision", precision, "--data", str(SPLIT)]
        res = runner.invoke(evaluate_cmd, [*cmd, *lim, "--json", str(path)])
        assert res.exit_code == 0, res.output
        assert "macro-F1=" in res.output and "confusion" in res.output
        assert "95% interval (bootstrap over events" in res.output
        ev = orjson.loads(path.read_bytes())
        assert gold[side]["n"] == ev["n"] == n
        assert round(gold[side]["macro_f1"], 3) == round(ev["macro_f1"], 3), (side, precision)
        assert gold[side]["confusion"] == ev["confusion"]  # not just close: the same labels


@needs_shared
@pytest.mark.kafka
def test_backtest_macro_f1_equals_evaluate_on_150_crisismmd_tweets(
    noida: BrokerHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _backtest_equals_evaluate(noida, tmp_path, 150, monkeypatch)


@needs_shared
@pytest.mark.kafka
@pytest.mark.slow
def test_backtest_macro_f1_equals_evaluate_on_the_crisismmd_test_split(
    noida: BrokerHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _backtest_equals_evaluate(noida, tmp_path, None, monkeypatch)


MULTILINGUAL = Path(__file__).resolve().parent.parent / "stream" / "samples" / "multilingual.jsonl"


def test_evaluate_scores_each_language_apart(tmp_path: Path):
    """``--by-lang`` on the shipped parallel sample (20 tweets in 6 languages): one line and one
    JSON entry per language, each over that language's events only."""
    path = tmp_path / "ev.json"
    args = ["--bundle", str(BUNDLE), "--data", str(MULTILINGUAL), "--task", "humanitarian"]
    res = CliRunner().invoke(evaluate_cmd, [*args, "--by-lang", "--json", str(path)])
    assert res.exit_code == 0, res.output
    doc = orjson.loads(path.read_bytes())
    assert doc["n"] == 120 and sorted(doc["by_lang"]) == ["en", "es", "fr", "id", "it", "pt"]
    for lang, ev in doc["by_lang"].items():
        assert ev["n"] == 20 and f"lang {lang:>8}: n   20" in res.output
    correct = sum(round(ev["accuracy"] * 20) for ev in doc["by_lang"].values())
    assert correct == round(doc["accuracy"] * 120)
    res = CliRunner().invoke(evaluate_cmd, [*args, "--task", "nope"])
    assert res.exit_code != 0 and "no 'nope' head" in str(res.exception or res.output)
