"""Extra humanitarian training tweets from CrisisMMD's annotation files.

Why: the agreed humanitarian train split holds only 70 ``affected_individuals`` tweets, the
class every build scores worst on. The annotation files label the *text* of all 16,058 tweets,
and the agreed dev/test splits are subsets of the all-label humanitarian dev/test splits, so
the all-label humanitarian train split (whose file was not published with the others) is every
annotated tweet outside those two files. Its text labels use 8 classes; they map onto the
agreed splits' 5 as the agreed rows themselves do (``injured_or_dead_people`` and
``missing_or_found_people`` are ``affected_individuals``; ``vehicle_damage`` is
``infrastructure_and_utility_damage``).

The caller passes every text it must not train on (dev/test of every split); this module only
reads files and never looks at a test label.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import ftfy

from stream.data.crisismmd import CrisisRow, read_rows, tsv_records
from stream.tasks import LABELS

__all__ = ["HUMANITARIAN_MERGE", "humanitarian_all_dev_test", "humanitarian_extra_train"]

HUMANITARIAN_MERGE = {
    "injured_or_dead_people": "affected_individuals",
    "missing_or_found_people": "affected_individuals",
    "vehicle_damage": "infrastructure_and_utility_damage",
}


def _all_split(data_dir: Path, split: str) -> Path:
    return data_dir / "splits" / "humanitarian_all" / f"task_humanitarian_text_img_{split}.tsv"


def humanitarian_all_dev_test(data_dir: Path) -> list[CrisisRow] | None:
    """Per-tweet rows of the all-label humanitarian dev and test files, or None if absent."""
    paths = [_all_split(data_dir, s) for s in ("dev", "test")]
    if not all(p.is_file() for p in paths):
        return None
    return [row for p in paths for row in read_rows(p)]


def humanitarian_extra_train(
    data_dir: Path, exclude_ids: Collection[str], exclude_texts: Collection[str]
) -> list[CrisisRow]:
    """Annotated tweets of the all-label humanitarian train split with 5-class text labels,
    one per tweet, sorted by tweet id; minus ``exclude_ids`` (e.g. the agreed train split,
    already used) and any tweet whose repaired text is in ``exclude_texts``. Empty when the
    annotation files or the all-label dev/test files are missing (no split to subtract)."""
    classes = set(LABELS["humanitarian"])
    held = humanitarian_all_dev_test(data_dir)
    files = sorted((data_dir / "annotations").glob("*_final_data.tsv"))
    if held is None or not files:
        return []
    skip = {r.tweet_id for r in held} | set(exclude_ids)
    banned = set(exclude_texts) | {r.text for r in held}
    rows: dict[str, CrisisRow] = {}
    for path in files:
        event = path.name.removesuffix("_final_data.tsv")
        for rec in tsv_records(path):
            tweet_id = rec["tweet_id"]
            if tweet_id in skip or tweet_id in rows:
                continue
            label = HUMANITARIAN_MERGE.get(rec["text_human"], rec["text_human"])
            text = ftfy.fix_text(rec["tweet_text"] or "")
            if label not in classes or text in banned:
                continue
            image = (rec.get("image_path") or "").strip()
            rows[tweet_id] = CrisisRow(tweet_id, event, text, label, Path(image) if image else None)
    return [rows[k] for k in sorted(rows)]
