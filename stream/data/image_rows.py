"""CrisisMMD split rows whose image is available locally (the 1,015 Sri Lanka floods images).

``images/srilanka_rows_with_local_images.tsv`` lists every split row (text, label, image path
relative to ``images/``) whose image is present; it is what the image side is fitted on (train
prototypes, dev temperature and fusion weights) and measured on (test, all rows). Unlike the
per-tweet text loader (:mod:`stream.data.crisismmd`) rows stay per image, and the label is the
``label_text`` column as there (the agreed splits' merged classes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import ftfy

from stream.data.crisismmd import tsv_records

__all__ = ["ImageRow", "read_image_rows"]

ROWS_FILE = "images/srilanka_rows_with_local_images.tsv"
_SOURCE = re.compile(
    r"task_(?P<task>[a-z]+)(?:_text_img)?(?P<agreed>_agreed_lab)?_(?P<split>[a-z]+)"
)


@dataclass(frozen=True)
class ImageRow:
    task: str
    split: str
    agreed: bool
    tweet_id: str
    text: str
    image: Path
    label: str


def read_image_rows(data_dir: Path) -> list[ImageRow]:
    """All rows of ``ROWS_FILE`` (text repaired with ftfy); empty if the file is absent."""
    path = data_dir / ROWS_FILE
    if not path.is_file():
        return []
    rows: list[ImageRow] = []
    for rec in tsv_records(path):
        m = _SOURCE.match(rec["source_file"])
        if m is None or not rec["image"]:
            continue
        rows.append(
            ImageRow(
                task=m["task"],
                split=m["split"],
                agreed=bool(m["agreed"]),
                tweet_id=rec["tweet_id"],
                text=ftfy.fix_text(rec["tweet_text"] or ""),
                image=data_dir / "images" / rec["image"],
                label=rec.get("label_text") or rec["label"],
            )
        )
    return rows
