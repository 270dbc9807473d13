"""ERASER faithfulness of the text rationales: comprehensiveness and sufficiency against the
same number of random words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from stream.cli.evaluation import faithfulness
from stream.evaluation.faithfulness import faithfulness_report, keep_words, remove_words
from stream.models.bundle import Bundle

from .conftest import BUNDLE, REPO, SHARED, needs_shared

words = st.lists(st.text("abcdefghij#'", min_size=1, max_size=8), min_size=1, max_size=20)


@given(ws=words, data=st.data())
def test_remove_and_keep_split_the_words(ws, data):
    text = " ".join(ws)
    spans, pos = [], 0
    for w in ws:
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    chosen = sorted(data.draw(st.sets(st.integers(0, len(ws) - 1))))
    picked = [spans[i] for i in chosen]
    assert keep_words(text, picked) == " ".join(ws[i] for i in chosen)
    assert remove_words(text, picked) == " ".join(w for i, w in enumerate(ws) if i not in chosen)


def _sample_texts() -> list[str]:
    lines = (REPO / "stream" / "samples" / "events.jsonl").read_text().splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


def test_rationale_words_matter_more_than_random_words(bundle: Bundle):
    texts = _sample_texts()
    report = faithfulness_report(bundle, texts, None, k=3, seed=0, repeats=3, sweep=[1, 3])
    assert report["texts"] == len(texts) and report["k"] == 3
    assert [s["k"] for s in report["sweep"]] == [1, 3]
    assert report["sweep"][1]["comprehensiveness"] == report["comprehensiveness"]
    # more random words removed, more probability lost (the random sets nest)
    assert report["sweep"][0]["comprehensiveness_random"] < report["comprehensiveness_random"]
    assert set(report["raw_shares"]) == {
        "comprehensiveness",
        "sufficiency",
        "comprehensiveness_ratio",
    }
    assert report["comprehensiveness"] > report["comprehensiveness_random"]
    assert report["sufficiency"] < report["sufficiency_random"]
    assert -1 <= report["sufficiency"] <= 1 and -1 <= report["comprehensiveness"] <= 1
    again = faithfulness_report(bundle, texts, None, k=3, seed=0, repeats=3, sweep=[1, 3])
    assert again == report  # seeded: reproducible


def test_unknown_task_is_an_error(bundle: Bundle):
    with pytest.raises(Exception, match="no head for task"):
        faithfulness_report(bundle, ["x"], None, task="nope")


@pytest.mark.slow
@needs_shared
def test_comprehensiveness_is_at_least_three_times_random(tmp_path: Path):
    """Acceptance: on the agreed informative test split, k=5 (fixed before the test run)."""
    out = tmp_path / "faith.json"
    args = ["--bundle", str(BUNDLE), "--data", str(SHARED), "--k", "5", "--sweep", ""]
    args += ["--out", str(out)]
    result = CliRunner().invoke(faithfulness, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads(out.read_text())
    assert report["texts"] > 1000
    assert report["comprehensiveness"] >= 3 * report["comprehensiveness_random"], report
