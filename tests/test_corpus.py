"""The corpus: three data sets' label contracts, de-duplication and the benchmark hold-out."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.data.corpus import dedup_key, load_corpus
from tests.conftest import SHARED, needs_shared
from tests.crisis_data import make_root


def test_label_contracts_dedup_and_hold_out(tmp_path: Path):
    corpus = load_corpus(make_root(tmp_path))
    by_uid = {m.uid: m for m in corpus.messages}
    # CrisisMMD: 8 humanitarian classes merged to 5, text labels per tweet
    assert by_uid["crisismmd:1"].labels == {
        "informative": "informative",
        "humanitarian": "affected_individuals",
    }
    assert by_uid["crisismmd:3"].labels["humanitarian"] == "infrastructure_and_utility_damage"
    # CrisisLexT26: the contract of the datasets' README
    assert by_uid["crisislex_t26:10"].labels == {
        "informative": "informative",
        "humanitarian": "other_relevant_information",
    }
    assert by_uid["crisislex_t26:12"].labels == {"informative": "not_informative"}
    assert by_uid["crisislex_t26:13"].labels == {
        "informative": "not_informative",
        "humanitarian": "not_humanitarian",
    }
    assert "crisislex_t26:14" not in by_uid  # "Not applicable": no label at all
    # the retweet of a CrisisMMD dev tweet is a copy: dropped, and the kept copy stays held out
    assert "crisislex_t26:11" not in by_uid and by_uid["crisismmd:3"].benchmark_held_out
    assert not by_uid["crisismmd:1"].benchmark_held_out
    # Figure Eight: related & aid_related -> informative, related = 0 -> not; others no label
    assert by_uid["figure8:100"].labels == {"informative": "informative"}
    assert by_uid["figure8:101"].labels == {"informative": "not_informative"}
    assert "figure8:102" not in by_uid and "figure8:103" not in by_uid
    assert by_uid["figure8:100"].event == "figure8_direct"
    assert corpus.sources["crisislex_t26"]["licence"].endswith("MIT")
    assert corpus.events() == [
        "2013_Test_floods",
        "figure8_direct",
        "figure8_news",
        "srilanka_floods",
    ]


def test_a_missing_root_is_an_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        load_corpus(tmp_path)


@given(st.text(max_size=60))
def test_dedup_key_ignores_links_handles_and_retweet_prefix(text: str):
    key = dedup_key(text)
    assert dedup_key(key) == key
    assert dedup_key(f"RT @someone: {text} https://t.co/xyz") == dedup_key(
        text
    ) or text.lower().lstrip().startswith("rt")


@needs_shared
def test_the_shared_corpus_holds_every_event_once():
    corpus = load_corpus(SHARED.parent)
    assert set(corpus.sources) == {"crisismmd", "crisislex_t26", "figure8"}
    events = corpus.events()
    assert sum(not e.startswith("figure8") for e in events) == 20
    keys = [dedup_key(m.text) for m in corpus.messages]
    assert len(keys) == len(set(keys))
    held = sum(m.benchmark_held_out for m in corpus.messages)
    assert 7000 < held < 9000  # CrisisMMD's dev/test splits of both tasks
