"""The all-label humanitarian train tweets rebuilt from CrisisMMD's annotation files."""

from __future__ import annotations

from stream.data.annotations import (
    HUMANITARIAN_MERGE,
    humanitarian_all_dev_test,
    humanitarian_extra_train,
)
from stream.data.crisismmd import load_split
from stream.tasks import LABELS

from .conftest import SHARED, needs_shared


@needs_shared
def test_extra_humanitarian_rows_stay_out_of_every_held_out_split():
    held_rows = humanitarian_all_dev_test(SHARED)
    assert held_rows is not None
    agreed = {s: load_split(SHARED, "humanitarian", s) for s in ("train", "dev", "test")}
    # the agreed dev/test splits are subsets of the all-label ones: what makes the rebuild valid
    held_ids = {r.tweet_id for r in held_rows}
    assert {r.tweet_id for s in ("dev", "test") for r in agreed[s]} <= held_ids
    banned = {r.text for r in load_split(SHARED, "informative", "test")}
    train_ids = {r.tweet_id for r in agreed["train"]}
    rows = humanitarian_extra_train(SHARED, train_ids, banned)
    assert len(rows) > 4000
    ids = [r.tweet_id for r in rows]
    assert ids == sorted(set(ids))
    assert not set(ids) & (held_ids | train_ids)
    assert not {r.text for r in rows} & (banned | {r.text for r in held_rows})
    assert {r.label for r in rows} == set(LABELS["humanitarian"])
    assert all("â€" not in r.text for r in rows)  # mojibake repaired


def test_merge_maps_onto_the_five_agreed_classes(tmp_path):
    assert set(HUMANITARIAN_MERGE.values()) <= set(LABELS["humanitarian"])
    assert humanitarian_extra_train(tmp_path, set(), set()) == []  # no files: no rows
