"""CrisisMMD v2.0 benchmark splits as typed, per-tweet rows.

The TSVs hold one row per *image*, so a tweet with several images appears several times; a text
classifier must see each tweet once (else it trains and scores on duplicates), so rows are
de-duplicated per ``tweet_id`` (first kept). The text is mojibake (UTF-8 read as cp1252,
"Weâ€™re") and is repaired with ftfy before anything tokenises it.

The label is the ``label_text`` column (the tweet's own annotation). In the agreed splits it
equals the image label and already uses the 5 merged humanitarian classes, whereas the ``label``
column keeps a few unmerged ones (vehicle_damage, injured_or_dead_people, ...).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import ftfy

from stream.data.paths import datasets_root

__all__ = [
    "ENV_VAR",
    "SPLITS",
    "TASKS",
    "CrisisRow",
    "find_dataset",
    "load_split",
    "read_rows",
    "split_path",
    "tsv_records",
]

ENV_VAR = "CRISIS_STREAM_DATA"
TASKS = ("informative", "humanitarian")
SPLITS = ("train", "dev", "test")
Variant = Literal["agreed", "informative_all"]


@dataclass(frozen=True)
class CrisisRow:
    """One tweet: ``image`` is its first image, relative to ``<dataset>/images/`` (or None)."""

    tweet_id: str
    event: str
    text: str
    label: str
    image: Path | None


def find_dataset() -> Path | None:
    """The CrisisMMD directory: ``$CRISIS_STREAM_DATA``, else ``crisismmd`` under
    :func:`~stream.data.paths.datasets_root` (``./../shared/datasets`` from the current
    directory, then from the checkout); None when it does not exist (the build then falls back
    to zero-shot heads)."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
    else:
        root = datasets_root()
        if root is None:
            return None
        path = root / "crisismmd"
    return path if path.is_dir() else None


def split_path(data_dir: Path, task: str, split: str, variant: Variant = "agreed") -> Path:
    """The TSV of one benchmark split; ``informative_all`` exists for the informative task only."""
    if task not in TASKS or split not in SPLITS:
        raise ValueError(f"unknown CrisisMMD split {task}/{split} (tasks {TASKS}, splits {SPLITS})")
    if variant == "agreed":
        return data_dir / "splits" / "agreed" / f"task_{task}_text_img_agreed_lab_{split}.tsv"
    if task != "informative":
        raise ValueError(f"variant {variant!r} has no {task} split")
    return data_dir / "splits" / "informative_all" / f"task_informative_text_img_{split}.tsv"


def tsv_records(path: Path) -> Iterator[dict[str, str]]:
    """The records of one CrisisMMD TSV as dicts: tab-separated, no quoting (tweets contain
    quote characters), fields longer than csv's default limit allowed."""
    csv.field_size_limit(1 << 24)
    with open(path, newline="", encoding="utf-8") as f:
        yield from csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)


def read_rows(path: Path) -> list[CrisisRow]:
    """Rows of one split TSV, text repaired, one per tweet (first occurrence kept)."""
    seen: set[str] = set()
    rows: list[CrisisRow] = []
    for rec in tsv_records(path):
        tweet_id = rec["tweet_id"]
        if tweet_id in seen:
            continue
        seen.add(tweet_id)
        image = (rec.get("image") or "").strip()
        rows.append(
            CrisisRow(
                tweet_id=tweet_id,
                event=rec["event_name"],
                text=ftfy.fix_text(rec["tweet_text"] or ""),
                label=rec["label_text"] or rec["label"],
                image=Path(image) if image else None,
            )
        )
    return rows


def load_split(
    data_dir: Path, task: str, split: str, variant: Variant = "agreed"
) -> list[CrisisRow]:
    """Per-tweet rows of ``task``/``split``; raises FileNotFoundError naming the missing file."""
    path = split_path(data_dir, task, split, variant)
    if not path.is_file():
        raise FileNotFoundError(f"CrisisMMD split not found: {path}")
    return read_rows(path)
